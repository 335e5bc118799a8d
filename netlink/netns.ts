// Network namespaces as file descriptors, and withNetns() to run code inside one.
// Caveat for every caller: setns() moves only the calling thread, so withNetns() runs synchronous work
// only (FFI calls, sync ops); an await inside would let other code run in the wrong namespace, and
// async Deno ops run on other threads that never moved. A netlink socket stays bound to the namespace
// it was opened in, so open one per namespace (`new NetlinkSocket({ netnsFd })`) instead of switching.

import { NetlinkError } from "./errors.ts";
import { CLONE_NEWNET, cString, lastErrno, libc, O_CLOEXEC, O_RDONLY } from "./ffi.ts";

// The namespace the JS thread started in, opened on first use and kept for the process's life.
let homeFd: number | undefined;
// The namespace withNetns() last entered, so nested calls return to their caller's namespace.
let currentFd: number | undefined;

/**
 * Opens a namespace file (e.g. `/var/run/netns/x` or `/proc/<pid>/ns/net`) and returns its fd.
 * @throws {NetlinkError} with code ENOENT when the path does not exist (a DEL may treat that as done).
 */
export function openNetns(path: string): number {
  const fd = libc().open(cString(path), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw new NetlinkError({ op: "open", object: `netns ${path}` }, lastErrno());
  return fd;
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
  homeFd ??= openNetns("/proc/thread-self/ns/net");
  const previous = currentFd;
  enter(fd, `netns fd ${fd}`);
  currentFd = fd;
  let result: T;
  try {
    result = fn();
  } finally {
    enter(previous ?? homeFd, "the original netns");
    currentFd = previous;
  }
  if (result instanceof Promise) {
    result.catch(() => {});
    throw new TypeError("withNetns() runs synchronous work only: fn returned a Promise");
  }
  return result;
}
