// Network namespaces as file descriptors, and withNetns() to run code inside one.
// Caveat for every caller: setns() moves only the calling thread, so withNetns() runs synchronous work
// only (FFI calls, sync ops); an await inside would let other code run in the wrong namespace, and
// async Deno ops run on other threads that never moved. A netlink socket stays bound to the namespace
// it was opened in, so open one per namespace (`new NetlinkSocket({ netnsFd })`) instead of switching.

import { NetlinkError } from "./errors.ts";
import { AT_EMPTY_PATH, CLONE_NEWNET, cString, lastErrno, libc, O_CLOEXEC, O_PATH, O_RDONLY } from "./ffi.ts";

// statfs(2) f_type of the namespace filesystem; ioctl_ns(2) request for a namespace file's CLONE_NEW* type.
const NSFS_MAGIC = 0x6e736673n;
const NS_GET_NSTYPE = 0xb703n;
const EINVAL = 22;
// statx(2): the fields asked for, and the offsets in struct statx (the same on every architecture).
const STATX_TYPE_INO = 0x1 | 0x100;
const STX_MODE = 28;
const STX_INO = 32;
const STX_DEV_MAJOR = 136;
const STX_DEV_MINOR = 140;
const FILE_TYPES: Readonly<Record<number, string>> = {
  0o010000: "a FIFO",
  0o020000: "a character device",
  0o040000: "a directory",
  0o060000: "a block device",
  0o100000: "a regular file",
  0o140000: "a socket",
};

// The namespace the JS thread started in, opened on first use and kept for the process's life.
let homeFd: number | undefined;
// The namespace withNetns() last entered, so nested calls return to their caller's namespace.
let currentFd: number | undefined;

/**
 * A path that exists but names no network namespace: a FIFO, a plain file (e.g. a netns file whose bind
 * mount is gone), a directory, another kind of namespace. Its errno is EINVAL, as setns() would say.
 */
export class NotNetnsError extends NetlinkError {
  readonly path: string;
  /** What the path names instead: "a FIFO", "a regular file", "another kind of namespace"… */
  readonly found: string;

  constructor(path: string, found: string) {
    super({ op: "open", object: `netns ${path}` }, EINVAL);
    this.name = "NotNetnsError";
    this.message = `netlink: netns ${path} is not a network namespace: it is ${found}`;
    this.path = path;
    this.found = found;
  }
}

/**
 * Opens a network namespace file (e.g. `/var/run/netns/x` or `/proc/<pid>/ns/net`) and returns its fd.
 * It never blocks and never opens anything else: the path is resolved with O_PATH, which does not open
 * the file itself (no wait for a FIFO's writer, no device driver's open()), and only a namespace file
 * is then reopened for real.
 * @throws {NetlinkError} with code ENOENT when the path does not exist (a DEL may treat that as done);
 *   {NotNetnsError} when it exists and is no network namespace.
 */
export function openNetns(path: string): number {
  const object = `netns ${path}`;
  const pathFd = libc().open(cString(path), O_PATH | O_CLOEXEC);
  if (pathFd < 0) throw new NetlinkError({ op: "open", object }, lastErrno());
  try {
    if (fsType(pathFd, object) !== NSFS_MAGIC) throw new NotNetnsError(path, fileType(pathFd, object));
    // setns() and IFLA_NET_NS_FD refuse O_PATH fds; /proc/self/fd/N reopens the very inode checked.
    const fd = libc().open(cString(`/proc/self/fd/${pathFd}`), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw new NetlinkError({ op: "open", object }, lastErrno());
    if (libc().ioctl(fd, NS_GET_NSTYPE) !== CLONE_NEWNET) {
      libc().close(fd);
      throw new NotNetnsError(path, "another kind of namespace");
    }
    return fd;
  } finally {
    libc().close(pathFd);
  }
}

/**
 * The namespace's identity as `dev:ino` of its nsfs inode: equal for every path to one namespace
 * (a bind mount, `/proc/<pid>/ns/net`). @throws {NetlinkError} (EBADF) when `fd` is not open.
 */
export function netnsId(fd: number): string {
  const stx = statx(fd, `netns fd ${fd}`);
  return `${stx.getUint32(STX_DEV_MAJOR, true)}:${stx.getUint32(STX_DEV_MINOR, true)}:${
    stx.getBigUint64(STX_INO, true)
  }`;
}

/**
 * Whether `fd` is the network namespace this process's JS thread started in: the node's own, which a
 * caller must never configure as a pod's.
 */
export function isOwnNetns(fd: number): boolean {
  return netnsId(fd) === netnsId(home());
}

function home(): number {
  homeFd ??= openNetns("/proc/thread-self/ns/net");
  return homeFd;
}

function fsType(fd: number, object: string): bigint {
  const buf = new Uint8Array(128);
  if (libc().fstatfs(fd, buf) < 0) throw new NetlinkError({ op: "stat", object }, lastErrno());
  return new DataView(buf.buffer).getBigInt64(0, true);
}

function fileType(fd: number, object: string): string {
  const type = statx(fd, object).getUint16(STX_MODE, true) & 0o170000;
  return FILE_TYPES[type] ?? `a file of type 0o${type.toString(8)}`;
}

function statx(fd: number, object: string): DataView {
  const buf = new Uint8Array(256);
  if (libc().statx(fd, cString(""), AT_EMPTY_PATH, STATX_TYPE_INO, buf) < 0) {
    throw new NetlinkError({ op: "stat", object }, lastErrno());
  }
  return new DataView(buf.buffer);
}

/** Closes a namespace fd from openNetns(). @throws {NetlinkError} (EBADF) when it is not open. */
export function closeNetns(fd: number): void {
  if (libc().close(fd) < 0) throw new NetlinkError({ op: "close", object: `netns fd ${fd}` }, lastErrno());
}

function enter(fd: number, what: string): void {
  if (libc().setns(fd, CLONE_NEWNET) < 0) throw new NetlinkError({ op: "enter", object: what }, lastErrno());
}

/**
 * Runs `fn` with the JS thread inside the namespace `fd` and switches back in `finally`, also when
 * `fn` throws. Only synchronous work: a `fn` that returns a Promise is an error (after switching back).
 * Nesting is allowed.
 * @throws {NetlinkError} when the namespace cannot be entered; {TypeError} for an async `fn`.
 */
export function withNetns<T>(fd: number, fn: () => T): T {
  const start = home();
  const previous = currentFd;
  enter(fd, `netns fd ${fd}`);
  currentFd = fd;
  let result: T;
  try {
    result = fn();
  } finally {
    enter(previous ?? start, "the original netns");
    currentFd = previous;
  }
  if (result instanceof Promise) {
    result.catch(() => {});
    throw new TypeError("withNetns() runs synchronous work only: fn returned a Promise");
  }
  return result;
}
