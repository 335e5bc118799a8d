// Choosing and claiming a free block of a pool. A node first extends an aligned run it owns (so that
// its blocks aggregate into few routes, ipam/claim_order.ts); otherwise candidates are random, so nodes
// claiming at once rarely want the same key: uniform among the free blocks of untouched regions of a
// small pool, which is listed per claim; random probes in a big one, listed only after PROBES lost
// races, which happen when it is nearly full (5,000 nodes listing a /12 at once read 12.5 M keys), and
// never when it is too big to enumerate (an IPv6 /48 cut into /123 blocks has 2^75 blocks).

import { blockAt, blockCount, type Cidr, type Family, familyBits, formatCidr } from "./cidr.ts";
import { alignedStart, extendingBlock, START_REGION_BITS, startBlock } from "./claim_order.ts";
import type { IpamStore } from "./ipam_store.ts";
import type { StoredAddress } from "./etcd_values.ts";
import { IpamError } from "./errors.ts";
import { blockPrefix, type Pool } from "./pool.ts";
import type { BlockRecord } from "./records.ts";

/** Pools with at most this many blocks (per family) are listed and picked from uniformly. */
export const LIST_LIMIT = 65536n;
/**
 * Pools with more blocks than this (per family) are probed before they are listed: listing costs a
 * claim one key per claimed block, a lost probe one txn.
 */
export const PROBE_ABOVE = 4096n;
/** Random probes in a big pool before falling back to listing its claimed blocks. */
export const PROBES = 8;
/**
 * Spaces with at least this many start regions (claim_order.ts START_REGION_BITS) start a probed run
 * at a region's first block, so that two nodes meeting in a region collide on its first key; fewer
 * regions would make nodes starting together collide often (5,000 nodes in a /10's 8,192 regions lose
 * 0.53 races per claim), so runs start at any block there, as startBlock() does on a fresh pool.
 */
export const ALIGNED_START_REGIONS = 1n << 20n;
/** Lost races after which a claim gives up with kind "conflict". */
export const MAX_CLAIM_ATTEMPTS = 32;

/** The blocks of one family of a pool, numbered 0…total-1 across its subnets in order. */
export interface BlockSpace {
  prefix: number;
  subnets: { subnet: Cidr; count: bigint }[];
  total: bigint;
}

export interface ClaimContext {
  store: IpamStore;
  node: string;
  /** The blocks the node owns now (any pool): the runs a claim should extend. */
  ownedBlocks: () => Iterable<Cidr>;
  random: () => number;
  now: () => Date;
  log: (event: Record<string, unknown>) => void;
  /** Called for every claim txn that lost (the key was taken): the retry count. */
  onRetry: () => void;
}

export interface ClaimedBlock {
  pool: string;
  cidr: Cidr;
  /** ModRevision of the new block key. */
  revision: string;
  /** Address keys already in the block (left over from a forced release). */
  addresses: StoredAddress[];
}

/** The block space of `family` in the pool (total 0 when the pool has no subnet of that family). */
export function blockSpace(pool: Pool, family: Family): BlockSpace {
  const prefix = blockPrefix(pool, family);
  const subnets = pool.subnets
    .filter((s) => s.family === family)
    .map((subnet) => ({ subnet, count: blockCount(subnet, prefix) }));
  return { prefix, subnets, total: subnets.reduce((sum, s) => sum + s.count, 0n) };
}

/** The block numbered `index` in the space. @throws {RangeError} outside it. */
export function blockAtIndex(space: BlockSpace, index: bigint): Cidr {
  let rest = index;
  for (const { subnet, count } of space.subnets) {
    if (rest >= 0n && rest < count) return blockAt(subnet, space.prefix, rest);
    rest -= count;
  }
  throw new RangeError(`Block ${index} outside a space of ${space.total} blocks`);
}

/** The number of a block in the space, or undefined when it is not one of its blocks. */
export function indexOfBlock(space: BlockSpace, block: Cidr): bigint | undefined {
  if (block.prefix !== space.prefix) return undefined;
  const size = 1n << BigInt(familyBits(block.family) - space.prefix);
  let offset = 0n;
  for (const { subnet, count } of space.subnets) {
    if (subnet.family === block.family && block.base >= subnet.base) {
      const i = (block.base - subnet.base) / size;
      if (i < count) return offset + i;
    }
    offset += count;
  }
  return undefined;
}

/** A uniform random integer in [0, n), from as many 32-bit draws as n needs. */
export function randomBelow(n: bigint, random: () => number): bigint {
  if (n <= 0n) throw new RangeError(`Empty range: ${n}`);
  const bits = n.toString(2).length + 32; // extra bits make the modulo bias negligible
  let value = 0n;
  for (let have = 0; have < bits; have += 32) {
    value = (value << 32n) | BigInt(Math.floor(random() * 0x100000000) >>> 0);
  }
  return value % n;
}

/**
 * A free block number given the claimed ones, or undefined when none is free. Small spaces pick
 * uniformly among the free; huge ones walk forward from a random start (at most claimed+1 steps).
 */
export function pickFree(space: BlockSpace, claimed: Set<bigint>, random: () => number): bigint | undefined {
  if (BigInt(claimed.size) >= space.total) return undefined;
  if (space.total <= LIST_LIMIT) {
    const free: number[] = [];
    for (let i = 0; i < Number(space.total); i++) {
      if (!claimed.has(BigInt(i))) free.push(i);
    }
    return BigInt(free[Math.floor(random() * free.length)]);
  }
  let index = randomBelow(space.total, random);
  while (claimed.has(index)) index = (index + 1n) % space.total;
  return index;
}

/** A random block to start a probed run at (see ALIGNED_START_REGIONS). */
export function probeStart(space: BlockSpace, random: () => number): bigint {
  const index = randomBelow(space.total, random);
  const regions = space.total >> BigInt(START_REGION_BITS);
  return regions >= ALIGNED_START_REGIONS ? alignedStart(space, index) : index;
}

/**
 * Whether `owner` is the very record this claim wrote (same node, pool and claim time): the node's
 * BlockKeeper runs one claim per pool and family at a time, so no other claim of its writes that record.
 */
function isOurRecord(owner: BlockRecord | undefined, record: BlockRecord): boolean {
  return owner?.node === record.node && owner.pool === record.pool && owner.claimedAt === record.claimedAt;
}

/**
 * Claims a free block of `family` in the pool for `ctx.node` with one txn per attempt; a lost race
 * (the else branch names the winner) counts a retry and picks again. The candidate extends one of the
 * node's runs when it can (extendingBlock()), else starts a new one at random: a probe (probeStart())
 * in a pool of more than PROBE_ABOVE blocks, for the first PROBES attempts; then, or in a smaller
 * pool, startBlock() over the listed claimed blocks (pickFree() in a pool too big to list). With
 * `spare`, the last free block of a listed pool is left for a node that has none (a probe may take it
 * in a big pool; the keeper's sweep then releases the spare: BlockKeeper.releaseEmpty()).
 * @throws {IpamError} kind "exhausted" naming the pool when no block is free (or, for a spare, only
 * one), "conflict" after MAX_CLAIM_ATTEMPTS lost races, "unavailable" when etcd fails.
 */
export async function claimBlock(
  ctx: ClaimContext,
  pool: Pool,
  family: Family,
  options: { spare?: boolean } = {},
): Promise<ClaimedBlock> {
  const space = blockSpace(pool, family);
  const owned = new Set<bigint>();
  for (const block of ctx.ownedBlocks()) {
    const i = indexOfBlock(space, block);
    if (i !== undefined) owned.add(i);
  }
  // Blocks this claim lost to others, known without listing.
  const lost = new Set<bigint>();
  let probes = space.total > PROBE_ABOVE ? PROBES : 0;
  for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
    let index: bigint | undefined;
    if (probes > 0) {
      probes--;
      index = extendingBlock(space, owned, [...lost].sort(compare), ctx.random) ??
        probeStart(space, ctx.random);
    } else {
      const claimed = new Set<bigint>();
      for (const block of await ctx.store.claimedBlocks(pool.name)) {
        const i = indexOfBlock(space, block);
        if (i !== undefined) claimed.add(i);
      }
      if (options.spare && BigInt(claimed.size) + 1n === space.total) {
        throw new IpamError(
          "exhausted",
          `Pool "${pool.name}" has no IPv${family} block to spare: its last free block is left for other nodes`,
        );
      }
      const others = [...claimed].filter((i) => !owned.has(i)).sort(compare);
      index = extendingBlock(space, owned, others, ctx.random) ??
        (space.total <= LIST_LIMIT
          ? startBlock(space, claimed, ctx.random)
          : pickFree(space, claimed, ctx.random));
    }
    if (index === undefined) {
      throw new IpamError("exhausted", `Pool "${pool.name}" is exhausted: no free IPv${family} block left`);
    }
    const cidr = blockAtIndex(space, index);
    const record = { node: ctx.node, pool: pool.name, claimedAt: ctx.now().toISOString() };
    const outcome = await ctx.store.claimBlock(pool.name, cidr, record);
    if (outcome.claimed) {
      return { pool: pool.name, cidr, revision: outcome.revision, addresses: outcome.addresses };
    }
    if (isOurRecord(outcome.owner, record)) {
      // The client re-sent the txn after a failure, and the first copy had committed: the block is ours.
      const read = await ctx.store.readBlock(pool.name, cidr);
      if (read.block && isOurRecord(read.block.record, record)) {
        return { pool: pool.name, cidr, revision: read.block.revision, addresses: read.addresses };
      }
    }
    lost.add(index);
    ctx.onRetry();
    ctx.log({
      event: "block claim lost",
      pool: pool.name,
      block: formatCidr(cidr),
      owner: outcome.owner?.node,
    });
  }
  throw new IpamError(
    "conflict",
    `Cannot claim an IPv${family} block of pool "${pool.name}": lost ${MAX_CLAIM_ATTEMPTS} races to other claims`,
  );
}

function compare(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
