// The one error type of the netlink layer: the errno the kernel (or libc) returned, by number and by
// name, so callers can make DEL idempotent with isNotFound() instead of matching message strings.

// Linux x86-64/arm64 errno values and glibc's strerror() text for the ones netlink and setns return.
const ERRNOS: Readonly<Record<number, readonly [string, string]>> = {
  1: ["EPERM", "Operation not permitted"],
  2: ["ENOENT", "No such file or directory"],
  3: ["ESRCH", "No such process"],
  4: ["EINTR", "Interrupted system call"],
  5: ["EIO", "Input/output error"],
  6: ["ENXIO", "No such device or address"],
  7: ["E2BIG", "Argument list too long"],
  9: ["EBADF", "Bad file descriptor"],
  11: ["EAGAIN", "Resource temporarily unavailable"],
  12: ["ENOMEM", "Cannot allocate memory"],
  13: ["EACCES", "Permission denied"],
  14: ["EFAULT", "Bad address"],
  16: ["EBUSY", "Device or resource busy"],
  17: ["EEXIST", "File exists"],
  18: ["EXDEV", "Invalid cross-device link"],
  19: ["ENODEV", "No such device"],
  20: ["ENOTDIR", "Not a directory"],
  22: ["EINVAL", "Invalid argument"],
  23: ["ENFILE", "Too many open files in system"],
  24: ["EMFILE", "Too many open files"],
  28: ["ENOSPC", "No space left on device"],
  34: ["ERANGE", "Numerical result out of range"],
  36: ["ENAMETOOLONG", "File name too long"],
  39: ["ENOTEMPTY", "Directory not empty"],
  40: ["ELOOP", "Too many levels of symbolic links"],
  71: ["EPROTO", "Protocol error"],
  74: ["EBADMSG", "Bad message"],
  88: ["ENOTSOCK", "Socket operation on non-socket"],
  90: ["EMSGSIZE", "Message too long"],
  93: ["EPROTONOSUPPORT", "Protocol not supported"],
  95: ["EOPNOTSUPP", "Operation not supported"],
  97: ["EAFNOSUPPORT", "Address family not supported by protocol"],
  98: ["EADDRINUSE", "Address already in use"],
  99: ["EADDRNOTAVAIL", "Cannot assign requested address"],
  100: ["ENETDOWN", "Network is down"],
  101: ["ENETUNREACH", "Network is unreachable"],
  105: ["ENOBUFS", "No buffer space available"],
  110: ["ETIMEDOUT", "Connection timed out"],
  113: ["EHOSTUNREACH", "No route to host"],
  114: ["EALREADY", "Operation already in progress"],
};

export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EBADF = 9;
export const EAGAIN = 11;
export const EEXIST = 17;
export const ENODEV = 19;

/** The errno's name, e.g. `EEXIST`, or `errno N` for one outside the table. */
export function errnoName(errno: number): string {
  return ERRNOS[errno]?.[0] ?? `errno ${errno}`;
}

/** What the operation was and on what, used to word an error: `{ op: "add route", object: "10.0.0.0/27 table 119" }`. */
export interface ErrorContext {
  op: string;
  object: string;
}

/**
 * A failed netlink request or libc call, e.g.
 * `netlink: failed to add route 10.0.0.0/27 table 119: EEXIST (File exists)`.
 * `extack` is the kernel's extended-ACK message, when it sent one.
 */
export class NetlinkError extends Error {
  readonly op: string;
  readonly object: string;
  readonly errno: number;
  /** The errno's name: EEXIST, ENOENT, ESRCH, ENODEV, EBUSY… */
  readonly code: string;
  readonly extack?: string;

  constructor(context: ErrorContext, errno: number, extack?: string, options?: ErrorOptions) {
    const text = ERRNOS[errno]?.[1] ?? "Unknown error";
    const detail = extack ? `: ${extack}` : "";
    super(
      `netlink: failed to ${context.op} ${context.object}: ${errnoName(errno)} (${text})${detail}`,
      options,
    );
    this.name = "NetlinkError";
    this.op = context.op;
    this.object = context.object;
    this.errno = errno;
    this.code = errnoName(errno);
    if (extack) this.extack = extack;
  }
}

/** Whether the object already exists (EEXIST), e.g. a duplicate route add. */
export function isExists(err: unknown): err is NetlinkError {
  return err instanceof NetlinkError && err.errno === EEXIST;
}

/**
 * Whether the object is missing: ENOENT (netns path, address), ESRCH (route, rule) or ENODEV (link).
 * DEL uses this to treat "already gone" as success.
 */
export function isNotFound(err: unknown): err is NetlinkError {
  return err instanceof NetlinkError && (err.errno === ENOENT || err.errno === ESRCH || err.errno === ENODEV);
}

/** Whether a dump saw the table change under it (NLM_F_DUMP_INTR): its result is unreliable, retry. */
export function isDumpInterrupted(err: unknown): err is NetlinkError {
  return err instanceof NetlinkError && err.errno === EINTR;
}
