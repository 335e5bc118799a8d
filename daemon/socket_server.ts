// coild's UNIX socket: one JSON request line in, one JSON reply out, per connection. The socket is
// created mode 0600 inside a private directory and then renamed into place, so that no other user can
// connect even in the instant between bind and chmod.

import type { ApiReply } from "../cni/api.ts";

const MAX_REQUEST_BYTES = 1 << 20;

/** Answers one raw request line; must not throw (errors become replies). */
export type RequestHandler = (line: string) => Promise<ApiReply>;

/** A listening socket; `close()` stops accepting, waits for requests in flight and removes the file. */
export interface SocketServer {
  path: string;
  close(): Promise<void>;
}

/**
 * Listens on `path` (replacing a stale socket file left by a crash) and serves until closed.
 * @throws when the directory cannot be written or `path` exists and is not a socket.
 */
export async function serveSocket(path: string, handle: RequestHandler): Promise<SocketServer> {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  await Deno.mkdir(dir, { recursive: true });
  await removeStaleSocket(path);
  const privateDir = await Deno.makeTempDir({ dir, prefix: ".coild-" });
  let listener: Deno.UnixListener;
  try {
    await Deno.chmod(privateDir, 0o700);
    listener = Deno.listen({ transport: "unix", path: `${privateDir}/s` });
    await Deno.chmod(`${privateDir}/s`, 0o600);
    await Deno.rename(`${privateDir}/s`, path);
  } finally {
    await Deno.remove(privateDir, { recursive: true }).catch(() => {});
  }
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
      await Deno.remove(path).catch(() => {});
    },
  };
}

async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  if (!info.isSocket) throw new Error(`Refusing to replace "${path}": it exists and is not a socket`);
  await Deno.remove(path);
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
