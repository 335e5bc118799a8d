// Routes as the kernel carries them (addresses as bytes, kernel numbers for scope and type), encoded
// and decoded in one pass with fixed offsets: the path for syncing thousands of routes, with no
// per-route strings, maps or BigInts.

import {
  AF_INET,
  AF_INET6,
  CREATE_EXCL,
  CREATE_REPLACE,
  NLA_TYPE_MASK,
  NLM_F_REQUEST,
  RT_SCOPE_NOWHERE,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RT_TABLE_UNSPEC,
  RTA_DST,
  RTA_GATEWAY,
  RTA_OIF,
  RTA_PRIORITY,
  RTA_TABLE,
  RTM_DELROUTE,
  RTM_NEWROUTE,
  RTN_UNICAST,
  RTN_UNSPEC,
  RTPROT_BOOT,
  RTPROT_UNSPEC,
} from "./constants.ts";
import type { Family } from "./ip_text.ts";
import type { Message } from "./message.ts";

/** A route with its addresses as bytes. Dumps fill in table, protocol, scope and type. */
export interface RouteBytes {
  family: Family;
  /** Network address, 4 or 16 bytes, host bits zero. */
  dst: Uint8Array;
  dstLen: number;
  gateway?: Uint8Array;
  oif?: number;
  /** Default: main (254). */
  table?: number;
  /** Default on add: RTPROT_BOOT (3). On delete: any. */
  protocol?: number;
  /** RT_SCOPE_*. Default on add: universe. On delete: any (nowhere). */
  scope?: number;
  /** RTN_*. Default on add: unicast. On delete: any. */
  type?: number;
  priority?: number;
}

/** What a change does: `ip route add` (exclusive), `replace`, or `del`. */
export type RouteOp = "add" | "replace" | "del";

const FLAGS: Readonly<Record<RouteOp, number>> = {
  add: NLM_F_REQUEST | CREATE_EXCL,
  replace: NLM_F_REQUEST | CREATE_REPLACE,
  del: NLM_F_REQUEST,
};
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const NLMSG_HDRLEN = 16;
const RTMSG_SIZE = 12;

/** Byte length of an address of `family`. */
export function addressLength(family: Family): 4 | 16 {
  return family === 4 ? 4 : 16;
}

/**
 * Encodes one RTM_NEWROUTE/RTM_DELROUTE request (sequence number left for the socket).
 * @throws {TypeError} for a malformed route: a wrong address length, a prefix length out of range,
 * host bits set, a gateway of the other family.
 */
export function encodeRoute(op: RouteOp, route: RouteBytes): Uint8Array {
  const { family, dst, dstLen, gateway } = route;
  const size = addressLength(family);
  if (dst.length !== size || !Number.isInteger(dstLen) || dstLen < 0 || dstLen > size * 8) {
    throw new TypeError(`Invalid route: a ${dst.length}-byte IPv${family} destination with prefix ${dstLen}`);
  }
  if (!hostBitsZero(dst, dstLen)) throw new TypeError(`Invalid route: destination has host bits set`);
  if (gateway !== undefined && gateway.length !== size) {
    throw new TypeError(`Invalid route: a ${gateway.length}-byte gateway in an IPv${family} route`);
  }
  const table = route.table ?? RT_TABLE_MAIN;
  const length = NLMSG_HDRLEN + RTMSG_SIZE + 4 + size + 8 + (gateway ? 4 + size : 0) +
    (route.oif === undefined ? 0 : 8) + (route.priority === undefined ? 0 : 8);
  const bytes = new Uint8Array(length);
  setU32(bytes, 0, length);
  setU16(bytes, 4, op === "del" ? RTM_DELROUTE : RTM_NEWROUTE);
  setU16(bytes, 6, FLAGS[op]);
  const del = op === "del";
  bytes[16] = family === 4 ? AF_INET : AF_INET6;
  bytes[17] = dstLen;
  // rtm_table is 8 bits: larger tables are only in RTA_TABLE, with rtm_table unspec (as iproute2).
  bytes[20] = table < 256 ? table : RT_TABLE_UNSPEC;
  bytes[21] = route.protocol ?? (del ? RTPROT_UNSPEC : RTPROT_BOOT);
  bytes[22] = route.scope ?? (del ? RT_SCOPE_NOWHERE : RT_SCOPE_UNIVERSE);
  bytes[23] = route.type ?? (del ? RTN_UNSPEC : RTN_UNICAST);
  let at = NLMSG_HDRLEN + RTMSG_SIZE;
  at = putBytes(bytes, at, RTA_DST, dst);
  at = putU32(bytes, at, RTA_TABLE, table);
  if (gateway) at = putBytes(bytes, at, RTA_GATEWAY, gateway);
  if (route.oif !== undefined) at = putU32(bytes, at, RTA_OIF, route.oif);
  if (route.priority !== undefined) putU32(bytes, at, RTA_PRIORITY, route.priority);
  return bytes;
}

function putBytes(bytes: Uint8Array, at: number, type: number, value: Uint8Array): number {
  setU16(bytes, at, 4 + value.length);
  setU16(bytes, at + 2, type);
  bytes.set(value, at + 4);
  return at + 4 + value.length; // 4 and 16 bytes need no padding
}

function putU32(bytes: Uint8Array, at: number, type: number, value: number): number {
  setU16(bytes, at, 8);
  setU16(bytes, at + 2, type);
  setU32(bytes, at + 4, value);
  return at + 8;
}

// Host byte order by hand: a DataView per message costs more than the message (profiled).
function setU16(bytes: Uint8Array, at: number, value: number): void {
  bytes[at + (LITTLE_ENDIAN ? 0 : 1)] = value & 0xff;
  bytes[at + (LITTLE_ENDIAN ? 1 : 0)] = value >>> 8;
}

function setU32(bytes: Uint8Array, at: number, value: number): void {
  for (let i = 0; i < 4; i++) bytes[at + (LITTLE_ENDIAN ? i : 3 - i)] = (value >>> (8 * i)) & 0xff;
}

function getU16(bytes: Uint8Array, at: number): number {
  return LITTLE_ENDIAN ? bytes[at] | bytes[at + 1] << 8 : bytes[at] << 8 | bytes[at + 1];
}

function getU32(bytes: Uint8Array, at: number): number {
  return (LITTLE_ENDIAN
    ? bytes[at] | bytes[at + 1] << 8 | bytes[at + 2] << 16 | bytes[at + 3] << 24
    : bytes[at] << 24 | bytes[at + 1] << 16 | bytes[at + 2] << 8 | bytes[at + 3]) >>> 0;
}

function hostBitsZero(address: Uint8Array, prefix: number): boolean {
  for (let i = prefix >> 3; i < address.length; i++) {
    const kept = i === prefix >> 3 ? (0xff00 >> (prefix & 7)) & 0xff : 0;
    if (address[i] & ~kept) return false;
  }
  return true;
}

/**
 * Decodes an RTM_NEWROUTE message; undefined for other messages or families. Addresses are copied
 * out of the receive buffer. @throws {RangeError} for a malformed message.
 */
export function decodeRoute(message: Message): RouteBytes | undefined {
  if (message.type !== RTM_NEWROUTE) return undefined;
  const p = message.payload;
  if (p.length < RTMSG_SIZE) {
    throw new RangeError(`Malformed netlink message: ${p.length}-byte payload, header needs ${RTMSG_SIZE}`);
  }
  const family: Family | undefined = p[0] === AF_INET ? 4 : p[0] === AF_INET6 ? 6 : undefined;
  if (family === undefined) return undefined;
  const size = addressLength(family);
  const route: RouteBytes = {
    family,
    dst: new Uint8Array(size),
    dstLen: p[1],
    table: p[4],
    protocol: p[5],
    scope: p[6],
    type: p[7],
  };
  for (let at = RTMSG_SIZE; at < p.length;) {
    const remaining = p.length - at;
    if (remaining < 4) throw new RangeError(`Malformed netlink attribute: ${remaining} leftover bytes`);
    const length = getU16(p, at);
    const type = getU16(p, at + 2) & NLA_TYPE_MASK;
    if (length < 4 || length > remaining) {
      throw new RangeError(
        `Malformed netlink attribute ${type}: length ${length} with ${remaining} bytes left`,
      );
    }
    const n = length - 4;
    if (type === RTA_DST || type === RTA_GATEWAY) {
      if (n !== size) {
        throw new RangeError(`Malformed route message: a ${n}-byte address in an IPv${family} route`);
      }
      const value = p.slice(at + 4, at + length);
      if (type === RTA_DST) route.dst = value;
      else route.gateway = value;
    } else if (type === RTA_TABLE || type === RTA_OIF || type === RTA_PRIORITY) {
      if (n !== 4) throw new RangeError(`Malformed netlink attribute ${type}: ${n} bytes, expected 4`);
      const value = getU32(p, at + 4);
      if (type === RTA_TABLE) route.table = value;
      else if (type === RTA_OIF) route.oif = value;
      else route.priority = value;
    }
    at += (length + 3) & ~3;
  }
  return route;
}
