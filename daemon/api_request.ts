// Validates a request read from coild's socket into a typed ApiRequest, once, on entry: the socket is
// root-only, but a client of another version must get a clear error, not a crash in a handler.

import type { ApiRequest, Attachment, Mode } from "../cni/api.ts";

/** A request that cannot be understood; answered with CNI code 7 (invalid configuration). */
export class BadRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BadRequestError";
  }
}

type Json = Record<string, unknown>;

function str(raw: Json, field: string, options: { allowEmpty?: boolean } = {}): string {
  const value = raw[field];
  if (typeof value !== "string" || (!options.allowEmpty && value === "")) {
    throw new BadRequestError(
      `Bad request: "${field}" must be a ${options.allowEmpty ? "" : "non-empty "}string`,
    );
  }
  return value;
}

function uint(raw: Json, field: string): number {
  const value = raw[field] ?? 0;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new BadRequestError(`Bad request: "${field}" must be an unsigned 32-bit integer`);
  }
  return value;
}

function mode(raw: Json): Mode {
  const value = raw.mode;
  if (value !== "ipam" && value !== "main") {
    throw new BadRequestError(`Bad request: "mode" must be "ipam" or "main", not ${JSON.stringify(value)}`);
  }
  return value;
}

function attachment(raw: Json): Attachment {
  return {
    network: str(raw, "network"),
    containerId: str(raw, "containerId"),
    ifName: str(raw, "ifName"),
    netns: str(raw, "netns", { allowEmpty: true }),
    podNamespace: str(raw, "podNamespace", { allowEmpty: true }),
    podName: str(raw, "podName", { allowEmpty: true }),
    podUid: str(raw, "podUid", { allowEmpty: true }),
  };
}

/**
 * Parses one request line. Copies only known fields.
 * @throws {BadRequestError} naming the field at fault.
 */
export function parseApiRequest(text: string): ApiRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new BadRequestError(`Bad request: not JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new BadRequestError("Bad request: not a JSON object");
  }
  const r = raw as Json;
  switch (r.verb) {
    case "add":
      return {
        verb: "add",
        mode: mode(r),
        ...attachment(r),
        mtu: uint(r, "mtu"),
        hostRouteTable: uint(r, "hostRouteTable"),
      };
    case "del":
      return { verb: "del", mode: mode(r), ...attachment(r), hostRouteTable: uint(r, "hostRouteTable") };
    case "check": {
      const prevIps = r.prevIps;
      if (!Array.isArray(prevIps) || !prevIps.every((ip) => typeof ip === "string")) {
        throw new BadRequestError(`Bad request: "prevIps" must be an array of strings`);
      }
      return {
        verb: "check",
        mode: mode(r),
        ...attachment(r),
        hostRouteTable: uint(r, "hostRouteTable"),
        prevIps,
      };
    }
    case "gc": {
      const list = r.validAttachments;
      if (!Array.isArray(list)) throw new BadRequestError(`Bad request: "validAttachments" must be an array`);
      const validAttachments = list.map((a) => {
        if (typeof a !== "object" || a === null) {
          throw new BadRequestError(`Bad request: "validAttachments" entries must be objects`);
        }
        return { containerId: str(a as Json, "containerId"), ifName: str(a as Json, "ifName") };
      });
      return { verb: "gc", network: str(r, "network"), validAttachments };
    }
    case "status":
      return { verb: "status", network: str(r, "network") };
    default:
      throw new BadRequestError(`Bad request: unknown verb ${JSON.stringify(r.verb)}`);
  }
}
