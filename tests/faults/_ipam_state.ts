// What etcd says about one node's addresses and blocks, and the campaigns' verdict on it: every pod the
// runtime believes alive holds its address alone, and nothing else holds an address or an empty block.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { formatCidr, parseCidr } from "../../ipam/cidr.ts";
import { keysFor } from "../../ipam/keys.ts";
import type { TestNetns } from "../helpers/netns.ts";

/** One address key: `<prefix>addresses/<block id>/<ip>`. */
export interface AddressEntry {
  ip: string;
  /** Block id, e.g. `10.64.0.8_29`. */
  block: string;
  containerId: string;
  ifName: string;
  network: string;
  node: string;
}

/** One block key: `<prefix>blocks/<pool>/<block id>`. */
export interface BlockEntry {
  pool: string;
  block: string;
  node: string;
}

export interface IpamState {
  addresses: AddressEntry[];
  blocks: BlockEntry[];
}

/** Reads every address and block key under `prefix`. */
export async function readIpamState(client: Etcd3, prefix: string): Promise<IpamState> {
  const keys = keysFor(prefix);
  const [addressKvs, blockKvs] = await Promise.all([
    client.getAll().prefix(keys.addresses()).strings(),
    client.getAll().prefix(keys.blocks()).strings(),
  ]);
  const addresses = Object.entries(addressKvs).map(([key, value]) => {
    const [block, ip] = key.slice(keys.addresses().length).split("/");
    const record = JSON.parse(value);
    return {
      ip,
      block,
      containerId: String(record.containerId),
      ifName: String(record.ifName),
      network: String(record.network),
      node: String(record.node),
    };
  });
  const blocks = Object.entries(blockKvs).map(([key, value]) => {
    const [pool, block] = key.slice(keys.blocks().length).split("/");
    return { pool, block, node: String(JSON.parse(value).node) };
  });
  return { addresses, blocks };
}

/** An attachment the runtime believes alive, with the address its ADD returned. */
export interface Holder {
  containerId: string;
  ifName: string;
  ip: string;
}

/** The four ways etcd and the runtime can disagree; all empty means consistent. */
export interface Disagreements {
  /** An address given to two live attachments, or held in etcd by another one than the runtime's. */
  duplicates: string[];
  /** A live attachment whose address etcd does not hold for it. */
  lost: string[];
  /** An address key of no live attachment. */
  leaked: string[];
  /** An address key in a block no node owns. */
  orphans: string[];
}

/** The holders of the runtime's live pods, as compare() takes them. */
export function holdersOf(
  live: readonly { pod: { containerId: string; ifName: string }; ip: string }[],
): Holder[] {
  return live.map((l) => ({ containerId: l.pod.containerId, ifName: l.pod.ifName, ip: l.ip }));
}

/** Every disagreement in one list: duplicates, lost, leaked, orphans. */
export function disagreementList(d: Disagreements): string[] {
  return [...d.duplicates, ...d.lost, ...d.leaked, ...d.orphans];
}

/** Asserts that etcd agrees with the runtime; the message says `when` and ends with `context` (a log tail). */
export function assertAgrees(d: Disagreements, when: string, context: string): void {
  const all = disagreementList(d);
  assert.deepEqual(all, [], `etcd and the runtime disagree ${when}:\n${all.join("\n")}\n${context}`);
}

/** Compares etcd with the runtime's live attachments. */
export function compare(state: IpamState, live: Holder[]): Disagreements {
  const out: Disagreements = { duplicates: [], lost: [], leaked: [], orphans: [] };
  const byIp = new Map(state.addresses.map((a) => [a.ip, a]));
  const liveByIp = new Map<string, Holder>();
  for (const h of live) {
    const other = liveByIp.get(h.ip);
    if (other) out.duplicates.push(`${h.ip} given to ${name(other)} and ${name(h)}`);
    liveByIp.set(h.ip, h);
    const stored = byIp.get(h.ip);
    if (!stored) out.lost.push(`${h.ip} of ${name(h)} has no address key`);
    else if (stored.containerId !== h.containerId || stored.ifName !== h.ifName) {
      out.duplicates.push(`${h.ip} of ${name(h)} is held in etcd by ${name(stored)}`);
    }
  }
  for (const a of state.addresses) {
    if (!liveByIp.has(a.ip)) out.leaked.push(`${a.ip} held by ${name(a)}, which is not alive`);
  }
  const owned = new Set(state.blocks.map((b) => b.block));
  for (const a of state.addresses) {
    if (!owned.has(a.block)) out.orphans.push(`${a.ip} is in block ${a.block}, which no node owns`);
  }
  return out;
}

/** The blocks of `node` that hold no address. */
export function emptyBlocks(state: IpamState, node: string): BlockEntry[] {
  const used = new Set(state.addresses.map((a) => a.block));
  return state.blocks.filter((b) => b.node === node && !used.has(b.block));
}

/**
 * The empty blocks beyond what coild may keep: per pool it keeps at most one empty block (its spare,
 * owned_blocks.ts releasable()), so every further one is a leak. Single-family pools only.
 */
export function surplusEmptyBlocks(state: IpamState, node: string): BlockEntry[] {
  const perPool = new Map<string, BlockEntry[]>();
  for (const b of emptyBlocks(state, node)) perPool.set(b.pool, [...(perPool.get(b.pool) ?? []), b]);
  return [...perPool.values()].flatMap((blocks) => blocks.slice(1));
}

function name(a: { containerId: string; ifName: string }): string {
  return `${a.containerId}/${a.ifName}`;
}

/** The prefixes a node exports (table 119, protocol 30), normalised and sorted for comparison. */
export async function exportedPrefixes(node: TestNetns): Promise<string[]> {
  const routes = await node.ipJson<{ dst: string }[]>(["route", "show", "table", "119", "proto", "30"]);
  return routes.map((r) => formatCidr(parseCidr(r.dst))).sort();
}
