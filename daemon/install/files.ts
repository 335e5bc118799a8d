// The file operations of install and uninstall, each safe to interrupt: a file or symlink appears
// whole or not at all (written beside its final name, then renamed over it), so a runtime exec'ing
// coil or reading the conflist never sees half of one, and a running coil keeps its old inode.

import { Buffer } from "node:buffer";
import { underRoot } from "./paths.ts";

/** A file or symlink install wants in place. */
export type Desired =
  | {
    type: "file";
    path: string;
    bytes: Uint8Array;
    mode: number;
    /** An existing file is left as it is (the admin's settings), unless unchanged anyway. */
    keepExisting?: boolean;
  }
  | { type: "symlink"; path: string; target: string };

/** What a run does to one path. */
export type Action = "create" | "replace" | "unchanged" | "keep";

/**
 * Compares what is at `desired.path` under `root` with what install wants there.
 * @throws {Error} when the path is a directory (or another kind of file install must not replace).
 */
export async function compare(root: string, desired: Desired): Promise<Action> {
  const full = underRoot(root, desired.path);
  const info = await lstatOrUndefined(full);
  if (info === undefined) return "create";
  if (!info.isFile && !info.isSymlink) {
    throw new Error(`Cannot install ${full}: it exists and is not a file or a symlink`);
  }
  if (desired.type === "symlink") {
    return info.isSymlink && await Deno.readLink(full) === desired.target ? "unchanged" : "replace";
  }
  if (
    info.isFile && (info.mode! & 0o7777) === desired.mode && equal(await Deno.readFile(full), desired.bytes)
  ) {
    return "unchanged";
  }
  return desired.keepExisting ? "keep" : "replace";
}

/** Puts `desired` in place atomically (temp file or symlink in the same directory, then rename). */
export async function put(root: string, desired: Desired): Promise<void> {
  const full = underRoot(root, desired.path);
  const temp = `${full.slice(0, full.lastIndexOf("/") + 1)}.${full.slice(full.lastIndexOf("/") + 1)}.coil-${
    crypto.randomUUID().slice(0, 8)
  }`;
  try {
    if (desired.type === "symlink") {
      await Deno.symlink(desired.target, temp);
    } else {
      // createNew: never write through a file or symlink someone put at the temp name.
      using file = await Deno.open(temp, { write: true, createNew: true, mode: desired.mode });
      for (let rest = desired.bytes; rest.length > 0;) rest = rest.subarray(await file.write(rest));
      await file.sync();
      await Deno.chmod(temp, desired.mode); // the umask narrowed the mode given to open()
    }
    await Deno.rename(temp, full);
  } catch (err) {
    await Deno.remove(temp).catch(() => {});
    throw new Error(`Cannot write ${full}: ${(err as Error).message}`, { cause: err });
  }
}

/** The directories above `path` that do not exist under `root`, parents first (as on the node). */
export async function missingDirs(root: string, path: string): Promise<string[]> {
  const missing: string[] = [];
  for (let dir = parent(path); dir !== "/"; dir = parent(dir)) {
    if (await lstatOrUndefined(underRoot(root, dir)) !== undefined) break;
    missing.unshift(dir);
  }
  return missing;
}

/** Creates `dirs` (parents first) under `root`, mode 0755. */
export async function makeDirs(root: string, dirs: string[]): Promise<void> {
  for (const dir of dirs) {
    await Deno.mkdir(underRoot(root, dir), { mode: 0o755 }).catch((err) => {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    });
  }
}

/** What is at `full` now, without following a symlink; undefined when nothing is. */
export async function lstatOrUndefined(full: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.lstat(full);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

function parent(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  // Buffer.equals is a memcmp: the executable may be 100 MB.
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}
