// Which free block a node should claim next: one that extends an aligned run it already owns (so that
// the exporter announces the run as one prefix, ipam/aggregate.ts), else a random block whose aligned
// region is still untouched, where a new run has room to grow. Pure: the claimed blocks come in.

import { aggregate } from "./aggregate.ts";
import type { BlockSpace } from "./block_claim.ts";
import { blockAt, familyBits } from "./cidr.ts";

/**
 * A new run starts in an aligned region of 2^START_REGION_BITS blocks (16 /27s: a 500-pod node) that
 * nobody has claimed in, so that it can grow to the whole region as one prefix.
 */
export const START_REGION_BITS = 4;

/** One subnet's blocks in the space: indices offset … offset+count-1 (count is a power of two). */
interface Segment {
  offset: bigint;
  count: bigint;
}

function segments(space: BlockSpace): Segment[] {
  let offset = 0n;
  return space.subnets.map(({ count }) => {
    const segment = { offset, count };
    offset += count;
    return segment;
  });
}

/**
 * The free block that best extends the node's runs, or undefined when none can. For each maximal
 * aligned run (an aggregate of owned blocks), walk up its enclosing aligned regions: at the first level
 * whose other half (the buddy) still has a free block, the candidate is the free block of the buddy
 * nearest the run; a buddy holding someone else's block ends the walk (the run can never merge past
 * it). Candidates from smaller buddies win (they merge sooner); ties are broken at random.
 * @param owned the node's blocks in this space
 * @param others blocks known to be claimed by someone else, sorted ascending
 */
export function extendingBlock(
  space: BlockSpace,
  owned: ReadonlySet<bigint>,
  others: readonly bigint[],
  random: () => number,
): bigint | undefined {
  let best: bigint[] = [];
  let bestSize = -1n;
  for (const [s, { offset, count }] of segments(space).entries()) {
    const subnet = space.subnets[s].subnet;
    const blockBits = BigInt(familyBits(subnet.family) - space.prefix);
    const mine = [...owned].filter((i) => i >= offset && i < offset + count);
    const runs = aggregate(mine.map((i) => blockAt(subnet, space.prefix, i - offset)));
    for (const run of runs) {
      let start = (run.base - subnet.base) >> blockBits;
      let size = 1n << BigInt(space.prefix - run.prefix);
      for (; size < count; start -= start % (size * 2n), size *= 2n) {
        if (bestSize >= 0n && size > bestSize) break;
        const buddy = start ^ size;
        if (anyIn(others, offset + buddy, offset + buddy + size)) break;
        const found = nearestFree(owned, offset, buddy, size, buddy > start);
        if (found === undefined) continue; // the buddy is all ours: look one level up
        if (size < bestSize || bestSize < 0n) [best, bestSize] = [[], size];
        best.push(found);
        break;
      }
    }
  }
  return best.length ? best[Math.floor(random() * best.length)] : undefined;
}

/** The first block of [start, start+size) of the segment, from the low end or the high one, not owned. */
function nearestFree(
  owned: ReadonlySet<bigint>,
  offset: bigint,
  start: bigint,
  size: bigint,
  fromLow: boolean,
): bigint | undefined {
  for (let k = 0n; k < size; k++) {
    const index = offset + (fromLow ? start + k : start + size - 1n - k);
    if (!owned.has(index)) return index;
  }
  return undefined;
}

/** Whether the sorted list holds a value in [low, high). */
function anyIn(sorted: readonly bigint[], low: bigint, high: bigint): boolean {
  let [lo, hi] = [0, sorted.length];
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < low) lo = mid + 1;
    else hi = mid;
  }
  return lo < sorted.length && sorted[lo] < high;
}

/**
 * A free block to start a new run in a listable space, uniform among the free blocks whose aligned
 * region of 2^k blocks is entirely unclaimed, for the largest k ≤ START_REGION_BITS that has one (k = 0
 * is any free block). On a fresh pool every block qualifies, so nodes starting together spread as
 * widely as a uniform pick. Undefined when no block is free.
 */
export function startBlock(
  space: BlockSpace,
  claimed: ReadonlySet<bigint>,
  random: () => number,
): bigint | undefined {
  for (let k = START_REGION_BITS; k >= 0; k--) {
    const regions: { start: bigint; size: bigint }[] = [];
    for (const { offset, count } of segments(space)) {
      const size = (1n << BigInt(k)) < count ? 1n << BigInt(k) : count;
      const taken = new Set<bigint>();
      for (const i of claimed) if (i >= offset && i < offset + count) taken.add((i - offset) / size);
      for (let r = 0n; r < count / size; r++) {
        if (!taken.has(r)) regions.push({ start: offset + r * size, size });
      }
    }
    const total = regions.reduce((sum, r) => sum + r.size, 0n);
    if (total === 0n) continue;
    let pick = BigInt(Math.floor(random() * Number(total)));
    for (const region of regions) {
      if (pick < region.size) return region.start + pick;
      pick -= region.size;
    }
  }
  return undefined;
}

/**
 * A random block at the start of an aligned region of 2^START_REGION_BITS blocks (smaller when its
 * subnet is), for a space too big to list: where a node's run of blocks starts in an IPv6 /48.
 */
export function alignedStart(space: BlockSpace, index: bigint): bigint {
  for (const { offset, count } of segments(space)) {
    if (index >= offset && index < offset + count) {
      const size = (1n << BigInt(START_REGION_BITS)) < count ? 1n << BigInt(START_REGION_BITS) : count;
      return offset + (index - offset) - (index - offset) % size;
    }
  }
  throw new RangeError(`Block ${index} outside a space of ${space.total} blocks`);
}
