// One datagram to a UNIX socket through libc (socket, sendto, close): Deno's own unix datagram sockets
// need --unstable-net, which coild's flags (scripts/deno_flags) leave out. libc is opened on first use.

import { lastErrno } from "../netlink/ffi.ts";
import { errnoName } from "../netlink/errors.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
/** No SIGPIPE if the peer is gone. */
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): sa_family_t, then sun_path[108] (unix(7)). */
const SOCKADDR_UN_SIZE = 110;
const SUN_PATH_OFFSET = 2;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

/** A failed socket call, with the errno by name (e.g. ECONNREFUSED when nobody listens). */
export class UnixDatagramError extends Error {
  readonly errno: number;
  constructor(target: string, op: string, errno: number) {
    super(`Cannot send to UNIX socket "${target}": ${op}() failed with ${errnoName(errno)}`);
    this.name = "UnixDatagramError";
    this.errno = errno;
  }
}

/**
 * The sockaddr_un of `target` and its length: a path, or an abstract name written `@name` (its
 * sun_path starts with a NUL and its length counts no terminator, as sd_notify() does).
 * @throws {TypeError} when the name does not fit into sun_path.
 */
export function sockaddrUn(target: string): { addr: Uint8Array<ArrayBuffer>; length: number } {
  const abstract = target.startsWith("@");
  const name = new TextEncoder().encode(abstract ? target.slice(1) : target);
  // A path needs its NUL terminator inside sun_path; an abstract name needs the leading NUL.
  if (name.length === 0 || name.length + 1 > SOCKADDR_UN_SIZE - SUN_PATH_OFFSET) {
    throw new TypeError(`Invalid UNIX socket address "${target}": empty or longer than 107 bytes`);
  }
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(name, SUN_PATH_OFFSET + (abstract ? 1 : 0));
  return { addr, length: SUN_PATH_OFFSET + 1 + name.length };
}

/**
 * Sends `data` as one datagram to `target` (a path or `@abstract`), from a socket opened and closed
 * for the purpose.
 * @throws {UnixDatagramError} on a failed call (e.g. ENOENT, ECONNREFUSED, EAGAIN).
 */
export function sendDatagram(target: string, data: Uint8Array): void {
  const { addr, length } = sockaddrUn(target);
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  const libc = lib.symbols;
  const fd = libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new UnixDatagramError(target, "socket", lastErrno());
  try {
    const payload = Uint8Array.from(data);
    const sent = libc.sendto(fd, payload, BigInt(payload.length), MSG_NOSIGNAL, addr, length);
    if (sent < 0) throw new UnixDatagramError(target, "sendto", lastErrno());
  } finally {
    libc.close(fd);
  }
}
