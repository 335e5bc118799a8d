// The one error type of the CNI layer and its codes: the spec's well-known codes (SPEC.md, "Error") and
// Coil's own codes from 100 up, which coild sends and the CNI client passes through to the runtime.

/** The netconf's `cniVersion` is not supported, or the verb needs a newer one. */
export const ERR_INCOMPATIBLE_VERSION = 1;
/** A netconf key that Coil does not support; the message names the key and its value. */
export const ERR_UNSUPPORTED_FIELD = 2;
/** The container is unknown or does not exist: the runtime need not clean up. */
export const ERR_UNKNOWN_CONTAINER = 3;
/** CNI_* environment variables missing or invalid; the message names every one of them. */
export const ERR_INVALID_ENV = 4;
/** Reading or writing failed (stdin, stdout, coild's socket). */
export const ERR_IO = 5;
/** stdin is not JSON. */
export const ERR_DECODE = 6;
/** The netconf is JSON but not a valid configuration for Coil. */
export const ERR_INVALID_CONFIG = 7;
/** Transient: coild is unreachable or etcd is down. The runtime retries, and must retry DEL. */
export const ERR_TRY_AGAIN_LATER = 11;
/** STATUS: Coil cannot serve ADD now (coild unreachable or not ready, no address obtainable). */
export const ERR_NOT_AVAILABLE = 50;
/** STATUS: Coil cannot serve ADD, and pods already running may have limited connectivity. */
export const ERR_LIMITED_CONNECTIVITY = 51;
/** Coil's own code: no pool serves the pod's namespace and there is no `default` pool. */
export const ERR_NO_POOL = 100;
/** Coil's own code: the pool has no free address and no block left to claim. */
export const ERR_POOL_EXHAUSTED = 101;
/** Coil's own code: CHECK found the pod's interface, address or a route missing or different. */
export const ERR_CHECK_FAILED = 102;
/** Anything unexpected (a bug, or a reply from coild that is not the protocol). */
export const ERR_INTERNAL = 999;

/** A CNI error: printed to stdout as `{cniVersion, code, msg, details}` with a non-zero exit. */
export class CniError extends Error {
  readonly code: number;
  readonly msg: string;
  readonly details?: string;
  constructor(code: number, msg: string, details?: string, options?: ErrorOptions) {
    super(details === undefined ? msg : `${msg} (${details})`, options);
    this.name = "CniError";
    this.code = code;
    this.msg = msg;
    this.details = details;
  }
}
