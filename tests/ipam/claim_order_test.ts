// The claim order as pure functions: a run grows into its buddy, then the nearest block of the next
// aligned region, never past another node's block; a new run starts in an untouched region; huge
// spaces get aligned starts.

import assert from "node:assert/strict";
import { aggregate } from "../../ipam/aggregate.ts";
import { blockAtIndex, blockSpace } from "../../ipam/block_claim.ts";
import { alignedStart, extendingBlock, START_REGION_BITS, startBlock } from "../../ipam/claim_order.ts";
import { parsePool } from "../../ipam/pool.ts";

const V4 = blockSpace(parsePool("p", { subnets: ["10.0.0.0/24", "10.1.0.0/26"], blockSizeBits: 5 }), 4);
const sorted = (list: bigint[]) => [...list].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
const first = () => 0;

Deno.test("extendingBlock() grows a run into its buddy, then the nearest block of the next region", async (t) => {
  const table: [string, bigint[], bigint[], bigint | undefined][] = [
    ["no block owned: nothing to extend", [], [], undefined],
    ["block 5: its buddy 4", [5n], [], 4n],
    ["blocks 4-5: the near end of 6-7", [4n, 5n], [], 6n],
    ["blocks 4-6: 7 completes the /25", [4n, 5n, 6n], [], 7n],
    ["blocks 4-7: the near end of 0-3", [4n, 5n, 6n, 7n], [], 3n],
    ["a hole at 2 in 0-7: the hole first", [0n, 1n, 3n, 4n, 5n, 6n, 7n], [], 2n],
    ["buddy taken by another node: no candidate from that run", [1n], [0n], undefined],
    ["the next region holds another node's block: the walk stops", [0n, 1n], [3n], undefined],
    ["the other subnet's blocks (8-9) grow on their own", [8n], [], 9n],
    ["a subnet full of ours: nothing further", [8n, 9n], [], undefined],
  ];
  for (const [name, owned, others, expected] of table) {
    await t.step(
      name,
      () => assert.equal(extendingBlock(V4, new Set(owned), sorted(others), first), expected),
    );
  }
  await t.step("the smaller buddy wins between runs", () => {
    // Run 0-1 wants 2 (buddy of size 2); the lone 5 wants 4 (buddy of size 1).
    assert.equal(extendingBlock(V4, new Set([0n, 1n, 5n]), [], () => 0.99), 4n);
  });
});

Deno.test("extendingBlock() fills a fresh /24 as one prefix, from any start", () => {
  for (let start = 0n; start < 8n; start++) {
    const owned = new Set([start]);
    while (owned.size < 8) owned.add(extendingBlock(V4, owned, [], Math.random)!);
    const prefixes = aggregate([...owned].map((i) => blockAtIndex(V4, i)));
    assert.equal(prefixes.length, 1, `from ${start}`);
    assert.equal(prefixes[0].prefix, 24);
  }
});

Deno.test("startBlock() picks in a region nobody claimed in, down to any free block", () => {
  const space = blockSpace(parsePool("p", { subnets: ["10.0.0.0/22"], blockSizeBits: 5 }), 4); // 32 blocks
  assert.equal(START_REGION_BITS, 4);
  // Block 3 taken: the region 0-15 is touched, so every pick lands in 16-31.
  for (const r of [0, 0.5, 0.999]) {
    const pick = startBlock(space, new Set([3n]), () => r)!;
    assert.ok(pick >= 16n && pick < 32n, `${pick}`);
  }
  // One block in each 16-region: 8-regions 8-15 and 24-31 are untouched.
  for (const r of [0, 0.3, 0.6, 0.999]) {
    const pick = startBlock(space, new Set([3n, 17n]), () => r)!;
    assert.ok((pick >= 8n && pick < 16n) || pick >= 24n, `${pick}`);
  }
  // Every other block taken: any free block.
  const odd = new Set(Array.from({ length: 16 }, (_, i) => BigInt(2 * i + 1)));
  assert.equal(startBlock(space, odd, () => 0.999), 30n);
  assert.equal(startBlock(space, new Set(Array.from({ length: 32 }, (_, i) => BigInt(i))), first), undefined);
  // A fresh pool: uniform over every block.
  assert.equal(startBlock(space, new Set(), () => 0.999), 31n);
  assert.equal(startBlock(space, new Set(), first), 0n);
});

Deno.test("alignedStart() aligns a probe to its 16-block region inside its subnet", () => {
  const v6 = blockSpace(parsePool("p", { subnets: ["fd00::/48"], blockSizeBits: 5 }), 6);
  assert.equal(alignedStart(v6, 12345678901234567890n), 12345678901234567888n);
  // The /26 subnet has 2 blocks only: its region is the subnet.
  assert.equal(alignedStart(V4, 9n), 8n);
  assert.equal(alignedStart(V4, 7n), 0n);
  assert.throws(() => alignedStart(V4, 10n), RangeError);
});
