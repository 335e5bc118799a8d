// A read-only view of Coil's etcd state for the admin commands: pools, claimed blocks with their used
// address counts, live and recently alive nodes, all read at one etcd revision (paged, so big clusters
// fit gRPC limits). Addresses are counted, never read: a 5,000-node cluster holds half a million.

import { Buffer } from "node:buffer";
import type { Etcd3, IKeyValue, IRangeRequest, IRangeResponse } from "etcd3";
import { type Cidr, tryParseCidr } from "../cidr.ts";
import { unavailable } from "../etcd_client.ts";
import { IpamError } from "../errors.ts";
import { keysFor, prefixRangeEnd } from "../keys.ts";
import { leaseRemainingSeconds } from "../node_presence.ts";
import { parsePool, type Pool } from "../pool.ts";
import { parseBlockRecord, parseNodeRecord } from "../records.ts";

const PAGE = 5000;
/** Count-only ranges per txn: below etcd's default --max-txn-ops of 128. */
const COUNTS_PER_TXN = 120;
/** Count txns in flight at once. */
const COUNT_TXNS_IN_FLIGHT = 4;

/** A claimed block and how many of its addresses are allocated. */
export interface ClaimedBlock {
  pool: string;
  block: Cidr;
  node: string;
  claimedAt: string;
  addressesUsed: number;
}

export interface Snapshot {
  /** Sorted by name. */
  pools: Pool[];
  /** Sorted by pool, then address. */
  blocks: ClaimedBlock[];
  /** Nodes whose coild is running (their lease-bound key exists). */
  liveNodes: Set<string>;
  /**
   * Nodes whose coild is not running but was alive within its --node-dead-after (their fence key
   * exists), with the seconds until `coil node remove` accepts them without --force.
   */
  recentNodes: Map<string, number>;
  /** Address records outside every claimed block: left behind by a bug or a manual edit. */
  strayAddresses: number;
}

/**
 * Reads the whole state under `prefix`.
 * @throws {IpamError} "unavailable" when etcd fails; "invalid" for a corrupt value, naming its key.
 */
export async function readSnapshot(client: Etcd3, prefix: string): Promise<Snapshot> {
  const keys = keysFor(prefix);
  const pools = await rangeAll(client, keys.pools());
  const revision = pools.revision;
  const blockKvs = await rangeAll(client, keys.blocks(), { revision });
  const nodeKvs = await rangeAll(client, keys.nodes(), { revision });
  const fenceKvs = await rangeAll(client, keys.nodeFences(), { revision });

  const blocks: ClaimedBlock[] = [];
  // Each block's addresses, under its id as written in its key.
  const addressPrefixes: string[] = [];
  for (const kv of blockKvs.kvs) {
    const key = kv.key.toString();
    const [pool, id] = key.slice(keys.blocks().length).split("/");
    const block = id === undefined ? undefined : tryParseCidr(id.replace(/_(\d+)$/, "/$1"), { strict: true });
    if (!block) {
      throw new IpamError("invalid", `Corrupt block key "${key}": expected blocks/<pool>/<network>_<length>`);
    }
    const record = parseBlockRecord(key, kv.value.toString());
    blocks.push({ pool, block, node: record.node, claimedAt: record.claimedAt, addressesUsed: 0 });
    addressPrefixes.push(`${keys.addresses()}${id}/`);
  }
  const counts = await countRanges(client, revision, [keys.addresses(), ...addressPrefixes]);
  blocks.forEach((b, i) => b.addressesUsed = counts[i + 1]);
  const counted = counts.slice(1).reduce((sum, n) => sum + n, 0);
  blocks.sort((a, b) => a.pool < b.pool ? -1 : a.pool > b.pool ? 1 : compareCidr(a.block, b.block));
  const liveNodes = new Set(
    nodeKvs.kvs.map((kv) => parseNodeRecord(kv.key.toString(), kv.value.toString()).node),
  );
  const recentNodes = new Map<string, number>();
  for (const kv of fenceKvs.kvs) {
    const { node } = parseNodeRecord(kv.key.toString(), kv.value.toString());
    if (!liveNodes.has(node)) recentNodes.set(node, await leaseRemainingSeconds(client, kv.lease));
  }
  return {
    pools: pools.kvs.map((kv) => parseStoredPool(kv.key.toString(), keys.pools(), kv.value.toString())),
    blocks,
    liveNodes,
    recentNodes,
    strayAddresses: counts[0] - counted,
  };
}

/** IPv4 before IPv6, then by address, then shorter prefixes first. */
export function compareCidr(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  if (a.base !== b.base) return a.base < b.base ? -1 : 1;
  return a.prefix - b.prefix;
}

function parseStoredPool(key: string, poolsPrefix: string, value: string): Pool {
  try {
    return parsePool(key.slice(poolsPrefix.length), value);
  } catch (err) {
    throw new IpamError("invalid", `Corrupt pool at "${key}": ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The number of keys under each prefix at `revision`, by count-only ranges batched into txns (etcd
 * counts in its index and sends no keys).
 */
async function countRanges(client: Etcd3, revision: string, prefixes: string[]): Promise<number[]> {
  const batches: string[][] = [];
  for (let i = 0; i < prefixes.length; i += COUNTS_PER_TXN) {
    batches.push(prefixes.slice(i, i + COUNTS_PER_TXN));
  }
  const counts: number[][] = new Array(batches.length);
  let next = 0;
  const worker = async () => {
    while (next < batches.length) {
      const b = next++;
      const success = batches[b].map((prefix) => ({
        request_range: {
          key: Buffer.from(prefix),
          range_end: Buffer.from(prefixRangeEnd(prefix)),
          revision,
          count_only: true,
        },
      }));
      try {
        const res = await client.kv.txn({ compare: [], success, failure: [] });
        counts[b] = res.responses.map((r) => Number(r.response_range.count));
      } catch (err) {
        throw unavailable(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(COUNT_TXNS_IN_FLIGHT, batches.length) }, worker));
  return counts.flat();
}

/** Every key under `prefix`, in pages, at `revision` (or the current one, which it returns). */
async function rangeAll(
  client: Etcd3,
  prefix: string,
  options: { revision?: string } = {},
): Promise<{ kvs: IKeyValue[]; revision: string }> {
  const kvs: IKeyValue[] = [];
  const end = Buffer.from(prefixRangeEnd(prefix));
  let from = Buffer.from(prefix);
  let revision = options.revision;
  for (;;) {
    const request: IRangeRequest = {
      key: from,
      range_end: end,
      limit: PAGE,
      revision,
    };
    let response: IRangeResponse;
    try {
      response = await client.kv.range(request);
    } catch (err) {
      throw unavailable(err);
    }
    revision ??= response.header.revision;
    kvs.push(...response.kvs);
    if (!response.more || response.kvs.length === 0) return { kvs, revision };
    // The next page starts right after the last key: append the smallest byte.
    from = Buffer.concat([response.kvs[response.kvs.length - 1].key, Buffer.from([0])]);
  }
}
