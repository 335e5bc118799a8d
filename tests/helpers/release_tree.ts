// An older release of Coil to run beside this one (an upgrade over live nodes): its tree extracted from
// this repository's history into a temporary directory (`git archive`, which changes no file here),
// sharing this tree's node_modules; removed on dispose.

const REPO = new URL("../..", import.meta.url).pathname;

export interface ReleaseTree extends AsyncDisposable {
  commit: string;
  root: string;
  /** Its scripts/coil: the CNI plugin, and coild with `daemon`. */
  coil: string;
}

/**
 * Extracts `commit`'s tree.
 * @throws {Error} when the commit is not in this clone (a shallow clone: `git fetch --unshallow`).
 */
export async function releaseTree(commit: string): Promise<ReleaseTree> {
  const root = await Deno.makeTempDir({ prefix: "coil-t-release-" });
  const remove = () => Deno.remove(root, { recursive: true }).catch(() => {});
  try {
    const out = await new Deno.Command("bash", {
      // safe.directory: a CI clone may belong to another user than the root that runs the tests.
      args: [
        "-c",
        'set -o pipefail; git -c safe.directory="$1" -C "$1" archive "$2" | tar -x -C "$3"',
        "-",
        REPO.replace(/\/$/, ""),
        commit,
        root,
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `Cannot extract commit ${commit} of ${REPO} (a shallow clone? run git fetch --unshallow): ` +
          new TextDecoder().decode(out.stderr).trim(),
      );
    }
    await Deno.symlink(`${REPO}node_modules`, `${root}/node_modules`);
  } catch (err) {
    await remove();
    throw err;
  }
  return { commit, root, coil: `${root}/scripts/coil`, [Symbol.asyncDispose]: remove };
}
