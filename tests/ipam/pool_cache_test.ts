// The pool cache against a real etcd: selection by namespace, the watch, the re-read before failing.

import assert from "node:assert/strict";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { IpamError, type IpamErrorKind } from "../../ipam/errors.ts";
import { keysFor } from "../../ipam/keys.ts";
import { PoolCache } from "../../ipam/pool_cache.ts";
import { startEtcd } from "../helpers/etcd.ts";

async function assertIpamError(promise: Promise<unknown>, kind: IpamErrorKind, message: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof IpamError, `expected an IpamError, got ${err}`);
    assert.equal(err.kind, kind, err.message);
    assert.match(err.message, message);
    return true;
  });
}

/** Polls `check` until it holds; the watch delivers asynchronously. */
async function eventually(check: () => Promise<boolean>, what: string) {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`Never happened: ${what}`);
}

Deno.test("PoolCache against a real etcd", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const caches: PoolCache[] = [];
  const setup = async (pools: Record<string, unknown>) => {
    const prefix = etcd.newPrefix();
    const keys = keysFor(prefix);
    const put = (name: string, value: unknown) =>
      client.put(keys.pool(name)).value(typeof value === "string" ? value : JSON.stringify(value));
    for (const [name, value] of Object.entries(pools)) await put(name, value);
    const cache = await PoolCache.open(createEtcdStore(client, prefix));
    caches.push(cache);
    return { cache, keys, put };
  };
  try {
    await t.step("PoolCache.select() takes the namespace's pool, else default", async () => {
      const { cache } = await setup({
        default: { subnets: ["10.1.0.0/16"] },
        dmz: { subnets: ["10.2.0.0/16"], blockSizeBits: 3 },
      });
      assert.equal((await cache.select("dmz")).name, "dmz");
      assert.equal((await cache.select("dmz")).blockSizeBits, 3);
      assert.equal((await cache.select("other")).name, "default");
      assert.equal((await cache.select("")).name, "default");
      assert.equal((await cache.select("default")).name, "default");
    });

    await t.step("PoolCache.select() re-reads etcd before reporting no pool, naming both", async () => {
      const { cache, put } = await setup({});
      await put("fresh", { subnets: ["10.3.0.0/16"] });
      assert.equal((await cache.select("fresh")).name, "fresh");
      await assertIpamError(
        cache.select("other"),
        "no-pool",
        /namespace "other": neither pool "other" nor "default"/,
      );
      await assertIpamError(cache.select(""), "no-pool", /namespace "": no pool "default" exists/);
    });

    await t.step("PoolCache follows pool puts and deletes through its watch", async () => {
      const { cache, keys, put } = await setup({ default: { subnets: ["10.1.0.0/16"] } });
      await put("team", { subnets: ["10.4.0.0/16"] });
      await eventually(async () => (await cache.select("team")).name === "team", "pool team seen");
      await client.delete().key(keys.pool("default"));
      await eventually(
        () =>
          cache.select("other").then(
            () => false,
            (err) => err instanceof IpamError && err.kind === "no-pool",
          ),
        "pool default gone",
      );
    });

    await t.step("PoolCache.select() refuses a corrupt pool instead of falling back to default", async () => {
      const { cache } = await setup({ default: { subnets: ["10.1.0.0/16"] }, bad: "{not json" });
      await assertIpamError(cache.select("bad"), "invalid", /"bad"/);
    });

    await t.step("PoolCache.exists() re-reads a pool missing from the cache", async () => {
      const { cache, put } = await setup({});
      assert.equal(await cache.exists("p"), false);
      await put("p", { subnets: ["10.5.0.0/16"] });
      assert.equal(await cache.exists("p"), true);
    });

    await t.step("PoolCache reads every pool again after etcd ends its watch", async () => {
      const prefix = etcd.newPrefix();
      const keys = keysFor(prefix);
      await client.put(keys.pool("default")).value(JSON.stringify({ subnets: ["10.1.0.0/16"] }));
      const store = createEtcdStore(client, prefix);
      const { revision } = await store.readPools();
      await client.kv.compact({ revision });
      // The first read claims an old revision, so the watch starts in compacted history and is cancelled.
      let reads = 0;
      const cache = await PoolCache.open({
        ...store,
        readPools: async () => ({ ...(await store.readPools()), revision: reads++ === 0 ? "1" : revision }),
      });
      caches.push(cache);
      await client.put(keys.pool("team")).value(JSON.stringify({ subnets: ["10.4.0.0/16"] }));
      await eventually(async () => (await cache.select("team")).name === "team", "pool team seen");
      assert.ok(reads >= 2, "the pools were read again");
    });

    await t.step("PoolCache.close() can be called twice", async () => {
      const { cache } = await setup({});
      await cache.close();
      await cache.close();
    });
  } finally {
    await Promise.all(caches.map((c) => c.close()));
    client.close();
  }
});
