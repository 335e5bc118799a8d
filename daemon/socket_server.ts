// coild's UNIX socket: one JSON request line in, one JSON reply out, per connection. The socket is
// created mode 0600 inside a private directory and then linked into place, so that no other user can
// connect even in the instant between bind and chmod. The path is coild's only while coild holds it: a
// socket another process still answers on is never replaced, and close() removes only its own socket.
// Its directory must be one no other user can write, nor swap through an ancestor: whoever could create
// a file there could put their own socket at the path before coild (or after a crash) and answer ADDs.

import type { ApiReply } from "../cni/api.ts";

const MAX_REQUEST_BYTES = 1 << 20;

/** Answers one raw request line; must not throw (errors become replies). */
export type RequestHandler = (line: string) => Promise<ApiReply>;

/** A listening socket; `close()` stops accepting, waits for requests in flight and removes the file. */
export interface SocketServer {
  path: string;
  close(): Promise<void>;
}

/** Why coild cannot serve on its socket path: a live socket, something that is no socket, a bad directory. */
export class SocketPathError extends Error {
  readonly path: string;

  constructor(path: string, reason: string, options?: ErrorOptions) {
    super(`Cannot serve on socket "${path}": ${reason}`, options);
    this.name = "SocketPathError";
    this.path = path;
  }
}

/**
 * Checks, before coild changes anything, that it may serve on `path`: its directory exists (it is
 * created, mode 0755, if missing), belongs to root or coild's user and is writable by its owner alone;
 * every directory above it (symbolic links followed) belongs to root or coild's user and, when others
 * may write it, is root's and sticky (as /tmp); `path` is free or a stale socket nobody listens on.
 * @throws {SocketPathError} naming the path and the reason (a directory: its mode and owner).
 */
export async function checkSocketPath(path: string): Promise<void> {
  await inspectSocketPath(path);
}

/**
 * Listens on `path` (replacing a stale socket file left by a crash) and serves until closed.
 * @throws {SocketPathError} as checkSocketPath() does, or when the socket cannot be created.
 */
export async function serveSocket(path: string, handle: RequestHandler): Promise<SocketServer> {
  const { listener, placed } = await listenAt(path, await inspectSocketPath(path));
  const inFlight = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      const served = serveConnection(conn, handle).finally(() => inFlight.delete(served));
      inFlight.add(served);
    }
  })().catch(() => {});
  return {
    path,
    async close() {
      listener.close();
      await loop;
      await Promise.allSettled([...inFlight]);
      await removeIfSame(path, placed);
    },
  };
}

/** Undefined when `path` is free, or the stale socket there (nobody listens on it); anything else throws. */
async function inspectSocketPath(path: string): Promise<Deno.FileInfo | undefined> {
  const dir = parentDir(path);
  const missing = await checkDirectories(path, dir);
  try {
    for (const created of missing) {
      await Deno.mkdir(created);
      await Deno.chmod(created, 0o755);
    }
  } catch (err) {
    throw new SocketPathError(path, `cannot create its directory "${dir}": ${errorText(err)}`, {
      cause: err,
    });
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new SocketPathError(path, errorText(err), { cause: err });
  }
  if (!info.isSocket) throw new SocketPathError(path, `it exists and is ${fileType(info)}, not a socket`);
  try {
    (await Deno.connect({ transport: "unix", path })).close();
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused) return info;
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new SocketPathError(path, `cannot tell whether another coild serves it: ${errorText(err)}`, {
      cause: err,
    });
  }
  throw new SocketPathError(path, "another coild serves it (a connection to it was accepted)");
}

/**
 * Checks each existing directory from / down to `dir` (and, for a symbolic link, the directories of its
 * target); returns the missing ones, top first. Nothing is changed.
 */
async function checkDirectories(path: string, dir: string): Promise<string[]> {
  const lexical = prefixes(dir.startsWith("/") ? dir : `${Deno.cwd()}/${dir}`);
  const checked = new Set<string>();
  for (const [i, prefix] of lexical.entries()) {
    let real: string;
    try {
      real = await Deno.realPath(prefix);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return lexical.slice(i);
      throw new SocketPathError(path, `cannot inspect directory "${prefix}": ${errorText(err)}`, {
        cause: err,
      });
    }
    for (const ancestor of prefixes(real)) {
      const own = i === lexical.length - 1 && ancestor === real;
      if (checked.has(`${own} ${ancestor}`)) continue;
      checked.add(`${own} ${ancestor}`);
      const info = await Deno.stat(ancestor);
      if (!info.isDirectory) {
        throw new SocketPathError(
          path,
          `cannot create its directory "${dir}": "${ancestor}" is not a directory`,
        );
      }
      const reason = directoryFlaw(info, own);
      if (reason) throw new SocketPathError(path, `directory "${ancestor}" ${reason}`);
    }
  }
  return [];
}

/**
 * Why another user could replace what `info` (a directory) holds, or undefined. `own`: the socket's
 * directory, which its owner alone may write; above it, others may write a sticky directory of root's.
 */
function directoryFlaw(info: Deno.FileInfo, own: boolean): string | undefined {
  const mode = info.mode! & 0o7777;
  const uid = info.uid!;
  const what = `(mode ${mode.toString(8).padStart(4, "0")}, owner uid ${uid})`;
  if (uid !== 0 && uid !== Deno.uid()) {
    return `${what} belongs to another user, who could put a socket of their own in coild's place`;
  }
  if ((mode & 0o022) === 0) return undefined;
  if (own) {
    return `${what} is writable by others than its owner, who could put a socket of their own in ` +
      "coild's place: use a directory only its owner can write, e.g. /run";
  }
  if ((mode & 0o1000) === 0 || uid !== 0) {
    return `${what} is writable by others than its owner and not a sticky directory of root's (as /tmp), ` +
      "so others could replace the directories below it";
  }
  return undefined;
}

/** "/", "/a", "/a/b" for "/a/b". */
function prefixes(dir: string): string[] {
  const names = dir.split("/").filter((name) => name !== "");
  return ["/", ...names.map((_, i) => `/${names.slice(0, i + 1).join("/")}`)];
}

/** Binds in a private directory, then links the socket to `path`; returns the listener and its file. */
async function listenAt(path: string, stale: Deno.FileInfo | undefined) {
  const privateDir = await Deno.makeTempDir({ dir: parentDir(path), prefix: ".coild-" });
  let listener: Deno.UnixListener | undefined;
  try {
    await Deno.chmod(privateDir, 0o700);
    const own = `${privateDir}/s`;
    listener = Deno.listen({ transport: "unix", path: own });
    await Deno.chmod(own, 0o600);
    const placed = await Deno.lstat(own);
    if (stale) await setAsideStale(path, stale, privateDir);
    try {
      // link(), unlike rename(), fails when the path is taken: a coild that started meanwhile keeps it.
      await Deno.link(own, path);
    } catch (err) {
      const reason = err instanceof Deno.errors.AlreadyExists
        ? "another process created it while coild was starting"
        : `cannot create it: ${errorText(err)}`;
      throw new SocketPathError(path, reason, { cause: err });
    }
    return { listener, placed };
  } catch (err) {
    listener?.close();
    throw err;
  } finally {
    await Deno.remove(privateDir, { recursive: true }).catch(() => {});
  }
}

/** Removes `path` only while it is still the socket file this server created. */
async function removeIfSame(path: string, placed: Deno.FileInfo): Promise<void> {
  try {
    const now = await Deno.lstat(path);
    if (now.dev === placed.dev && now.ino === placed.ino) await Deno.remove(path);
  } catch (err) {
    ignoreNotFound(err);
  }
}

/**
 * Moves the stale socket out of `path` into `dir` (removed with it). rename() takes whatever is there at
 * that instant, so when that is no longer the socket found stale (a coild starting at the same time put
 * its own there), it goes back and this start is refused: a plain remove() would delete the other's
 * live socket and leave it serving on a file nobody can reach.
 */
async function setAsideStale(path: string, stale: Deno.FileInfo, dir: string): Promise<void> {
  const aside = `${dir}/stale`;
  try {
    await Deno.rename(path, aside);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw new SocketPathError(path, `cannot replace its stale socket: ${errorText(err)}`, { cause: err });
  }
  const moved = await Deno.lstat(aside);
  if (moved.ino === stale.ino && moved.dev === stale.dev) return;
  await Deno.link(aside, path).catch(() => {});
  throw new SocketPathError(path, "another process created it while coild was starting");
}

function parentDir(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "." : path.slice(0, slash) || "/";
}

function fileType(info: Deno.FileInfo): string {
  if (info.isFile) return "a regular file";
  if (info.isDirectory) return "a directory";
  if (info.isSymlink) return "a symbolic link";
  if (info.isFifo) return "a FIFO";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  return "not a regular file";
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function ignoreNotFound(err: unknown): void {
  if (!(err instanceof Deno.errors.NotFound)) throw err;
}

async function serveConnection(conn: Deno.UnixConn, handle: RequestHandler): Promise<void> {
  try {
    const line = await readLine(conn);
    const reply: ApiReply = line === undefined
      ? { ok: false, code: 7, msg: `Bad request: no request line within ${MAX_REQUEST_BYTES} bytes` }
      : await handle(line);
    await writeAll(conn, new TextEncoder().encode(JSON.stringify(reply)));
  } catch {
    // The client went away (a runtime timeout); the work it asked for has completed or been undone.
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

async function readLine(conn: Deno.UnixConn): Promise<string | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const buf = new Uint8Array(16 * 1024);
  while (size < MAX_REQUEST_BYTES) {
    const n = await conn.read(buf);
    if (n === null) break;
    const chunk = buf.slice(0, n);
    const newline = chunk.indexOf(10);
    if (newline >= 0) {
      chunks.push(chunk.subarray(0, newline));
      return decode(chunks);
    }
    chunks.push(chunk);
    size += n;
  }
  return size > 0 && size < MAX_REQUEST_BYTES ? decode(chunks) : undefined;
}

function decode(chunks: Uint8Array[]): string {
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    all.set(c, offset);
    offset += c.length;
  }
  return new TextDecoder().decode(all);
}

async function writeAll(conn: Deno.UnixConn, data: Uint8Array): Promise<void> {
  let written = 0;
  while (written < data.length) written += await conn.write(data.subarray(written));
}
