// Block choice (pure) and claiming against a real etcd: uniform picks in small pools, probes in huge
// ones, lost races counted and retried, exhaustion reported by pool name.

import assert from "node:assert/strict";
import {
  blockAtIndex,
  blockSpace,
  claimBlock,
  type ClaimContext,
  indexOfBlock,
  pickFree,
  PROBES,
  randomBelow,
} from "../../ipam/block_claim.ts";
import { formatCidr, parseCidr } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { IpamError } from "../../ipam/errors.ts";
import { parsePool } from "../../ipam/pool.ts";
import { startEtcd } from "../helpers/etcd.ts";

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

Deno.test("claimBlock() against a real etcd", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const context = (node: string, random: () => number = Math.random) => {
    const ctx: ClaimContext & { retries: number } = {
      store: createEtcdStore(client, prefix),
      node,
      random,
      now: () => new Date(0),
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
        assert.equal(blocks[0].record.claimedAt, new Date(0).toISOString());
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
      assert.equal(won.cidr.base, first.cidr.base + 32n, "after the probes it walks to the next free block");
    });
  } finally {
    client.close();
  }
});
