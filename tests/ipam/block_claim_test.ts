// Block choice (pure) and claiming against a real etcd: uniform picks in small pools, probes in huge
// ones, lost races counted and retried, exhaustion reported by pool name; a node's later blocks extend
// its run (one prefix), and nodes starting together lose no more races than with today's uniform pick.

import assert from "node:assert/strict";
import {
  blockAtIndex,
  blockSpace,
  claimBlock,
  type ClaimContext,
  indexOfBlock,
  pickFree,
  PROBE_ABOVE,
  PROBES,
  probeStart,
  randomBelow,
} from "../../ipam/block_claim.ts";
import { aggregate } from "../../ipam/aggregate.ts";
import { type Cidr, formatCidr, parseCidr } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { IpamError } from "../../ipam/errors.ts";
import type { IpamStore } from "../../ipam/ipam_store.ts";
import { parsePool } from "../../ipam/pool.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { MemoryStore } from "../helpers/memory_store.ts";

const DUAL = parsePool("default", { subnets: ["10.1.0.0/26", "fd00::/48", "10.2.0.0/27"], blockSizeBits: 5 });

Deno.test("blockSpace() numbers the blocks of one family across subnets", () => {
  const v4 = blockSpace(DUAL, 4);
  assert.equal(v4.total, 3n);
  assert.deepEqual([0n, 1n, 2n].map((i) => formatCidr(blockAtIndex(v4, i))), [
    "10.1.0.0/27",
    "10.1.0.32/27",
    "10.2.0.0/27",
  ]);
  assert.throws(() => blockAtIndex(v4, 3n), RangeError);
  assert.equal(blockSpace(DUAL, 6).total, 1n << 75n);
  assert.equal(
    formatCidr(blockAtIndex(blockSpace(DUAL, 6), (1n << 75n) - 1n)),
    "fd00::ffff:ffff:ffff:ffff:ffe0/123",
  );
});

Deno.test("indexOfBlock() inverts blockAtIndex() and refuses foreign blocks", () => {
  const v4 = blockSpace(DUAL, 4);
  for (const i of [0n, 1n, 2n]) assert.equal(indexOfBlock(v4, blockAtIndex(v4, i)), i);
  const v6 = blockSpace(DUAL, 6);
  assert.equal(indexOfBlock(v6, blockAtIndex(v6, 12345678901234567890n)), 12345678901234567890n);
  for (const foreign of ["10.3.0.0/27", "10.1.0.0/28", "9.255.255.224/27", "fd01::/123"]) {
    assert.equal(indexOfBlock(foreign.includes(":") ? v6 : v4, parseCidr(foreign)), undefined, foreign);
  }
});

Deno.test("randomBelow() stays in range, also beyond 2^53", () => {
  const draws = [0, 0.999999999, 0.5, 0.25];
  for (const n of [1n, 3n, 1n << 75n, (1n << 128n) - 1n]) {
    for (const d of draws) {
      const v = randomBelow(n, () => d);
      assert.ok(v >= 0n && v < n, `${v} for ${n}`);
    }
  }
  assert.throws(() => randomBelow(0n, Math.random), RangeError);
});

Deno.test("pickFree() picks among free blocks only, and undefined when none is left", () => {
  const v4 = blockSpace(DUAL, 4);
  assert.equal(pickFree(v4, new Set([0n, 2n]), () => 0.99), 1n);
  assert.equal(pickFree(v4, new Set([1n]), () => 0.99), 2n);
  assert.equal(pickFree(v4, new Set([1n]), () => 0), 0n);
  assert.equal(pickFree(v4, new Set([0n, 1n, 2n]), Math.random), undefined);
  const v6 = blockSpace(DUAL, 6);
  const start = randomBelow(v6.total, () => 0.5);
  assert.equal(pickFree(v6, new Set([start, start + 1n]), () => 0.5), start + 2n);
});

Deno.test("probeStart() starts anywhere in a pool of few regions, at a region's first block in a huge one", () => {
  const v4 = blockSpace(parsePool("v4", { subnets: ["10.0.0.0/10"], blockSizeBits: 5 }), 4);
  const starts = Array.from({ length: 64 }, () => probeStart(v4, Math.random));
  assert.ok(starts.every((i) => i >= 0n && i < v4.total));
  assert.ok(starts.some((i) => i % 16n !== 0n), "a /10 has 8,192 regions: any block may start a run");
  const v6 = blockSpace(parsePool("v6", { subnets: ["fd00::/48"], blockSizeBits: 5 }), 6);
  assert.ok(Array.from({ length: 64 }, () => probeStart(v6, Math.random)).every((i) => i % 16n === 0n));
});

Deno.test("claimBlock() against a real etcd", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  // A clock that ticks on every reading: each claim's record is its own, as BlockKeeper's one claim per
  // pool and family at a time makes it in coild (claimBlock() knows its own record by it).
  let clock = 0;
  const context = (node: string, random: () => number = Math.random) => {
    const ctx: ClaimContext & { retries: number; owned: Cidr[] } = {
      store: createEtcdStore(client, prefix),
      node,
      owned: [],
      ownedBlocks: () => ctx.owned,
      random,
      now: () => new Date(clock++),
      log: () => {},
      retries: 0,
      onRetry: () => ctx.retries++,
    };
    return ctx;
  };
  let prefix = "";
  try {
    await t.step(
      "claimBlock() gives concurrent claimers distinct blocks until the pool is exhausted",
      async () => {
        prefix = etcd.newPrefix();
        const pool = parsePool("tiny", { subnets: ["10.9.0.0/28"], blockSizeBits: 2 });
        const contexts = ["a", "b", "c"].map((n) => context(n));
        const results = await Promise.allSettled(
          Array.from({ length: 6 }, (_, i) => claimBlock(contexts[i % 3], pool, 4)),
        );
        const claimed = results.flatMap((r) => (r.status === "fulfilled" ? [formatCidr(r.value.cidr)] : []));
        assert.equal(claimed.length, 4);
        assert.equal(new Set(claimed).size, 4);
        for (const r of results) {
          if (r.status === "rejected") {
            assert.ok(r.reason instanceof IpamError && r.reason.kind === "exhausted", String(r.reason));
            assert.match(r.reason.message, /"tiny"/);
          }
        }
        const store = createEtcdStore(client, prefix);
        const { blocks } = await store.allBlocks();
        assert.equal(blocks.length, 4);
        assert.ok(blocks.every((b) => Date.parse(b.record.claimedAt) < clock), "claimedAt from ctx.now()");
      },
    );

    await t.step("claimBlock() counts each lost race in a huge pool and still claims", async () => {
      prefix = etcd.newPrefix();
      const pool = parsePool("default", { subnets: ["fd00::/48"], blockSizeBits: 5 });
      // The same random value makes every probe of the second node hit the first node's block.
      const first = await claimBlock(context("a", () => 0.5), pool, 6);
      const second = context("b", () => 0.5);
      const won = await claimBlock(second, pool, 6);
      assert.equal(second.retries, PROBES);
      assert.notEqual(formatCidr(won.cidr), formatCidr(first.cidr));
      assert.equal(first.cidr.base % (16n * 32n), 0n, "a run starts at an aligned place");
      assert.ok(won.cidr.base > first.cidr.base, "after the probes it walks forward to a free block");
    });

    await t.step("claimBlock() grows a node's blocks as one run: 2, 4, 8 blocks are one prefix", async () => {
      for (
        const pool of [
          parsePool("v4", { subnets: ["10.50.0.0/16"], blockSizeBits: 5 }),
          parsePool("v6", { subnets: ["fd00:50::/48"], blockSizeBits: 5 }),
        ]
      ) {
        prefix = etcd.newPrefix();
        const family = pool.subnets[0].family;
        // Another node's blocks are scattered over the pool first.
        for (let i = 0; i < 20; i++) await claimBlock(context("other"), pool, family);
        const node = context("a");
        const shapes: string[] = [];
        for (let n = 1; n <= 8; n++) {
          node.owned.push((await claimBlock(node, pool, family)).cidr);
          shapes.push(aggregate(node.owned).map((p) => `/${p.prefix}`).join("+"));
        }
        const bits = family === 4 ? 0 : 96;
        const [b27, b26, b25, b24] = [27, 26, 25, 24].map((p) => `/${p + bits}`);
        assert.deepEqual([shapes[1], shapes[3], shapes[7]], [b26, b25, b24], `IPv${family}: ${shapes}`);
        assert.ok(shapes.every((s) => s.split("+").length <= 3), `IPv${family}: ${shapes}`);
        assert.equal(shapes[0], b27);
        assert.equal(node.retries, 0);
      }
    });

    await t.step(
      "claimBlock() in a big listable pool probes: no listing, and a node's run still grows",
      async () => {
        prefix = etcd.newPrefix();
        // A /12 in /27s: 32,768 blocks, listable but above PROBE_ABOVE.
        const pool = parsePool("big", { subnets: ["10.64.0.0/12"], blockSizeBits: 5 });
        assert.ok(blockSpace(pool, 4).total > PROBE_ABOVE);
        let listings = 0;
        const spied = (ctx: ReturnType<typeof context>) => {
          const store = ctx.store;
          ctx.store = { ...store, claimedBlocks: (name) => (listings++, store.claimedBlocks(name)) };
          return ctx;
        };
        const others = Array.from({ length: 20 }, (_, i) => spied(context(`other-${i}`)));
        await Promise.all(others.map(async (ctx) => ctx.owned.push((await claimBlock(ctx, pool, 4)).cidr)));
        const node = spied(context("a"));
        for (let n = 1; n <= 8; n++) node.owned.push((await claimBlock(node, pool, 4)).cidr);
        assert.equal(listings, 0, "no claim listed the pool's blocks");
        // Unless another node's block happens to sit in its /24 (0.5 %: the claim then loses a race).
        const shape = aggregate(node.owned).map((p) => p.prefix);
        if (node.retries === 0) assert.deepEqual(shape, [24]);
        else assert.ok(shape.length <= 3, `${shape}`);
        // Only after PROBES lost races does a claim list: every probe hits a claimed block here.
        const unlucky = spied(context("b", () => 0));
        const first = await claimBlock(context("c", () => 0), pool, 4);
        const won = await claimBlock(unlucky, pool, 4);
        assert.equal(unlucky.retries, PROBES);
        assert.equal(listings, 1);
        assert.notEqual(formatCidr(won.cidr), formatCidr(first.cidr));
      },
    );

    await t.step(
      "claimBlock(): two nodes starting at once lose no more races than a uniform pick",
      async () => {
        // A pool of 32 blocks, two nodes claiming 4 blocks each at the same time, many rounds; the
        // baseline is today's choice (list, pick uniformly among the free, claim) in the same run.
        const pool = parsePool("race", { subnets: ["10.60.0.0/22"], blockSizeBits: 5 });
        const space = blockSpace(pool, 4);
        const uniform = async (ctx: ReturnType<typeof context>) => {
          for (;;) {
            const claimed = new Set(
              (await ctx.store.claimedBlocks(pool.name)).map((b) => indexOfBlock(space, b)!),
            );
            const cidr = blockAtIndex(space, pickFree(space, claimed, Math.random)!);
            const record = { node: ctx.node, pool: pool.name, claimedAt: "" };
            if ((await ctx.store.claimBlock(pool.name, cidr, record)).claimed) return cidr;
            ctx.retries++;
          }
        };
        const rounds = 60;
        const lost = { preferred: 0, uniform: 0 };
        const prefixes = { preferred: 0, uniform: 0 };
        for (let r = 0; r < rounds; r++) {
          for (const kind of ["preferred", "uniform"] as const) {
            prefix = etcd.newPrefix();
            const nodes = [context(`a${r}`), context(`b${r}`)];
            await Promise.all(nodes.map(async (ctx) => {
              for (let i = 0; i < 4; i++) {
                ctx.owned.push(
                  kind === "uniform" ? await uniform(ctx) : (await claimBlock(ctx, pool, 4)).cidr,
                );
              }
            }));
            lost[kind] += nodes.reduce((sum, n) => sum + n.retries, 0);
            prefixes[kind] += nodes.reduce((sum, n) => sum + aggregate(n.owned).length, 0);
          }
        }
        console.log(
          `  ${rounds} rounds × 2 nodes × 4 blocks: lost races ${JSON.stringify(lost)}, ` +
            `prefixes ${JSON.stringify(prefixes)}`,
        );
        // Uniform picks lose about one race in 25 claims here; allow chance a margin, not a trend.
        assert.ok(lost.preferred <= lost.uniform + 6, `lost races ${JSON.stringify(lost)}`);
        assert.ok(prefixes.preferred < prefixes.uniform / 2, `prefixes ${JSON.stringify(prefixes)}`);
      },
    );
  } finally {
    client.close();
  }
});

Deno.test("claimBlock() takes a block whose claim the client re-sent after the first copy committed", async () => {
  // etcd_client re-sends a txn that failed fast on one endpoint; when the first copy had committed, the
  // re-sent one finds the key taken by this very record. Read as a lost race, the block would stay the
  // node's in etcd, unknown to coild: never used, exported or released.
  const store = new MemoryStore();
  const pool = parsePool("default", { subnets: ["10.9.0.0/26"], blockSizeBits: 3 });
  let resent = 0;
  const claimOnceResent: IpamStore["claimBlock"] = async (name, cidr, record) => {
    const first = await store.claimBlock(name, cidr, record);
    if (resent++ > 0 || !first.claimed) return first;
    return { claimed: false, owner: record };
  };
  const events: Record<string, unknown>[] = [];
  const ctx: ClaimContext = {
    store: new Proxy(store, {
      get(target, name) {
        if (name === "claimBlock") return claimOnceResent;
        const value = Reflect.get(target, name, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }),
    node: "n1",
    ownedBlocks: () => [],
    random: Math.random,
    now: () => new Date(),
    log: (e) => events.push(e),
    onRetry: () => {},
  };
  const claimed = await claimBlock(ctx, pool, 4);
  const { blocks } = await store.allBlocks();
  assert.deepEqual(
    blocks.map((b) => formatCidr(b.cidr)),
    [formatCidr(claimed.cidr)],
    "one block, the one returned",
  );
  assert.equal(claimed.revision, blocks[0].revision);
  assert.deepEqual(events.filter((e) => e.event === "block claim lost"), []);
});
