// Files under /proc read through libc: Deno asks for --allow-all before it reads anything under /proc
// (sysctls, /proc/<pid>/stat, namespace links), which coild (scripts/deno_flags, the compiled binary)
// does not have. A net.* sysctl belongs to the network namespace of the thread that opens it.

import { NetlinkError } from "./errors.ts";
import { cString, lastErrno, libc, O_CLOEXEC, O_RDONLY } from "./ffi.ts";

/**
 * A /proc file's whole text; errors name it as `object` (default: the path).
 * @throws {NetlinkError} e.g. ENOENT when it does not exist.
 */
export function readProcFile(path: string, object = path): string {
  const fd = libc().open(cString(path), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw new NetlinkError({ op: "read", object }, lastErrno());
  try {
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = Number(libc().read(fd, buf, BigInt(buf.length)));
      if (n < 0) throw new NetlinkError({ op: "read", object }, lastErrno());
      if (n === 0) break;
      chunks.push(buf.slice(0, n));
    }
    return new TextDecoder().decode(concat(chunks));
  } finally {
    libc().close(fd);
  }
}

/** Where a /proc symlink points, e.g. `net:[4026531840]` for `/proc/self/ns/net`. @throws {NetlinkError} */
export function readProcLink(path: string): string {
  const buf = new Uint8Array(4096);
  const n = Number(libc().readlink(cString(path), buf, BigInt(buf.length)));
  if (n < 0) throw new NetlinkError({ op: "readlink", object: path }, lastErrno());
  return new TextDecoder().decode(buf.subarray(0, n));
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    all.set(c, offset);
    offset += c.length;
  }
  return all;
}
