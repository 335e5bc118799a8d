// The network configuration on stdin, parsed and validated once into typed data. Keys of other plugins
// are allowed (in IPAM mode the top level belongs to the main plugin); a known key of the wrong type is not.

import { describe, isObject, type JsonObject } from "./_json.ts";
import { DEFAULT_SOCKET, type Mode } from "./api.ts";
import {
  CniError,
  ERR_DECODE,
  ERR_INCOMPATIBLE_VERSION,
  ERR_INVALID_CONFIG,
  ERR_UNSUPPORTED_FIELD,
} from "./errors.ts";
import { isSupportedVersion, SUPPORTED_VERSIONS } from "./version.ts";

/** The netconf `type` (main mode) or `ipam.type` (IPAM mode) that selects Coil. */
export const PLUGIN_TYPE = "coil";

/** An attachment that GC must keep. */
export interface ValidAttachment {
  containerId: string;
  ifName: string;
}

export interface NetConf {
  cniVersion: string;
  name: string;
  mode: Mode;
  /** coild's socket: `socket` (main mode) or `ipam.socket` (IPAM mode), else DEFAULT_SOCKET. */
  socket: string;
  /** `mtu` (main mode); 0 = the MTU of the host's default-route interface. */
  mtu: number;
  /** `hostRouteTable` (main mode); 0 = coild's default. */
  hostRouteTable: number;
  /**
   * The previous result, checked to be an object only: CHECK parses it (parseResult), while DEL must not
   * fail on a result it does not use (SPEC.md: DEL is best effort).
   */
  prevResult?: JsonObject;
  /** GC: `cni.dev/valid-attachments` and `cni.dev/attachments` merged; undefined when neither is set. */
  validAttachments?: ValidAttachment[];
}

// SPEC.md, "Configuration format": a network name starts with an alphanumeric, then alphanumerics,
// `_`, `.` or `-`.
const NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** sun_path holds 108 bytes including the terminating NUL (unix(7)). */
const SOCKET_PATH_MAX_BYTES = 107;
// libcni sends both spellings since v1.2.3 (containernetworking/cni#1101): the spec's and the older one.
const ATTACHMENT_KEYS = ["cni.dev/valid-attachments", "cni.dev/attachments"];

/**
 * Parses the netconf bytes from stdin.
 * @throws {CniError} 6 when they are not UTF-8 JSON of an object; 1 when `cniVersion` is missing or
 *   not supported; 2 for an `ipam` section in main mode; 7 naming the key (and its value) otherwise
 */
export function parseNetConf(bytes: Uint8Array): NetConf {
  const raw = decode(bytes);
  const cniVersion = parseCniVersion(raw);
  const name = requireString(raw, "name");
  if (!NAME_REGEXP.test(name)) {
    invalid(
      `Invalid netconf key name ${describe(name)}: expected an alphanumeric, then alphanumerics, _ . -`,
    );
  }
  const type = requireString(raw, "type");
  const ipam = optional(raw, "ipam", isObject, "an object");
  const conf: NetConf = {
    cniVersion,
    name,
    mode: "main",
    socket: DEFAULT_SOCKET,
    mtu: 0,
    hostRouteTable: 0,
  };
  if (type === PLUGIN_TYPE) {
    if (ipam !== undefined) {
      throw new CniError(
        ERR_UNSUPPORTED_FIELD,
        `Unsupported netconf key ipam ${describe(ipam)}: type ${PLUGIN_TYPE} allocates addresses itself`,
      );
    }
    conf.socket = parseSocket(raw, "socket");
    conf.mtu = optional(raw, "mtu", isMtu, "an integer from 68 to 65535") ?? 0;
    conf.hostRouteTable = optional(raw, "hostRouteTable", isTable, TABLE_EXPECTED) ?? 0;
  } else if (ipam !== undefined && ipam.type === PLUGIN_TYPE) {
    conf.mode = "ipam";
    conf.socket = parseSocket(ipam, "socket", "ipam.");
  } else {
    invalid(
      `Invalid netconf: type is ${describe(type)} and ipam.type is ${describe(ipam?.type)}: ` +
        `one of them must be ${PLUGIN_TYPE}`,
    );
  }
  const prevResult = optional(raw, "prevResult", isObject, "an object");
  if (prevResult !== undefined) conf.prevResult = prevResult;
  optional(raw, "runtimeConfig", isObject, "an object");
  optional(raw, "cniVersions", isStringArray, "an array of strings");
  for (const key of ATTACHMENT_KEYS) {
    const list = optional(raw, key, Array.isArray, "an array of {containerID, ifname}");
    if (list !== undefined) {
      conf.validAttachments = mergeAttachments(conf.validAttachments ?? [], parseAttachments(key, list));
    }
  }
  return conf;
}

/** `a` plus the attachments of `b` not in it: libcni sends the same list under both keys. */
function mergeAttachments(a: ValidAttachment[], b: ValidAttachment[]): ValidAttachment[] {
  const seen = new Set(a.map((x) => `${x.containerId}/${x.ifName}`));
  return [...a, ...b.filter((x) => !seen.has(`${x.containerId}/${x.ifName}`))];
}

function decode(bytes: Uint8Array): JsonObject {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    if (!(err instanceof SyntaxError || err instanceof TypeError)) throw err;
    throw new CniError(ERR_DECODE, `Cannot decode netconf: ${err.message}`);
  }
  if (!isObject(raw)) {
    throw new CniError(ERR_DECODE, `Cannot decode netconf: ${describe(raw)} is not an object`);
  }
  return raw;
}

function parseCniVersion(raw: JsonObject): string {
  const version = raw.cniVersion ?? undefined;
  const supported = SUPPORTED_VERSIONS.join(", ");
  if (version === undefined) {
    // libcni reads a netconf without cniVersion as 0.1.0, which has no rich result (pkg/version/conf.go).
    throw new CniError(
      ERR_INCOMPATIBLE_VERSION,
      `Netconf has no cniVersion (so 0.1.0): Coil supports ${supported}`,
    );
  }
  if (typeof version !== "string") {
    invalid(`Invalid netconf key cniVersion ${describe(version)}: expected a string`);
  }
  if (!isSupportedVersion(version)) {
    throw new CniError(
      ERR_INCOMPATIBLE_VERSION,
      `Incompatible netconf cniVersion ${describe(version)}: Coil supports ${supported}`,
    );
  }
  return version;
}

function parseSocket(obj: JsonObject, key: string, prefix = ""): string {
  const socket = optional(obj, key, (v) => typeof v === "string", "a string", prefix);
  if (socket === undefined) return DEFAULT_SOCKET;
  if (!socket.startsWith("/")) {
    invalid(`Invalid netconf key ${prefix}${key} ${describe(socket)}: not an absolute path`);
  }
  if (new TextEncoder().encode(socket).length > SOCKET_PATH_MAX_BYTES) {
    invalid(
      `Invalid netconf key ${prefix}${key} ${describe(socket)}: longer than ${SOCKET_PATH_MAX_BYTES} bytes`,
    );
  }
  return socket;
}

function parseAttachments(key: string, list: unknown[]): ValidAttachment[] {
  return list.map((item, i) => {
    const containerId = isObject(item) ? item.containerID : undefined;
    const ifName = isObject(item) ? item.ifname : undefined;
    if (
      typeof containerId !== "string" || containerId === "" || typeof ifName !== "string" || ifName === ""
    ) {
      invalid(`Invalid netconf key ${key}[${i}] ${describe(item)}: expected {"containerID": …, "ifname": …}`);
    }
    return { containerId, ifName };
  });
}

const TABLE_EXPECTED = "an integer from 0 (coild's default) to 4294967295, not 253 (default) or 255 (local)";

function isMtu(value: unknown): value is number {
  // 68: the smallest IPv4 MTU (RFC 791); 65535: the largest the kernel allows on a veth.
  return Number.isInteger(value) && (value as number) >= 68 && (value as number) <= 65535;
}

function isTable(value: unknown): value is number {
  // Table 255 (local) is the kernel's own and is consulted before everything; routes in 253 (default)
  // sit behind the main table's default route and would never be used. 254 (main) is fine.
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 0xffffffff &&
    value !== 253 && value !== 255;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === "string");
}

/** The value of an optional key (null reads as absent, as in Go's decoder), checked by `test`. */
function optional<T>(
  obj: JsonObject,
  key: string,
  test: (value: unknown) => value is T,
  expected: string,
  prefix = "",
): T | undefined {
  const value = obj[key] ?? undefined;
  if (value === undefined) return undefined;
  if (!test(value)) invalid(`Invalid netconf key ${prefix}${key} ${describe(value)}: expected ${expected}`);
  return value;
}

function requireString(obj: JsonObject, key: string): string {
  const value = obj[key] ?? undefined;
  if (value === undefined || value === "") invalid(`Netconf key ${key} is missing`);
  if (typeof value !== "string") invalid(`Invalid netconf key ${key} ${describe(value)}: expected a string`);
  return value;
}

function invalid(msg: string): never {
  throw new CniError(ERR_INVALID_CONFIG, msg);
}
