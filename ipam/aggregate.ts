// The smallest set of prefixes covering exactly a set of blocks: what a node announces, so that a run
// of buddy blocks costs the fabric one route (two /27s → one /26) and no address outside them is claimed.

import { type Cidr, cidrSize, type Family, familyBits, overlaps } from "./cidr.ts";

/**
 * The fewest prefixes whose union is exactly the union of `blocks`, sorted by family then address.
 * Blocks may differ in length, repeat or overlap. A prefix is contiguous, so each one lies inside one
 * maximal run of covered addresses; cutting each run greedily into the largest aligned prefixes that
 * fit is minimal for that run (the same cut as Python's `ipaddress.summarize_address_range`).
 * With `bounds` (the pool subnets), no prefix grows past the bound holding its blocks: a router that
 * accepts each pool subnet and its more-specifics (BIRD's `10.100.0.0/16+`) accepts every prefix,
 * even when one node owns all of two adjacent subnets.
 */
export function aggregate(blocks: Iterable<Cidr>, bounds: readonly Cidr[] = []): Cidr[] {
  const groups = new Map<Cidr | undefined, Cidr[]>();
  for (const b of blocks) {
    const bound = bounds.find((s) => s.prefix <= b.prefix && overlaps(s, b));
    const group = groups.get(bound);
    if (group) group.push(b);
    else groups.set(bound, [b]);
  }
  const result = [...groups.values()].flatMap(aggregateRuns);
  return result.sort((a, b) => a.family - b.family || (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
}

function aggregateRuns(blocks: Cidr[]): Cidr[] {
  const ranges: Record<Family, [bigint, bigint][]> = { 4: [], 6: [] };
  for (const b of blocks) ranges[b.family].push([b.base, b.base + cidrSize(b)]);
  const result: Cidr[] = [];
  for (const family of [4, 6] as const) {
    const sorted = ranges[family].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    let run: [bigint, bigint] | undefined;
    for (const range of sorted) {
      if (run && range[0] <= run[1]) {
        if (range[1] > run[1]) run[1] = range[1];
        continue;
      }
      if (run) result.push(...cutRun(family, run[0], run[1]));
      run = [range[0], range[1]];
    }
    if (run) result.push(...cutRun(family, run[0], run[1]));
  }
  return result;
}

/** The largest aligned prefixes, in order, that tile [start, end). */
function cutRun(family: Family, start: bigint, end: bigint): Cidr[] {
  const bits = familyBits(family);
  const out: Cidr[] = [];
  while (start < end) {
    // The largest power of two that `start` is aligned to and that still fits before `end`.
    let hostBits = 0;
    while (
      hostBits < bits && (start & ((1n << BigInt(hostBits + 1)) - 1n)) === 0n &&
      start + (1n << BigInt(hostBits + 1)) <= end
    ) hostBits++;
    out.push({ family, base: start, prefix: bits - hostBits });
    start += 1n << BigInt(hostBits);
  }
  return out;
}
