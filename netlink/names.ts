// The API's names for kernel numbers (address family, scope, route type), both ways, so value types
// read like `ip` output while messages carry the kernel's numbers.

import {
  AF_INET,
  AF_INET6,
  RT_SCOPE_HOST,
  RT_SCOPE_LINK,
  RT_SCOPE_NOWHERE,
  RT_SCOPE_SITE,
  RT_SCOPE_UNIVERSE,
  RTN_ANYCAST,
  RTN_BLACKHOLE,
  RTN_BROADCAST,
  RTN_LOCAL,
  RTN_MULTICAST,
  RTN_PROHIBIT,
  RTN_THROW,
  RTN_UNICAST,
  RTN_UNREACHABLE,
} from "./constants.ts";
import type { Family } from "./ip_text.ts";

/** Address scope as `ip` names it; other kernel values stay numbers. */
export type Scope = "universe" | "site" | "link" | "host" | "nowhere" | number;

/** Route type as `ip route` names it; other kernel values stay numbers. */
export type RouteType =
  | "unicast"
  | "local"
  | "broadcast"
  | "anycast"
  | "multicast"
  | "blackhole"
  | "unreachable"
  | "prohibit"
  | "throw"
  | number;

const SCOPES: Readonly<Record<string, number>> = {
  universe: RT_SCOPE_UNIVERSE,
  site: RT_SCOPE_SITE,
  link: RT_SCOPE_LINK,
  host: RT_SCOPE_HOST,
  nowhere: RT_SCOPE_NOWHERE,
};

const ROUTE_TYPES: Readonly<Record<string, number>> = {
  unicast: RTN_UNICAST,
  local: RTN_LOCAL,
  broadcast: RTN_BROADCAST,
  anycast: RTN_ANYCAST,
  multicast: RTN_MULTICAST,
  blackhole: RTN_BLACKHOLE,
  unreachable: RTN_UNREACHABLE,
  prohibit: RTN_PROHIBIT,
  throw: RTN_THROW,
};

function toNumber(table: Readonly<Record<string, number>>, what: string, value: string | number): number {
  if (typeof value === "number") return value;
  const n = Object.hasOwn(table, value) ? table[value] : undefined;
  if (n === undefined) throw new TypeError(`Invalid ${what}: "${value}"`);
  return n;
}

function toName<T>(table: Readonly<Record<string, number>>, value: number): T {
  return (Object.keys(table).find((name) => table[name] === value) ?? value) as T;
}

/** @throws {TypeError} for an unknown name. */
export function scopeNumber(scope: Scope): number {
  return toNumber(SCOPES, "scope", scope);
}

export function scopeName(scope: number): Scope {
  return toName<Scope>(SCOPES, scope);
}

/** @throws {TypeError} for an unknown name. */
export function routeTypeNumber(type: RouteType): number {
  return toNumber(ROUTE_TYPES, "route type", type);
}

export function routeTypeName(type: number): RouteType {
  return toName<RouteType>(ROUTE_TYPES, type);
}

/** AF_INET or AF_INET6. */
export function addressFamily(family: Family): number {
  return family === 4 ? AF_INET : AF_INET6;
}

/** 4, 6, or undefined for a non-IP family. */
export function ipFamily(af: number): Family | undefined {
  return af === AF_INET ? 4 : af === AF_INET6 ? 6 : undefined;
}
