// A read-only view of Coil's etcd state for the admin commands: pools, claimed blocks with their used
// address counts, live and recently alive nodes, all read at one etcd revision (paged, so big clusters
// fit gRPC limits).

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
  const addressKvs = await rangeAll(client, keys.addresses(), { revision, keysOnly: true });

  const usedByBlock = new Map<string, number>();
  for (const kv of addressKvs.kvs) {
    const id = kv.key.toString().slice(keys.addresses().length).split("/")[0];
    usedByBlock.set(id, (usedByBlock.get(id) ?? 0) + 1);
  }
  const blocks: ClaimedBlock[] = [];
  let counted = 0;
  for (const kv of blockKvs.kvs) {
    const key = kv.key.toString();
    const [pool, id] = key.slice(keys.blocks().length).split("/");
    const block = id === undefined ? undefined : tryParseCidr(id.replace(/_(\d+)$/, "/$1"), { strict: true });
    if (!block) {
      throw new IpamError("invalid", `Corrupt block key "${key}": expected blocks/<pool>/<network>_<length>`);
    }
    const record = parseBlockRecord(key, kv.value.toString());
    const addressesUsed = usedByBlock.get(id) ?? 0;
    counted += addressesUsed;
    blocks.push({ pool, block, node: record.node, claimedAt: record.claimedAt, addressesUsed });
  }
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
    strayAddresses: addressKvs.kvs.length - counted,
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

/** Every key under `prefix`, in pages, at `revision` (or the current one, which it returns). */
async function rangeAll(
  client: Etcd3,
  prefix: string,
  options: { revision?: string; keysOnly?: boolean } = {},
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
      keys_only: options.keysOnly,
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
