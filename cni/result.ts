// ADD results between versions: reads a result (coild's reply, or a netconf's prevResult in any version)
// into the version-neutral AddResult, and writes one in the shape of the netconf's cniVersion.

import type { AddResult, InterfaceConfig, IpConfig, Mode, RouteConfig } from "./api.ts";
import { describe, isObject, type JsonObject as Json } from "./_json.ts";
import { CniError } from "./errors.ts";
import { compareVersions } from "./version.ts";

/**
 * Validates a result object of any supported version and copies its known fields; `version` (0.x),
 * `dns`, and the 1.1 route and interface extras are dropped. Missing arrays read as empty.
 * @throws {CniError} with `code`, naming `source` and the first bad field
 */
export function parseResult(raw: unknown, code: number, source: string): AddResult {
  const fail = (problem: string): never => {
    throw new CniError(code, `Invalid ${source}: ${problem}`);
  };
  if (!isObject(raw)) return fail(`expected an object, got ${describe(raw)}`);
  const interfaces = arrayField(raw, "interfaces", fail).map((item, i) => {
    const where = `interfaces[${i}]`;
    if (!isObject(item)) return fail(`${where} is ${describe(item)}: expected an object`);
    const iface: InterfaceConfig = {
      name: stringField(item, "name", where, fail, true) as string,
      mac: stringField(item, "mac", where, fail) ?? "",
    };
    const mtu = item.mtu ?? undefined;
    if (mtu !== undefined) {
      if (!Number.isSafeInteger(mtu) || (mtu as number) < 0) fail(`${where}.mtu is ${describe(mtu)}`);
      iface.mtu = mtu as number;
    }
    const sandbox = stringField(item, "sandbox", where, fail);
    if (sandbox !== undefined) iface.sandbox = sandbox;
    return iface;
  });
  const ips = arrayField(raw, "ips", fail).map((item, i) => {
    const where = `ips[${i}]`;
    if (!isObject(item)) return fail(`${where} is ${describe(item)}: expected an object`);
    const address = stringField(item, "address", where, fail, true) as string;
    if (!/^[0-9A-Fa-f.:]+\/[0-9]{1,3}$/.test(address)) fail(`${where}.address "${address}" is not CIDR`);
    const ip: IpConfig = { address };
    const gateway = stringField(item, "gateway", where, fail);
    if (gateway !== undefined) ip.gateway = gateway;
    const index = item.interface ?? undefined;
    if (index !== undefined) {
      if (!Number.isSafeInteger(index) || (index as number) < 0 || (index as number) >= interfaces.length) {
        fail(`${where}.interface ${describe(index)} is not an index into interfaces`);
      }
      ip.interface = index as number;
    }
    return ip;
  });
  const routes = arrayField(raw, "routes", fail).map((item, i) => {
    const where = `routes[${i}]`;
    if (!isObject(item)) return fail(`${where} is ${describe(item)}: expected an object`);
    const route: RouteConfig = { dst: stringField(item, "dst", where, fail, true) as string };
    const gw = stringField(item, "gw", where, fail);
    if (gw !== undefined) route.gw = gw;
    return route;
  });
  return { interfaces, ips, routes };
}

/**
 * Writes `result` as the result JSON of `cniVersion`: 0.3.x and 0.4.0 carry `ips[].version` ("4" or
 * "6"), 1.0.0 dropped it, and only 1.1.0 has `interfaces[].mtu`. In IPAM mode the result has no
 * `interfaces` and no `ips[].interface` (SPEC.md, "Delegated plugins (IPAM)").
 */
export function formatResult(result: AddResult, cniVersion: string, mode: Mode): Json {
  const before1 = compareVersions(cniVersion, "1.0.0") < 0;
  const withMtu = compareVersions(cniVersion, "1.1.0") >= 0;
  const out: Json = { cniVersion };
  if (mode === "main") {
    out.interfaces = result.interfaces.map((iface) => {
      const item: Json = { name: iface.name };
      if (iface.mac !== "") item.mac = iface.mac;
      if (withMtu && iface.mtu !== undefined) item.mtu = iface.mtu;
      if (iface.sandbox !== undefined) item.sandbox = iface.sandbox;
      return item;
    });
  }
  out.ips = result.ips.map((ip) => {
    const item: Json = {};
    if (before1) item.version = ip.address.includes(":") ? "6" : "4";
    if (mode === "main" && ip.interface !== undefined) item.interface = ip.interface;
    item.address = ip.address;
    if (ip.gateway !== undefined) item.gateway = ip.gateway;
    return item;
  });
  out.routes = result.routes.map((route) => route.gw === undefined ? { dst: route.dst } : { ...route });
  return out;
}

function arrayField(obj: Json, key: string, fail: (problem: string) => never): unknown[] {
  const value = obj[key] ?? [];
  if (!Array.isArray(value)) return fail(`${key} is ${describe(value)}: expected an array`);
  return value;
}

function stringField(
  obj: Json,
  key: string,
  where: string,
  fail: (problem: string) => never,
  required = false,
): string | undefined {
  const value = obj[key] ?? undefined;
  if (value === undefined && !required) return undefined;
  if (typeof value !== "string") return fail(`${where}.${key} is ${describe(value)}: expected a string`);
  return value;
}
