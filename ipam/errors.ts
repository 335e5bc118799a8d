// The one error type of the IPAM layer: a `kind` that callers branch on (the daemon maps it to a CNI
// code) and a message in std's style: capital first, object named, cause after a colon.

/** What went wrong, for programs: `unavailable` means etcd could not be reached (try again later). */
export type IpamErrorKind =
  | "invalid" // a pool definition, address or request is malformed
  | "not-found" // the pool, block or address does not exist
  | "no-pool" // no pool serves the pod's namespace and there is no `default` pool
  | "exhausted" // the pool has no free address and no free block
  | "conflict" // the change clashes with the current state (overlap, in use, lost ownership)
  | "unavailable" // etcd cannot be reached or did not answer in time
  | "no-space"; // etcd refused the write for lack of space (NOSPACE alarm); nothing was written

export class IpamError extends Error {
  readonly kind: IpamErrorKind;
  constructor(kind: IpamErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "IpamError";
    this.kind = kind;
  }
}

/** Whether `err` is an IpamError of the given kind. */
export function isIpamError(err: unknown, kind?: IpamErrorKind): err is IpamError {
  return err instanceof IpamError && (kind === undefined || err.kind === kind);
}
