// aggregate() as a pure function: exhaustive over every subset of the blocks of two small pools (IPv4
// and IPv6, each two adjacent subnets), checked against an independent prefix-tree oracle; plus
// mixed lengths, duplicates, overlaps and the whole address space.

import assert from "node:assert/strict";
import { aggregate } from "../../ipam/aggregate.ts";
import { blockAt, type Cidr, cidrSize, formatCidr, parseCidr } from "../../ipam/cidr.ts";
import { blockAtIndex, blockSpace } from "../../ipam/block_claim.ts";
import { parsePool } from "../../ipam/pool.ts";

const texts = (cidrs: Cidr[]) => cidrs.map(formatCidr);
const agg = (list: string[]) => texts(aggregate(list.map((t) => parseCidr(t))));

/**
 * The maximal prefixes inside `root` made only of owned blocks: the unique minimal exact cover, found
 * by walking the prefix tree (a prefix all owned is taken whole, a prefix with none is skipped).
 */
function oracle(root: Cidr, blockPrefix: number, owned: Set<bigint>): Cidr[] {
  const blockSize = 1n << BigInt((root.family === 4 ? 32 : 128) - blockPrefix);
  const count = (p: Cidr) => {
    let n = 0;
    for (let base = p.base; base < p.base + cidrSize(p); base += blockSize) if (owned.has(base)) n++;
    return n;
  };
  const n = count(root);
  if (n === 0) return [];
  if (BigInt(n) * blockSize === cidrSize(root)) return [root];
  const half = { family: root.family, prefix: root.prefix + 1 };
  return [
    ...oracle({ ...half, base: root.base }, blockPrefix, owned),
    ...oracle({ ...half, base: root.base + cidrSize(root) / 2n }, blockPrefix, owned),
  ];
}

/** The block bases a set of prefixes covers, failing on any overlap between them. */
function coveredBlocks(prefixes: Cidr[], blockPrefix: number): Set<bigint> {
  const covered = new Set<bigint>();
  for (const p of prefixes) {
    assert.ok(p.prefix <= blockPrefix, `${formatCidr(p)} is smaller than a block`);
    for (let i = 0n; i < 1n << BigInt(blockPrefix - p.prefix); i++) {
      const base = blockAt(p, blockPrefix, i).base;
      assert.ok(!covered.has(base), `${formatCidr(p)} overlaps another prefix`);
      covered.add(base);
    }
  }
  return covered;
}

Deno.test("aggregate() covers exactly every subset of a small pool's blocks, minimally", async (t) => {
  const cases = [
    {
      pool: parsePool("v4", { subnets: ["10.0.0.0/24", "10.0.1.0/25"], blockSizeBits: 5 }),
      family: 4 as const,
      root: "10.0.0.0/23",
    },
    {
      pool: parsePool("v6", { subnets: ["fd00::/120", "fd00::100/121"], blockSizeBits: 5 }),
      family: 6 as const,
      root: "fd00::/119",
    },
  ];
  for (const { pool, family, root } of cases) {
    await t.step(`IPv${family}: all 4,096 subsets of 12 blocks`, () => {
      const space = blockSpace(pool, family);
      assert.equal(space.total, 12n);
      const blocks = Array.from({ length: 12 }, (_, i) => blockAtIndex(space, BigInt(i)));
      for (let mask = 0; mask < 1 << blocks.length; mask++) {
        const owned = blocks.filter((_, i) => mask & (1 << i));
        const result = aggregate(owned);
        const ownedBases = new Set(owned.map((b) => b.base));
        assert.deepEqual(coveredBlocks(result, space.prefix), ownedBases, `subset ${mask}`);
        assert.deepEqual(
          texts(result),
          texts(oracle(parseCidr(root), space.prefix, ownedBases)),
          `subset ${mask}`,
        );
        // The order in which blocks come in does not matter.
        assert.deepEqual(texts(aggregate([...owned].reverse())), texts(result));
      }
    });
  }
});

Deno.test("aggregate() merges buddies only: the issue's examples and near misses", async (t) => {
  const table: [string, string[], string[]][] = [
    ["two buddy /27s → one /26", ["10.0.0.32/27", "10.0.0.0/27"], ["10.0.0.0/26"]],
    ["four → one /25", ["10.0.0.0/27", "10.0.0.32/27", "10.0.0.64/27", "10.0.0.96/27"], ["10.0.0.0/25"]],
    ["adjacent but not buddies stay apart", ["10.0.0.32/27", "10.0.0.64/27"], [
      "10.0.0.32/27",
      "10.0.0.64/27",
    ]],
    ["three in a row: /26 + /27", ["10.0.0.0/27", "10.0.0.32/27", "10.0.0.64/27"], [
      "10.0.0.0/26",
      "10.0.0.64/27",
    ]],
    ["seven blocks: /25 + /26 + /27", [0, 1, 2, 3, 4, 5, 6].map((i) => `10.0.0.${i * 32}/27`), [
      "10.0.0.0/25",
      "10.0.0.128/26",
      "10.0.0.192/27",
    ]],
    ["mixed lengths, duplicates and overlaps", [
      "10.0.1.0/25",
      "10.0.0.0/24",
      "10.0.1.128/26",
      "10.0.1.128/26",
      "10.0.1.192/26",
    ], [
      "10.0.0.0/23",
    ]],
    ["both families, IPv4 first", ["fd00::20/123", "10.0.0.0/27", "fd00::/123"], [
      "10.0.0.0/27",
      "fd00::/122",
    ]],
    ["across an octet boundary", ["10.0.0.224/27", "10.0.1.0/27"], ["10.0.0.224/27", "10.0.1.0/27"]],
    ["the whole IPv4 space", ["0.0.0.0/1", "128.0.0.0/1"], ["0.0.0.0/0"]],
    ["the whole IPv6 space", ["::/1", "8000::/1"], ["::/0"]],
    ["the top of the IPv6 space", [
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffe0/123",
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/123",
    ], [
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/122",
    ]],
    ["nothing", [], []],
  ];
  for (const [name, input, expected] of table) {
    await t.step(name, () => assert.deepEqual(agg(input), expected));
  }
});

Deno.test("aggregate() stays exact and minimal on random sets of mixed-length IPv6 prefixes", () => {
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const root = parseCidr("fd00:1::/118");
  for (let round = 0; round < 300; round++) {
    // Prefixes of /121…/125 inside the root, in units of /125 (8 addresses).
    const owned = new Set<bigint>();
    const input: Cidr[] = [];
    for (let i = 0; i < 1 + Math.floor(random() * 12); i++) {
      const prefix = 121 + Math.floor(random() * 5);
      const units = 1 << (125 - prefix);
      const start = Math.floor(random() * (128 / units)) * units;
      input.push({ family: 6, base: root.base + BigInt(start * 8), prefix });
      for (let u = 0; u < units; u++) owned.add(root.base + BigInt((start + u) * 8));
    }
    const result = aggregate(input);
    assert.deepEqual(coveredBlocks(result, 125), owned);
    assert.deepEqual(texts(result), texts(oracle(root, 125, owned)));
  }
});

Deno.test("aggregate() with bounds never grows a prefix past the pool subnet holding its blocks", () => {
  const all = Array.from({ length: 16 }, (_, i) => `10.0.${i >> 3}.${(i & 7) * 32}/27`);
  assert.deepEqual(agg(all), ["10.0.0.0/23"]);
  const bounds = ["10.0.0.0/24", "10.0.1.0/24"].map((t) => parseCidr(t));
  assert.deepEqual(texts(aggregate(all.map((t) => parseCidr(t)), bounds)), ["10.0.0.0/24", "10.0.1.0/24"]);
  // Blocks outside every bound are aggregated among themselves; IPv6 ones beside them.
  const mixed = ["10.9.0.0/27", "10.9.0.32/27", "10.0.0.0/27", "fd00::/123", "fd00::20/123"];
  assert.deepEqual(texts(aggregate(mixed.map((t) => parseCidr(t)), bounds)), [
    "10.0.0.0/27",
    "10.9.0.0/26",
    "fd00::/122",
  ]);
});
