// PoolStore against a real etcd: the overlap check across pools holds under concurrent creates, and a
// pool goes with its empty blocks but not while one of its blocks holds an address.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { parseCidr, parseIp } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { IpamError, type IpamErrorKind } from "../../ipam/errors.ts";
import { keysFor } from "../../ipam/keys.ts";
import { parsePool, type Pool, poolToJson } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import type { BlockRecord } from "../../ipam/records.ts";
import { startEtcd } from "../helpers/etcd.ts";

function pool(name: string, subnets: string[], blockSizeBits = 5): Pool {
  return parsePool(name, { subnets, blockSizeBits });
}

async function assertRejects(promise: Promise<unknown>, kind: IpamErrorKind, message: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof IpamError, `expected an IpamError, got ${err}`);
    assert.equal(err.kind, kind, err.message);
    assert.match(err.message, message);
    return true;
  });
}

async function claimBlock(client: Etcd3, prefix: string, poolName: string, block: string, node: string) {
  const record: BlockRecord = { node, pool: poolName, claimedAt: new Date(0).toISOString() };
  await client.put(keysFor(prefix).block(poolName, parseCidr(block))).value(JSON.stringify(record));
}

Deno.test("PoolStore against a real etcd", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  try {
    const newStore = () => {
      const prefix = etcd.newPrefix();
      return { prefix, keys: keysFor(prefix), store: new PoolStore(client, prefix) };
    };

    await t.step(
      "PoolStore.createPool() stores a pool that getPool() and listPools() read back",
      async () => {
        const { store, keys } = newStore();
        await store.createPool(pool("default", ["10.1.0.0/16", "fd00::/48"]));
        await store.createPool(pool("dmz", ["203.0.113.0/24"], 2));
        assert.deepEqual(await store.getPool("dmz"), pool("dmz", ["203.0.113.0/24"], 2));
        assert.deepEqual(await store.listPools(), [
          pool("default", ["10.1.0.0/16", "fd00::/48"]),
          pool("dmz", ["203.0.113.0/24"], 2),
        ]);
        assert.equal(
          await client.get(keys.pool("dmz")).string(),
          '{"subnets":["203.0.113.0/24"],"blockSizeBits":2}',
        );
        assert.ok(await client.get(keys.poolsRevision()).exists(), "every change bumps the pools revision");
      },
    );

    await t.step(
      "PoolStore.createPool() refuses an existing name and overlaps with other pools",
      async (t) => {
        const { store } = newStore();
        await store.createPool(pool("a", ["10.1.0.0/16"]));
        await t.step("same name", async () => {
          await assertRejects(
            store.createPool(pool("a", ["10.9.0.0/16"])),
            "conflict",
            /pool "a": it already exists/,
          );
        });
        await t.step("subnet inside another pool's", async () => {
          await assertRejects(
            store.createPool(pool("b", ["10.2.0.0/16", "10.1.64.0/18"])),
            "conflict",
            /^Cannot create pool "b": subnet 10\.1\.64\.0\/18 overlaps 10\.1\.0\.0\/16 of pool "a"$/,
          );
        });
        await t.step("subnet around another pool's", async () => {
          await assertRejects(
            store.createPool(pool("b", ["10.0.0.0/8"])),
            "conflict",
            /overlaps 10\.1\.0\.0\/16/,
          );
        });
        await t.step("an invalid definition never reaches etcd", async () => {
          const bad: Pool = { name: "c", subnets: [parseCidr("10.3.0.0/30")], blockSizeBits: 5 };
          await assertRejects(store.createPool(bad), "invalid", /smaller than one block/);
        });
        assert.deepEqual((await store.listPools()).map((p) => p.name), ["a"]);
      },
    );

    await t.step(
      "PoolStore.createPool() lets only one of many concurrent overlapping creates win",
      async () => {
        const { store, prefix } = newStore();
        // Separate clients, so the creates really interleave instead of queueing on one connection.
        const clients = await Promise.all(
          Array.from({ length: 8 }, () => connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" })),
        );
        try {
          // Pairwise overlapping: every one holds 10.0.0.128.
          const subnets = ["10.0.0.0/16", "10.0.0.0/17", "10.0.0.128/25", "10.0.0.0/24"];
          const results = await Promise.allSettled(
            clients.map((c, i) =>
              new PoolStore(c, prefix).createPool(pool(`p${i}`, [subnets[i % subnets.length]]))
            ),
          );
          const won = results.filter((r) => r.status === "fulfilled");
          const lost = results.filter((r) => r.status === "rejected");
          assert.equal(won.length, 1, `exactly one create wins: ${JSON.stringify(results)}`);
          for (const r of lost) {
            assert.ok(r.reason instanceof IpamError && r.reason.kind === "conflict", String(r.reason));
          }
          assert.equal((await store.listPools()).length, 1);
        } finally {
          for (const c of clients) c.close();
        }
      },
    );

    await t.step("PoolStore.createPool() lets concurrent disjoint creates all win by retrying", async () => {
      const { store, prefix } = newStore();
      const clients = await Promise.all(
        Array.from({ length: 8 }, () => connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" })),
      );
      try {
        await Promise.all(
          clients.map((c, i) => new PoolStore(c, prefix).createPool(pool(`p${i}`, [`10.${i}.0.0/16`]))),
        );
        assert.equal((await store.listPools()).length, 8);
      } finally {
        for (const c of clients) c.close();
      }
    });

    await t.step(
      "PoolStore.addSubnet() appends a subnet, keeps the block size and refuses overlaps",
      async (t) => {
        const { store } = newStore();
        await store.createPool(pool("a", ["10.1.0.0/16"], 3));
        await store.createPool(pool("b", ["10.2.0.0/16"]));
        await t.step("appends", async () => {
          const grown = await store.addSubnet("a", "fd00::/48");
          assert.deepEqual(grown, pool("a", ["10.1.0.0/16", "fd00::/48"], 3));
          assert.deepEqual(await store.getPool("a"), grown);
        });
        await t.step("overlap with another pool", async () => {
          await assertRejects(
            store.addSubnet("a", "10.2.1.0/24"),
            "conflict",
            /^Cannot add subnet 10\.2\.1\.0\/24 to pool "a": subnet 10\.2\.1\.0\/24 overlaps 10\.2\.0\.0\/16 of pool "b"$/,
          );
        });
        await t.step("overlap with its own pool", async () => {
          await assertRejects(
            store.addSubnet("a", "10.1.2.0/24"),
            "conflict",
            /overlaps 10\.1\.0\.0\/16 of that pool/,
          );
        });
        await t.step("malformed subnet", async () => {
          await assertRejects(
            store.addSubnet("a", "10.3.0.1/16"),
            "invalid",
            /did you mean "10\.3\.0\.0\/16"/,
          );
        });
        await t.step("subnet smaller than a block", async () => {
          await assertRejects(
            store.addSubnet("a", "10.3.0.0/30"),
            "invalid",
            /smaller than one block of 2\^3/,
          );
        });
        await t.step("missing pool", async () => {
          await assertRejects(store.addSubnet("nope", "10.3.0.0/16"), "not-found", /^Pool "nope" not found$/);
        });
        assert.deepEqual(await store.getPool("a"), pool("a", ["10.1.0.0/16", "fd00::/48"], 3));
      },
    );

    await t.step("PoolStore.addSubnet() run concurrently on one pool keeps every subnet", async () => {
      const { store, prefix } = newStore();
      await store.createPool(pool("a", ["10.0.0.0/16"]));
      const clients = await Promise.all(
        Array.from({ length: 6 }, () => connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" })),
      );
      try {
        await Promise.all(
          clients.map((c, i) => new PoolStore(c, prefix).addSubnet("a", `10.${i + 1}.0.0/16`)),
        );
      } finally {
        for (const c of clients) c.close();
      }
      const subnets = (await store.getPool("a")).subnets;
      assert.equal(subnets.length, 7, "no update was lost");
    });

    await t.step("PoolStore.getPool() reports a missing pool and a corrupt value by key", async () => {
      const { store, keys } = newStore();
      await assertRejects(store.getPool("nope"), "not-found", /^Pool "nope" not found$/);
      await assertRejects(store.getPool("Bad"), "invalid", /^Invalid pool name "Bad"/);
      await client.put(keys.pool("broken")).value('{"subnets":["10.0.0.1/8"]}');
      await assertRejects(
        store.getPool("broken"),
        "invalid",
        /^Invalid pool "broken": subnet "10\.0\.0\.1\/8"/,
      );
      await assertRejects(
        store.listPools(),
        "invalid",
        /^Corrupt pool at "\/t-.*\/pools\/broken": Invalid pool/,
      );
    });

    await t.step("PoolStore.deletePool() deletes a pool without blocks, even a corrupt one", async () => {
      const { store, keys } = newStore();
      await store.createPool(pool("a", ["10.1.0.0/16"]));
      await client.put(keys.pool("broken")).value("not json");
      await store.deletePool("a");
      await store.deletePool("broken");
      assert.deepEqual(await store.listPools(), []);
      await assertRejects(store.deletePool("a"), "not-found", /^Pool "a" not found$/);
      // The subnets are free again.
      await store.createPool(pool("b", ["10.1.0.0/16"]));
    });

    await t.step("PoolStore.deletePool() refuses while a block of the pool holds an address", async () => {
      const { store, prefix, keys } = newStore();
      await store.createPool(pool("a", ["10.1.0.0/16"]));
      await store.createPool(pool("ab", ["10.2.0.0/16"]));
      await claimBlock(client, prefix, "a", "10.1.0.32/27", "node2");
      await claimBlock(client, prefix, "a", "10.1.0.0/27", "node1");
      await claimBlock(client, prefix, "a", "10.1.0.64/27", "node1");
      await claimBlock(client, prefix, "ab", "10.2.0.0/27", "node3");
      const used = keys.address(parseCidr("10.1.0.32/27"), parseIp("10.1.0.33"));
      await client.put(used).value("{}");
      await client.put(keys.address(parseCidr("10.1.0.64/27"), parseIp("10.1.0.65"))).value("{}");
      await assertRejects(
        store.deletePool("a"),
        "conflict",
        /^Cannot delete pool "a": 2 block\(s\) still hold addresses, claimed by node1, node2; delete the pods/,
      );
      assert.ok(await client.get(keys.pool("a")).exists());
      assert.equal((await client.getAll().prefix(keys.blocksOfPool("a")).keys()).length, 3);

      // Blocks of pool "a" do not hold up "ab", whose name merely starts with "a"; its empty block goes too.
      await store.deletePool("ab");
      assert.deepEqual(await client.getAll().prefix(keys.blocksOfPool("ab")).keys(), []);
      await client.delete().prefix(keys.addresses());
      await store.deletePool("a");
      assert.deepEqual(await store.listPools(), []);
      assert.deepEqual(await client.getAll().prefix(keys.blocks()).keys(), []);
    });

    await t.step("PoolStore.deletePool() deletes more empty blocks than one txn can guard", async () => {
      const { store, prefix, keys } = newStore();
      await store.createPool(pool("a", ["10.1.0.0/16"]));
      for (let i = 0; i < 130; i++) await claimBlock(client, prefix, "a", `10.1.${i}.0/27`, `node${i % 7}`);
      await store.deletePool("a");
      assert.deepEqual(await client.getAll().prefix(keys.blocks()).keys(), []);
      assert.deepEqual(await store.listPools(), []);
    });

    await t.step("PoolStore reports etcd failures as unavailable", async () => {
      const dead = await connectEtcd({ endpoints: ["http://127.0.0.1:1"], prefix: "/", callTimeoutMs: 2000 });
      try {
        const store = new PoolStore(dead, "/coil/");
        await assertRejects(store.listPools(), "unavailable", /^etcd is unreachable: /);
        await assertRejects(
          store.createPool(pool("a", ["10.1.0.0/16"])),
          "unavailable",
          /etcd is unreachable/,
        );
        await assertRejects(store.deletePool("a"), "unavailable", /etcd is unreachable/);
      } finally {
        dead.close();
      }
    });

    await t.step("PoolStore stores what poolToJson() writes", async () => {
      const { store, keys } = newStore();
      const p = pool("a", ["fd00::/48"], 8);
      await store.createPool(p);
      assert.equal(await client.get(keys.pool("a")).string(), poolToJson(p));
    });
  } finally {
    client.close();
  }
});
