// Utilisation arithmetic over a Snapshot: per subnet of a pool, per pool and per node. Pure; totals
// that grow with IPv6 subnets are BigInt, counts of etcd keys are numbers. Capacities count the
// addresses pods can get: a block's reserved addresses (block_allocator.ts reservedOffsets) are left out.

import { usableAddresses } from "../block_allocator.ts";
import { blockCount, type Cidr, cidrSize, contains, nthAddress } from "../cidr.ts";
import { blockPrefix, type Pool } from "../pool.ts";
import type { ClaimedBlock } from "./snapshot.ts";

export interface SubnetUsage {
  subnet: Cidr;
  blockPrefix: number;
  blocksClaimed: number;
  blocksTotal: bigint;
  addressesUsed: number;
  /** Addresses pods can get in the whole subnet: blocksTotal × the usable addresses of a block. */
  addresses: bigint;
}

export interface PoolUsage {
  pool: Pool;
  subnets: SubnetUsage[];
  blocksClaimed: number;
  blocksTotal: bigint;
  addressesUsed: number;
  /** Addresses pods can get in the claimed blocks: what the nodes can hand out without claiming more. */
  addressesInClaimedBlocks: number;
}

export interface NodeUsage {
  node: string;
  /** coild runs. */
  live: boolean;
  /** Not running but alive within --node-dead-after: seconds until it is removable without --force. */
  removableInSeconds?: number;
  blocks: number;
  addressesUsed: number;
  /** Addresses pods can get in the node's blocks. */
  capacity: number;
}

/** Usage of one pool, given the claimed blocks (of any pool: others are ignored). */
export function poolUsage(pool: Pool, blocks: readonly ClaimedBlock[]): PoolUsage {
  const own = blocks.filter((b) => b.pool === pool.name);
  const subnets = pool.subnets.map((subnet): SubnetUsage => {
    const inside = own.filter((b) => contains(subnet, nthAddress(b.block, 0n)));
    const prefix = blockPrefix(pool, subnet.family);
    const blocksTotal = blockCount(subnet, prefix);
    return {
      subnet,
      blockPrefix: prefix,
      blocksClaimed: inside.length,
      blocksTotal,
      addressesUsed: sum(inside.map((b) => b.addressesUsed)),
      addresses: blocksTotal * BigInt(usableAddresses(2 ** pool.blockSizeBits, subnet.family)),
    };
  });
  return {
    pool,
    subnets,
    blocksClaimed: own.length,
    blocksTotal: subnets.reduce((acc, s) => acc + s.blocksTotal, 0n),
    addressesUsed: sum(own.map((b) => b.addressesUsed)),
    addressesInClaimedBlocks: sum(own.map((b) => blockCapacity(b.block))),
  };
}

/**
 * Usage per node holding blocks, plus live and recently alive nodes holding none, sorted by name.
 * `recentNodes`: seconds until removable, by node (Snapshot.recentNodes).
 */
export function nodeUsage(
  blocks: readonly ClaimedBlock[],
  liveNodes: ReadonlySet<string>,
  recentNodes: ReadonlyMap<string, number> = new Map(),
): NodeUsage[] {
  const byNode = new Map<string, NodeUsage>();
  const emptyUsage = (node: string): NodeUsage => {
    const removableInSeconds = liveNodes.has(node) ? undefined : recentNodes.get(node);
    return {
      node,
      live: liveNodes.has(node),
      ...(removableInSeconds === undefined ? {} : { removableInSeconds }),
      blocks: 0,
      addressesUsed: 0,
      capacity: 0,
    };
  };
  for (const node of [...liveNodes, ...recentNodes.keys()]) byNode.set(node, emptyUsage(node));
  for (const b of blocks) {
    const usage = byNode.get(b.node) ?? emptyUsage(b.node);
    usage.blocks++;
    usage.addressesUsed += b.addressesUsed;
    usage.capacity += blockCapacity(b.block);
    byNode.set(b.node, usage);
  }
  return [...byNode.values()].sort((a, b) => a.node < b.node ? -1 : a.node > b.node ? 1 : 0);
}

/** Addresses pods can get in one claimed block (blocks hold at most 2^16, so a number). */
export function blockCapacity(block: Cidr): number {
  return usableAddresses(Number(cidrSize(block)), block.family);
}

function sum(values: number[]): number {
  return values.reduce((acc, v) => acc + v, 0);
}
