// `coil install`: puts the executable, the coild link, the environment file, the unit and the
// conflist in place, records them in the manifest, and asks systemd to pick the unit up. Idempotent:
// a re-run with the same inputs writes nothing.

import { type ConflistOptions, renderConflist } from "./conflist.ts";
import { type Action, compare, type Desired, lstatOrUndefined, makeDirs, missingDirs, put } from "./files.ts";
import type { InstalledExecutable } from "./executable.ts";
import { type Manifest, type ManifestEntry, readManifest, renderManifest, type Role } from "./manifest.ts";
import {
  CNI_CONF_DIR,
  DAEMON_LINK_PATH,
  ENVIRONMENT_PATH,
  EXECUTABLE_PATH,
  MANIFEST_PATH,
  underRoot,
  UNIT_NAME,
  UNIT_PATH,
} from "./paths.ts";
import { systemctl, systemdManages } from "./systemd.ts";
import { COILD_UNIT } from "./unit.ts";

/** A file or symlink install writes, and what it is for. */
type Piece = Desired & { role: Role };

export interface InstallOptions {
  /** The staging root; "/" for the live system. */
  root: string;
  dryRun: boolean;
  /** Replace an existing environment file. */
  force: boolean;
  /** Enable and start coild (when systemd manages the root). */
  now: boolean;
  executable: InstalledExecutable;
  /** File name in the CNI conf dir, e.g. 10-coil.conflist. */
  conflistName: string;
  conflist: ConflistOptions;
  /** The environment file's text (coild's settings). */
  environment: string;
}

/**
 * Installs Coil under `options.root`, printing one line per path (and what to do next) through
 * `print`. Never touches another file of the CNI conf dir.
 * @throws {Error} naming the path that could not be written; files already written stay (a re-run
 *   completes the install).
 */
export async function install(options: InstallOptions, print: (line: string) => void): Promise<void> {
  const { root } = options;
  const text = new TextEncoder();
  const conflistPath = `${CNI_CONF_DIR}/${options.conflistName}`;
  // In the order they are written: the conflist last, so that a runtime only turns to Coil once the
  // executable and coild's unit are in place.
  const desired: Piece[] = [
    { role: "executable", type: "file", path: EXECUTABLE_PATH, bytes: options.executable.bytes, mode: 0o755 },
    { role: "daemon-link", type: "symlink", path: DAEMON_LINK_PATH, target: EXECUTABLE_PATH },
    {
      role: "environment",
      type: "file",
      path: ENVIRONMENT_PATH,
      bytes: text.encode(options.environment),
      mode: 0o600,
      keepExisting: !options.force,
    },
    { role: "unit", type: "file", path: UNIT_PATH, bytes: text.encode(COILD_UNIT), mode: 0o644 },
    {
      role: "conflist",
      type: "file",
      path: conflistPath,
      bytes: text.encode(renderConflist(options.conflist)),
      mode: 0o644,
    },
  ];
  const manifestFull = underRoot(root, MANIFEST_PATH);
  const previous = await readManifest(manifestFull);
  const actions = await Promise.all(desired.map((d) => compare(root, d)));
  const wanted = new Set(desired.map((d) => d.path));
  // Coil's own files of an earlier install that this one no longer writes (a conflist renamed).
  const stale: ManifestEntry[] = [];
  for (const entry of previous?.entries ?? []) {
    if (!wanted.has(entry.path) && await matches(root, entry)) stale.push(entry);
  }
  const created = await dirsToCreate(root, [...desired.map((d) => d.path), MANIFEST_PATH]);
  const keptDirs = [];
  for (const dir of previous?.dirs ?? []) {
    if (!created.includes(dir) && await lstatOrUndefined(underRoot(root, dir)) !== undefined) {
      keptDirs.push(dir);
    }
  }
  // A kept file install did not write first stays the admin's: uninstall must leave it.
  const owned = desired.filter((d, i) =>
    actions[i] !== "keep" || previous?.entries.some((e) => e.path === d.path)
  );
  const manifest: Manifest = {
    entries: owned.map((d) =>
      d.type === "file"
        ? { role: d.role, type: "file", path: d.path }
        : { role: d.role, type: "symlink", path: d.path, target: d.target }
    ),
    dirs: [...keptDirs, ...created],
  };
  const manifestDesired: Desired = {
    type: "file",
    path: MANIFEST_PATH,
    bytes: text.encode(renderManifest(manifest)),
    mode: 0o644,
  };
  const manifestAction = await compare(root, manifestDesired);

  const prefix = options.dryRun ? "would " : "";
  const line = (action: string, path: string, note = "") =>
    print(`${prefix}${action.padEnd(9)} ${underRoot(root, path)}${note ? ` (${note})` : ""}`);
  for (const dir of created) line("mkdir", dir);
  line(manifestAction, MANIFEST_PATH, "install manifest");
  desired.forEach((d, i) => line(actions[i], d.path, note(d, actions[i], options)));
  for (const entry of stale) line("remove", entry.path, "written by an earlier install");
  if (options.dryRun) return;

  await makeDirs(root, created);
  if (manifestAction !== "unchanged") await put(root, manifestDesired);
  const changed = (role: string) => desired.some((d, i) => d.role === role && isWrite(actions[i]));
  for (const [i, d] of desired.entries()) {
    if (d.role === "conflist") {
      await startDaemon(options, changed("unit"), changed("executable") || changed("environment"), print);
    }
    if (isWrite(actions[i])) await put(root, d);
  }
  for (const entry of stale) await Deno.remove(underRoot(root, entry.path));
}

function isWrite(action: Action): boolean {
  return action === "create" || action === "replace";
}

function note(d: Piece, action: Action, options: InstallOptions): string {
  if (action === "keep") return "exists; --force replaces it";
  if (d.role === "executable") return options.executable.origin;
  if (d.role === "daemon-link" && d.type === "symlink") return `-> ${d.target}`;
  return "";
}

/** Is `entry` still what install put there (a file, or a symlink)? */
async function matches(root: string, entry: ManifestEntry): Promise<boolean> {
  const info = await lstatOrUndefined(underRoot(root, entry.path));
  return entry.type === "file" ? info?.isFile === true : info?.isSymlink === true;
}

async function dirsToCreate(root: string, paths: string[]): Promise<string[]> {
  const dirs: string[] = [];
  for (const path of paths) {
    for (const dir of await missingDirs(root, path)) if (!dirs.includes(dir)) dirs.push(dir);
  }
  return dirs;
}

/** Reloads systemd and (with --now) starts coild; where systemd does not manage the root, says how. */
async function startDaemon(
  options: InstallOptions,
  unitChanged: boolean,
  daemonChanged: boolean,
  print: (line: string) => void,
): Promise<void> {
  const steps = [
    ...(unitChanged ? [["daemon-reload"]] : []),
    ...(options.now ? [["enable", "--now", UNIT_NAME]] : []),
  ];
  if (!await systemdManages(options.root)) {
    const why = options.root === "/" ? "PID 1 is not systemd" : `installed under ${options.root}`;
    print(`${why}: on the node, run: systemctl daemon-reload && systemctl enable --now ${UNIT_NAME}`);
    print(`  (without systemd: set -a; . ${ENVIRONMENT_PATH}; exec ${DAEMON_LINK_PATH})`);
    return;
  }
  for (const args of steps) {
    try {
      await systemctl(args);
      print(`ran       systemctl ${args.join(" ")}`);
    } catch (err) {
      print(`${(err as Error).message}: run systemctl ${args.join(" ")} yourself`);
    }
  }
  if (!options.now) print(`to start coild: systemctl enable --now ${UNIT_NAME} (or install --now)`);
  if (daemonChanged) {
    print(`a running coild keeps its old executable and settings: systemctl restart ${UNIT_NAME}`);
  }
}
