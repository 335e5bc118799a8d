// Turns any failure inside coild into the CNI error the client prints: IPAM and request errors keep
// their meaning as a CNI code; anything unexpected is 999 with its message.

import type { ApiReply } from "../cni/api.ts";
import {
  ERR_CHECK_FAILED,
  ERR_INTERNAL,
  ERR_INVALID_CONFIG,
  ERR_INVALID_ENV,
  ERR_IO,
  ERR_NO_POOL,
  ERR_NOT_AVAILABLE,
  ERR_POOL_EXHAUSTED,
  ERR_TRY_AGAIN_LATER,
  ERR_UNKNOWN_CONTAINER,
} from "../cni/errors.ts";
import { IpamError } from "../ipam/errors.ts";
import { BadRequestError } from "./api_request.ts";

/** The CNI codes coild answers with, by meaning (cni/errors.ts documents each). */
export const CODE = {
  unknownContainer: ERR_UNKNOWN_CONTAINER,
  invalidEnv: ERR_INVALID_ENV,
  ioFailure: ERR_IO,
  invalidConfig: ERR_INVALID_CONFIG,
  tryAgainLater: ERR_TRY_AGAIN_LATER,
  statusUnavailable: ERR_NOT_AVAILABLE,
  noPool: ERR_NO_POOL,
  poolExhausted: ERR_POOL_EXHAUSTED,
  checkFailed: ERR_CHECK_FAILED,
  internal: ERR_INTERNAL,
} as const;

/** A failure that already knows its CNI code (e.g. CHECK found the pod's route missing). */
export class DaemonError extends Error {
  readonly code: number;
  readonly details?: string;
  constructor(code: number, message: string, details?: string) {
    super(message);
    this.name = "DaemonError";
    this.code = code;
    this.details = details;
  }
}

const IPAM_CODES: Record<IpamError["kind"], number> = {
  "invalid": CODE.invalidConfig,
  "not-found": CODE.unknownContainer,
  "no-pool": CODE.noPool,
  "exhausted": CODE.poolExhausted,
  "conflict": CODE.tryAgainLater,
  "unavailable": CODE.tryAgainLater,
  "no-space": CODE.tryAgainLater,
};

/** The error reply for `err`. */
export function errorReply(err: unknown): ApiReply & { ok: false } {
  if (err instanceof DaemonError) {
    return { ok: false, code: err.code, msg: err.message, details: err.details };
  }
  if (err instanceof IpamError) return { ok: false, code: IPAM_CODES[err.kind], msg: err.message };
  if (err instanceof BadRequestError) return { ok: false, code: CODE.invalidConfig, msg: err.message };
  const msg = err instanceof Error ? err.message : String(err);
  return { ok: false, code: CODE.internal, msg: `coild: ${msg}` };
}
