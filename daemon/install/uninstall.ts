// `coil uninstall`: removes what the manifest says `coil install` wrote, nothing else: other conflists,
// a pre-existing /etc/default/coild, and Coil's state in etcd (the node's blocks and pods' addresses)
// stay. Pods already running keep their network (veths and routes are the kernel's); new ones get none.

import { lstatOrUndefined } from "./files.ts";
import { type ManifestEntry, readManifest, type Role } from "./manifest.ts";
import { MANIFEST_PATH, underRoot, UNIT_NAME } from "./paths.ts";
import { systemctl, systemdManages } from "./systemd.ts";

export interface UninstallOptions {
  root: string;
  dryRun: boolean;
}

// The conflist first, so that runtimes stop calling Coil before its executable goes.
const ORDER: Role[] = ["conflist", "unit", "environment", "daemon-link", "executable"];

/**
 * Uninstalls, printing one line per path through `print`. Idempotent: without a manifest it says so
 * and changes nothing.
 * @throws {Error} when the manifest is unreadable (then nothing is removed) or a removal fails.
 */
export async function uninstall(options: UninstallOptions, print: (line: string) => void): Promise<void> {
  const { root } = options;
  const manifestFull = underRoot(root, MANIFEST_PATH);
  const manifest = await readManifest(manifestFull);
  if (manifest === undefined) {
    print(`nothing to uninstall: no install manifest at ${manifestFull}`);
    return;
  }
  const entries = [...manifest.entries].sort((a, b) => ORDER.indexOf(a.role) - ORDER.indexOf(b.role));
  const prefix = options.dryRun ? "would " : "";
  const line = (action: string, path: string, note = "") =>
    print(`${prefix}${action.padEnd(9)} ${underRoot(root, path)}${note ? ` (${note})` : ""}`);
  const removable: ManifestEntry[] = [];
  for (const entry of entries) {
    const state = await stateOf(root, entry);
    if (state === "ours") removable.push(entry);
    line(state === "ours" ? "remove" : "leave", entry.path, state === "ours" ? "" : state);
  }
  line("remove", MANIFEST_PATH, "install manifest");
  const dirs = [...manifest.dirs].reverse();
  for (const dir of dirs) line("rmdir", dir, "if empty");
  if (options.dryRun) return;

  const systemd = await systemdManages(root);
  for (const entry of removable) {
    if (entry.role === "unit" && systemd) await runSystemctl(["disable", "--now", UNIT_NAME], print);
    await Deno.remove(underRoot(root, entry.path));
  }
  if (systemd) await runSystemctl(["daemon-reload"], print);
  else print(`systemd does not manage ${root}: stop coild yourself if it still runs`);
  await Deno.remove(manifestFull);
  for (const dir of dirs) {
    await Deno.remove(underRoot(root, dir)).catch((err) => {
      // Another program's files in a directory install created: the directory stays with them.
      if (!(err instanceof Deno.errors.NotFound || (err as { code?: string }).code === "ENOTEMPTY")) {
        throw err;
      }
    });
  }
}

/** "ours" when the path still holds the kind of file install put there; otherwise why it stays. */
async function stateOf(root: string, entry: ManifestEntry): Promise<string> {
  const info = await lstatOrUndefined(underRoot(root, entry.path));
  if (info === undefined) return "already gone";
  if (entry.type === "file" ? info.isFile : info.isSymlink) return "ours";
  return `no longer the ${entry.type} install wrote`;
}

async function runSystemctl(args: string[], print: (line: string) => void): Promise<void> {
  try {
    await systemctl(args);
    print(`ran       systemctl ${args.join(" ")}`);
  } catch (err) {
    print(`${(err as Error).message}: run systemctl ${args.join(" ")} yourself`);
  }
}
