// Interface addresses (`ip addr`): add, delete and list, IPv4 and IPv6.

import { type Family, formatIp, parseIp } from "./ip_text.ts";
import {
  AF_UNSPEC,
  CREATE_EXCL,
  IFA_ADDRESS,
  IFA_F_NODAD,
  IFA_FLAGS,
  IFA_LOCAL,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  RTM_DELADDR,
  RTM_GETADDR,
  RTM_NEWADDR,
} from "./constants.ts";
import { IFADDRMSG, ifAddrMsg } from "./headers.ts";
import {
  type AttrSchema,
  attrU32,
  endMessage,
  type Message,
  type MessageWriter,
  newMessage,
  putAttr,
  putStruct,
  putU32,
  readAttrs,
  readStruct,
  structSize,
} from "./message.ts";
import { addressFamily, ipFamily, type Scope, scopeName, scopeNumber } from "./names.ts";
import type { NetlinkSocket } from "./socket.ts";

/** An address to add or delete on the link `index`. */
export interface AddrSpec {
  index: number;
  /** The IP address, e.g. `169.254.1.1` or `fe80::1`. */
  address: string;
  prefix: number;
  /** Default `universe` (`global`). */
  scope?: Scope;
  /** Skip duplicate address detection (IFA_F_NODAD), so an IPv6 address is usable at once. */
  nodad?: boolean;
}

/** An address as `ip addr show` lists it. */
export interface Address {
  index: number;
  family: Family;
  address: string;
  prefix: number;
  scope: Scope;
  /** IFA_F_* flags (IFA_F_NODAD, IFA_F_PERMANENT…). */
  flags: number;
}

const IFADDRMSG_SIZE = structSize(IFADDRMSG);
const ADDR_SCHEMA: AttrSchema = { [IFA_ADDRESS]: "ip", [IFA_LOCAL]: "ip", [IFA_FLAGS]: "u32" };

/**
 * Adds an address: `ip addr add <address>/<prefix> dev <index> [scope S] [nodad]`. Not idempotent.
 * @throws {TypeError} for a malformed address; {RangeError} for a prefix outside the family;
 * {NetlinkError} EEXIST when the link has it already, ENODEV when the link is gone.
 */
export function addrAdd(sock: NetlinkSocket, spec: AddrSpec): void {
  const w = addrMessage(RTM_NEWADDR, CREATE_EXCL, spec);
  sock.request(endMessage(w), { op: "add address", object: describe(spec) });
}

/**
 * Deletes an address: `ip addr del <address>/<prefix> dev <index>`.
 * @throws {NetlinkError} EADDRNOTAVAIL when the link does not have it, ENODEV when the link is gone.
 */
export function addrDel(sock: NetlinkSocket, spec: Omit<AddrSpec, "nodad">): void {
  const w = addrMessage(RTM_DELADDR, 0, spec);
  sock.request(endMessage(w), { op: "delete address", object: describe(spec) });
}

/** Lists addresses, optionally of one link and one family: `ip [-4|-6] addr show [dev D]`. */
export function addrList(sock: NetlinkSocket, filter: { index?: number; family?: Family } = {}): Address[] {
  const w = newMessage(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP);
  // With NETLINK_GET_STRICT_CHK the kernel filters by ifa_index; scope and flags must stay 0.
  const family = filter.family === undefined ? AF_UNSPEC : addressFamily(filter.family);
  putStruct(w, IFADDRMSG, { family, index: filter.index ?? 0 });
  const what = {
    op: "list",
    object: filter.index === undefined ? "addresses" : `addresses of link index ${filter.index}`,
  };
  return sock.dump(endMessage(w), what, (message) => {
    const address = parseAddress(message);
    if (address === undefined) return undefined;
    if (filter.index !== undefined && address.index !== filter.index) return undefined;
    if (filter.family !== undefined && address.family !== filter.family) return undefined;
    return address;
  });
}

function addrMessage(type: number, flags: number, spec: AddrSpec): MessageWriter {
  const ip = parseIp(spec.address);
  const bits = ip.family === 4 ? 32 : 128;
  if (!Number.isInteger(spec.prefix) || spec.prefix < 0 || spec.prefix > bits) {
    throw new RangeError(`Invalid prefix length for ${spec.address}: ${spec.prefix}`);
  }
  const w = newMessage(type, NLM_F_REQUEST | flags);
  putStruct(
    w,
    IFADDRMSG,
    ifAddrMsg({
      family: addressFamily(ip.family),
      prefixLen: spec.prefix,
      scope: scopeNumber(spec.scope ?? "universe"),
      index: spec.index,
      flags: spec.nodad ? IFA_F_NODAD : 0,
    }),
  );
  putAttr(w, IFA_LOCAL, ip.bytes);
  putAttr(w, IFA_ADDRESS, ip.bytes);
  // ifa_flags is 8 bits; IFA_FLAGS carries all 32 and is what newer kernels read first.
  if (spec.nodad) putU32(w, IFA_FLAGS, IFA_F_NODAD);
  return w;
}

function describe(spec: AddrSpec): string {
  return `${spec.address}/${spec.prefix} on link index ${spec.index}`;
}

/** Decodes an RTM_NEWADDR message; undefined for other messages or families. @throws {RangeError}. */
export function parseAddress(message: Message): Address | undefined {
  if (message.type !== RTM_NEWADDR) return undefined;
  const header = readStruct(message.payload, IFADDRMSG);
  const family = ipFamily(header.family);
  if (family === undefined) return undefined;
  const attrs = readAttrs(message.payload, ADDR_SCHEMA, IFADDRMSG_SIZE);
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
  const bytes = attrs.get(IFA_LOCAL) ?? attrs.get(IFA_ADDRESS);
  if (bytes === undefined) return undefined;
  if (bytes.length !== (family === 4 ? 4 : 16)) {
    throw new RangeError(`Malformed address message: ${bytes.length} address bytes in family ${family}`);
  }
  return {
    index: header.index,
    family,
    address: formatIp(bytes),
    prefix: header.prefixLen,
    scope: scopeName(header.scope),
    flags: attrU32(attrs, IFA_FLAGS) ?? header.flags,
  };
}
