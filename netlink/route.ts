// Routes (`ip route`): add, replace, delete, dump by table/protocol/device, and batches of changes
// for syncing a whole table (the exporter's table 119) in a few system calls.

import { type Family, formatIp, formatPrefix, parseIp, parsePrefix } from "./ip_text.ts";
import {
  NLM_F_DUMP,
  NLM_F_REQUEST,
  RT_TABLE_MAIN,
  RT_TABLE_UNSPEC,
  RTA_DST,
  RTA_OIF,
  RTA_TABLE,
  RTM_GETROUTE,
} from "./constants.ts";
import { ENOENT, type ErrorContext, NetlinkError } from "./errors.ts";
import { RTMSG } from "./headers.ts";
import { endMessage, type Message, newMessage, putAttr, putStruct, putU32 } from "./message.ts";
import {
  addressFamily,
  type RouteType,
  routeTypeName,
  routeTypeNumber,
  type Scope,
  scopeName,
  scopeNumber,
} from "./names.ts";
import { decodeRoute, encodeRoute, type RouteBytes, type RouteOp } from "./route_wire.ts";

export type { RouteBytes, RouteOp } from "./route_wire.ts";
import type { NetlinkSocket } from "./socket.ts";

/** A route. Dumps fill in table, protocol, scope and type. */
export interface Route {
  /** Destination network, strict CIDR (host bits zero), e.g. `10.0.0.0/27`. */
  dst: string;
  gateway?: string;
  /** Output interface index. */
  oif?: number;
  /** Default: main (254). Any u32 works; tables above 255 travel in RTA_TABLE only. */
  table?: number;
  /** Default on add: RTPROT_BOOT (3), as `ip route add`. On delete: any, unless given. */
  protocol?: number;
  /** Default on add: universe (`ip` would pick link for a route without gateway). On delete: any. */
  scope?: Scope;
  /** Default on add: unicast. On delete: any. */
  type?: RouteType;
  /** Metric (`metric`/`priority`). */
  priority?: number;
}

/** One change of a batch. */
export interface RouteChange {
  op: RouteOp;
  route: Route;
}

/** One change of a batch of routes in byte form. */
export interface RouteBytesChange {
  op: RouteOp;
  route: RouteBytes;
}

/** What routeDump() returns; every field given narrows the result. */
export interface RouteFilter {
  family?: Family;
  table?: number;
  protocol?: number;
  oif?: number;
}

const VERBS: Readonly<Record<RouteOp, string>> = {
  add: "add route",
  replace: "replace route",
  del: "delete route",
};

/**
 * Adds a route: `ip route add <dst> [via G] [dev D] [table T] [proto P] [scope S] [metric M]`.
 * Not idempotent. @throws {TypeError} for malformed addresses (nothing is sent);
 * {NetlinkError} EEXIST (isExists()) when it exists, ENETDOWN when the device is down.
 */
export function routeAdd(sock: NetlinkSocket, route: Route): void {
  sock.request(routeMessage("add", route), context("add", route));
}

/** Adds or replaces the route for the same dst/table/metric: `ip route replace …`. Idempotent. */
export function routeReplace(sock: NetlinkSocket, route: Route): void {
  sock.request(routeMessage("replace", route), context("replace", route));
}

/**
 * Deletes a route: `ip route del <dst> table T …`. Fields left out match any value (scope NOWHERE);
 * given ones must match, so `protocol` keeps other programs' routes safe.
 * @throws {NetlinkError} ESRCH (isNotFound()) when no route matches.
 */
export function routeDel(sock: NetlinkSocket, route: Route): void {
  sock.request(routeMessage("del", route), context("del", route));
}

/**
 * Lists routes: `ip route show table T proto P dev D` (both families unless `family` is given).
 * The kernel filters by table, protocol and device itself (strict dump checking), so a dump of
 * table 119 never walks the main table; the filter is applied again here. Without `table`, every
 * table is listed, including local. @throws {NetlinkError} (ENODEV for a missing `oif`, EINTR when
 * interrupted: retry).
 */
export function routeDump(sock: NetlinkSocket, filter: RouteFilter = {}): Route[] {
  return routeDumpBytes(sock, filter).map(routeText);
}

/** routeDump() with addresses as bytes: no text per route, for tables of thousands of routes. */
export function routeDumpBytes(sock: NetlinkSocket, filter: RouteFilter = {}): RouteBytes[] {
  const families: Family[] = filter.family === undefined ? [4, 6] : [filter.family];
  return families.flatMap((family) => {
    const w = newMessage(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP);
    const table = filter.table;
    putStruct(w, RTMSG, {
      family: addressFamily(family),
      table: table !== undefined && table < 256 ? table : RT_TABLE_UNSPEC,
      protocol: filter.protocol ?? 0,
    });
    if (table !== undefined) putU32(w, RTA_TABLE, table);
    if (filter.oif !== undefined) putU32(w, RTA_OIF, filter.oif);
    const object = `IPv${family} routes${table === undefined ? "" : ` in table ${table}`}`;
    try {
      return sock.dump(endMessage(w), { op: "dump", object }, (message) => {
        const route = decodeRoute(message);
        if (route === undefined) return undefined;
        if (table !== undefined && route.table !== table) return undefined;
        if (filter.protocol !== undefined && route.protocol !== filter.protocol) return undefined;
        if (filter.oif !== undefined && route.oif !== filter.oif) return undefined;
        return route;
      });
    } catch (err) {
      // A table that never held a route does not exist yet: the kernel answers ENOENT
      // ("FIB table does not exist", inet_dump_fib()/inet6_dump_fib()), which here means "empty".
      if (table !== undefined && err instanceof NetlinkError && err.errno === ENOENT) return [];
      throw err;
    }
  });
}

/** What routeGet() asks the kernel. */
export interface RouteGetOptions {
  /**
   * Return the routing table entry that matched (`ip route get fibmatch`: its prefix, gateway and
   * device) instead of the resolved route to the one address.
   */
  fibMatch?: boolean;
}

const RTM_F_FIB_MATCH = 0x2000;
const ENETUNREACH = 101;
const EHOSTUNREACH = 113;

/**
 * Looks up the route the kernel would use to reach `dst` (an address): `ip route get [fibmatch] <dst>`.
 * One lookup through the routing rules, however many routes the tables hold.
 * @returns the route, or undefined when `dst` is unreachable.
 * @throws {TypeError} for a malformed address; {NetlinkError} when the kernel refuses the request.
 */
export function routeGet(sock: NetlinkSocket, dst: string, options: RouteGetOptions = {}): Route | undefined {
  const ip = parseIp(dst);
  const w = newMessage(RTM_GETROUTE, NLM_F_REQUEST);
  // Strict checking (NETLINK_GET_STRICT_CHK) wants every header field but these zero.
  putStruct(w, RTMSG, {
    family: addressFamily(ip.family),
    dstLen: ip.family === 4 ? 32 : 128,
    flags: options.fibMatch ? RTM_F_FIB_MATCH : 0,
  });
  putAttr(w, RTA_DST, ip.bytes);
  try {
    const parse = (m: Message) => {
      const route = decodeRoute(m);
      return route && routeText(route);
    };
    return sock.request(endMessage(w), { op: "get route to", object: dst }, parse)[0];
  } catch (err) {
    if (err instanceof NetlinkError && (err.errno === ENETUNREACH || err.errno === EHOSTUNREACH)) {
      return undefined;
    }
    throw err;
  }
}

/**
 * Applies many changes in a few sendto() calls, in order. Every message is encoded (and validated)
 * before any is sent. Returns, per change, undefined or its NetlinkError (e.g. EEXIST for an add of
 * an existing route): one failure does not stop the others.
 * @throws {TypeError} for a malformed route (nothing is sent); {NetlinkError} when the batch itself
 * could not be sent or its replies were lost (ENOBUFS).
 */
export function routeBatch(
  sock: NetlinkSocket,
  changes: readonly RouteChange[],
): (NetlinkError | undefined)[] {
  const messages = changes.map(({ op, route }) => encodeRoute(op, routeBytes(route)));
  return sock.batch(messages, (i) => context(changes[i].op, changes[i].route));
}

/** routeBatch() of routes in byte form; the text of a route is made only for an error. */
export function routeBatchBytes(
  sock: NetlinkSocket,
  changes: readonly RouteBytesChange[],
): (NetlinkError | undefined)[] {
  const messages = changes.map(({ op, route }) => encodeRoute(op, route));
  return sock.batch(messages, (i) => context(changes[i].op, routeText(changes[i].route)));
}

function context(op: RouteOp, route: Route): ErrorContext {
  return { op: VERBS[op], object: `${route.dst} table ${route.table ?? RT_TABLE_MAIN}` };
}

function routeMessage(op: RouteOp, route: Route): Uint8Array {
  return encodeRoute(op, routeBytes(route));
}

/** A route's byte form. @throws {TypeError} for malformed addresses, names or families. */
export function routeBytes(route: Route): RouteBytes {
  const dst = parsePrefix(route.dst);
  const gateway = route.gateway === undefined ? undefined : parseIp(route.gateway);
  if (gateway && gateway.family !== dst.family) {
    throw new TypeError(`Invalid route ${route.dst}: gateway ${route.gateway} is of another family`);
  }
  const bytes: RouteBytes = {
    family: dst.family,
    dst: dst.bytes,
    dstLen: dst.length,
  };
  if (gateway) bytes.gateway = gateway.bytes;
  if (route.oif !== undefined) bytes.oif = route.oif;
  if (route.table !== undefined) bytes.table = route.table;
  if (route.protocol !== undefined) bytes.protocol = route.protocol;
  if (route.scope !== undefined) bytes.scope = scopeNumber(route.scope);
  if (route.type !== undefined) bytes.type = routeTypeNumber(route.type);
  if (route.priority !== undefined) bytes.priority = route.priority;
  return bytes;
}

/** A route's text form, as `ip route` shows it. */
export function routeText(bytes: RouteBytes): Route {
  const route: Route = {
    dst: formatPrefix(bytes.dst, bytes.dstLen),
  };
  if (bytes.table !== undefined) route.table = bytes.table;
  if (bytes.protocol !== undefined) route.protocol = bytes.protocol;
  if (bytes.scope !== undefined) route.scope = scopeName(bytes.scope);
  if (bytes.type !== undefined) route.type = routeTypeName(bytes.type);
  if (bytes.gateway) route.gateway = formatIp(bytes.gateway);
  if (bytes.oif !== undefined) route.oif = bytes.oif;
  if (bytes.priority !== undefined) route.priority = bytes.priority;
  return route;
}
