// Links (`ip link`): veth pairs with the peer created directly in another namespace, up, MTU, alias,
// lookup and delete.

import {
  CREATE_EXCL,
  IFF_UP,
  IFLA_ADDRESS,
  IFLA_EXT_MASK,
  IFLA_IFALIAS,
  IFLA_IFNAME,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_MTU,
  IFLA_NET_NS_FD,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  RTEXT_FILTER_SKIP_STATS,
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWLINK,
  VETH_INFO_PEER,
} from "./constants.ts";
import { ENODEV, isNotFound, NetlinkError } from "./errors.ts";
import { IFINFOMSG, ifInfoMsg } from "./headers.ts";
import {
  type AttrSchema,
  attrString,
  attrU32,
  endMessage,
  type Message,
  type MessageWriter,
  nestEnd,
  nestStart,
  newMessage,
  putAttr,
  putString,
  putStruct,
  putU32,
  readAttrs,
  readStruct,
  structSize,
} from "./message.ts";
import type { OffThreadNetlinkSocket } from "./offthread_socket.ts";
import type { NetlinkSocket } from "./socket.ts";

/** A network interface as `ip link` shows it. */
export interface Link {
  index: number;
  name: string;
  mtu: number;
  /** Hardware address, `aa:bb:cc:dd:ee:ff`; empty for links without one. */
  mac: string;
  up: boolean;
  /** Link type from IFLA_INFO_KIND, e.g. `veth`; absent for `lo` and physical devices. */
  kind?: string;
  alias?: string;
}

/** A veth pair to create. */
export interface VethOptions {
  name: string;
  peerName: string;
  /** Create the peer directly in this namespace (fd from openNetns()); default: the socket's own. */
  peerNetnsFd?: number;
  mtu?: number;
  /** Defaults to `mtu`. */
  peerMtu?: number;
}

const IFINFOMSG_SIZE = structSize(IFINFOMSG);
const LINK_SCHEMA: AttrSchema = {
  [IFLA_ADDRESS]: "bytes",
  [IFLA_IFNAME]: "string",
  [IFLA_MTU]: "u32",
  [IFLA_LINKINFO]: "nested",
  [IFLA_IFALIAS]: "string",
};
const LINKINFO_SCHEMA: AttrSchema = { [IFLA_INFO_KIND]: "string" };

/**
 * Creates a veth pair: `ip link add <name> [mtu M] type veth peer name <peerName> [mtu M] netns <fd>`.
 * The peer is created inside `peerNetnsFd` at once: moving it there afterwards costs ≈17 ms, serialised
 * in the kernel. Not idempotent.
 * @returns the new host-side link.
 * @throws {NetlinkError} EEXIST when either name is taken in its namespace.
 */
export function linkAddVeth(sock: NetlinkSocket, options: VethOptions): Link {
  const { name, peerName, peerNetnsFd, mtu } = options;
  const peerMtu = options.peerMtu ?? mtu;
  const w = newMessage(RTM_NEWLINK, NLM_F_REQUEST | CREATE_EXCL);
  putStruct(w, IFINFOMSG, ifInfoMsg());
  putString(w, IFLA_IFNAME, name);
  if (mtu !== undefined) putU32(w, IFLA_MTU, mtu);
  const info = nestStart(w, IFLA_LINKINFO);
  putString(w, IFLA_INFO_KIND, "veth");
  const data = nestStart(w, IFLA_INFO_DATA);
  // VETH_INFO_PEER holds a whole ifinfomsg plus link attributes for the peer (drivers/net/veth.c).
  const peer = nestStart(w, VETH_INFO_PEER);
  putStruct(w, IFINFOMSG, ifInfoMsg());
  putString(w, IFLA_IFNAME, peerName);
  if (peerMtu !== undefined) putU32(w, IFLA_MTU, peerMtu);
  if (peerNetnsFd !== undefined) putU32(w, IFLA_NET_NS_FD, peerNetnsFd);
  nestEnd(w, peer);
  nestEnd(w, data);
  nestEnd(w, info);
  sock.request(endMessage(w), { op: "add veth", object: `${name} peer ${peerName}` });
  const link = linkByName(sock, name);
  if (link === undefined) throw new NetlinkError({ op: "read back veth", object: name }, ENODEV);
  return link;
}

/**
 * Deletes a link by name or index: `ip link del <name>`; a veth takes its peer with it.
 * @throws {NetlinkError} ENODEV when there is no such link (isNotFound()).
 */
export function linkDel(sock: NetlinkSocket, nameOrIndex: string | number): void {
  const w = linkMessage(RTM_DELLINK, 0, nameOrIndex);
  sock.request(endMessage(w), { op: "delete", object: describe(nameOrIndex) });
}

/**
 * linkDel() run in the kernel on a pool thread (see offthread_socket.ts): for deleting veths, which
 * takes the kernel ~25 ms each, without blocking the event loop.
 * @throws {NetlinkError} ENODEV when there is no such link (isNotFound()).
 */
export function linkDelOffThread(sock: OffThreadNetlinkSocket, nameOrIndex: string | number): Promise<void> {
  const w = linkMessage(RTM_DELLINK, 0, nameOrIndex);
  return sock.request(endMessage(w), { op: "delete", object: describe(nameOrIndex) });
}

/**
 * Takes a link down: `ip link set <dev> down`. The kernel removes every route through it, in every
 * table and both families (fib_disable_ip(), rt6_disable_ip()), and a veth's peer loses its carrier.
 * Idempotent. @throws {NetlinkError} ENODEV.
 */
export function linkSetDown(sock: NetlinkSocket, index: number): void {
  const w = newMessage(RTM_NEWLINK, NLM_F_REQUEST);
  putStruct(w, IFINFOMSG, ifInfoMsg({ index, flags: 0, change: IFF_UP }));
  sock.request(endMessage(w), { op: "set down", object: describe(index) });
}

/** Brings a link up: `ip link set <dev> up`. Idempotent. @throws {NetlinkError} ENODEV. */
export function linkSetUp(sock: NetlinkSocket, index: number): void {
  const w = newMessage(RTM_NEWLINK, NLM_F_REQUEST);
  putStruct(w, IFINFOMSG, ifInfoMsg({ index, flags: IFF_UP, change: IFF_UP }));
  sock.request(endMessage(w), { op: "set up", object: describe(index) });
}

/** Sets the MTU: `ip link set <dev> mtu <mtu>`. Idempotent. @throws {NetlinkError} ENODEV, EINVAL. */
export function linkSetMtu(sock: NetlinkSocket, index: number, mtu: number): void {
  const w = linkMessage(RTM_NEWLINK, 0, index);
  putU32(w, IFLA_MTU, mtu);
  sock.request(endMessage(w), { op: `set mtu ${mtu} on`, object: describe(index) });
}

/**
 * Sets the alias (ifalias, up to 255 bytes): `ip link set <dev> alias <alias>`; `""` clears it.
 * Idempotent. @throws {NetlinkError} ENODEV, EINVAL.
 */
export function linkSetAlias(sock: NetlinkSocket, index: number, alias: string): void {
  const w = linkMessage(RTM_NEWLINK, 0, index);
  // Without a NUL, as iproute2 sends it: a zero-length IFLA_IFALIAS is what clears the alias.
  putAttr(w, IFLA_IFALIAS, new TextEncoder().encode(alias));
  sock.request(endMessage(w), { op: "set alias on", object: describe(index) });
}

/** Looks a link up by name: `ip link show <name>`; undefined when there is none. */
export function linkByName(sock: NetlinkSocket, name: string): Link | undefined {
  return linkGet(sock, name);
}

/** Looks a link up by index: `ip link show` for one ifindex; undefined when there is none. */
export function linkByIndex(sock: NetlinkSocket, index: number): Link | undefined {
  return linkGet(sock, index);
}

/** Lists every link in the socket's namespace: `ip link show`. */
export function linkList(sock: NetlinkSocket): Link[] {
  const w = newMessage(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
  putStruct(w, IFINFOMSG, ifInfoMsg());
  putU32(w, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  return sock.dump(endMessage(w), { op: "list", object: "links" }, parseLink);
}

function linkGet(sock: NetlinkSocket, nameOrIndex: string | number): Link | undefined {
  const w = linkMessage(RTM_GETLINK, 0, nameOrIndex);
  putU32(w, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  try {
    return sock.request(endMessage(w), { op: "get", object: describe(nameOrIndex) }, parseLink)[0];
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

// A link message addressed by index, or by IFLA_IFNAME with index 0.
function linkMessage(type: number, flags: number, nameOrIndex: string | number): MessageWriter {
  const w = newMessage(type, NLM_F_REQUEST | flags);
  putStruct(w, IFINFOMSG, ifInfoMsg({ index: typeof nameOrIndex === "number" ? nameOrIndex : 0 }));
  if (typeof nameOrIndex === "string") putString(w, IFLA_IFNAME, nameOrIndex);
  return w;
}

function describe(nameOrIndex: string | number): string {
  return typeof nameOrIndex === "number" ? `link index ${nameOrIndex}` : `link ${nameOrIndex}`;
}

/** Decodes an RTM_NEWLINK message. @throws {RangeError} when it is malformed. */
export function parseLink(message: Message): Link | undefined {
  if (message.type !== RTM_NEWLINK) return undefined;
  const header = readStruct(message.payload, IFINFOMSG);
  const attrs = readAttrs(message.payload, LINK_SCHEMA, IFINFOMSG_SIZE);
  const mac = Array.from(attrs.get(IFLA_ADDRESS) ?? [], (b) => b.toString(16).padStart(2, "0")).join(":");
  const link: Link = {
    index: header.index,
    name: attrString(attrs, IFLA_IFNAME) ?? "",
    mtu: attrU32(attrs, IFLA_MTU) ?? 0,
    mac,
    up: (header.flags & IFF_UP) !== 0,
  };
  const linkInfo = attrs.get(IFLA_LINKINFO);
  const kind = linkInfo && attrString(readAttrs(linkInfo, LINKINFO_SCHEMA), IFLA_INFO_KIND);
  if (kind) link.kind = kind;
  const alias = attrString(attrs, IFLA_IFALIAS);
  if (alias) link.alias = alias;
  return link;
}
