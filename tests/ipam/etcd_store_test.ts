// The etcd store against a real etcd: each decision is one txn whose compares hold or fail as designed.

import assert from "node:assert/strict";
import { parseCidr, parseIp } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { IpamError } from "../../ipam/errors.ts";
import type { AddressRecord, BlockRecord } from "../../ipam/records.ts";
import { startEtcd } from "../helpers/etcd.ts";

const BLOCK = parseCidr("10.1.0.0/27");
const OTHER = parseCidr("10.1.0.32/27");

function blockRecord(node: string): BlockRecord {
  return { node, pool: "default", claimedAt: "2024-01-01T00:00:00.000Z" };
}

function addressRecord(containerId: string): AddressRecord {
  return {
    network: "k8s",
    containerId,
    ifName: "eth0",
    podNamespace: "ns",
    podName: "pod",
    podUid: "uid",
    netns: "/run/netns/x",
    node: "node1",
    pool: "default",
    createdAt: "2024-01-01T00:00:00.000Z",
  };
}

Deno.test("createEtcdStore() against a real etcd", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 2000 });
  const newStore = () => createEtcdStore(client, etcd.newPrefix());
  try {
    await t.step("createEtcdStore() refuses a prefix without a trailing slash", () => {
      assert.throws(() => createEtcdStore(client, "/coil"), (err: unknown) => {
        assert.ok(err instanceof IpamError && err.kind === "invalid");
        assert.match(err.message, /^Invalid etcd prefix "\/coil": it must end with "\/"$/);
        return true;
      });
    });

    await t.step("claimBlock() claims a free block once and tells the loser who won", async () => {
      const store = newStore();
      const first = await store.claimBlock("default", BLOCK, blockRecord("node1"));
      assert.ok(first.claimed);
      assert.deepEqual(first.addresses, []);
      const second = await store.claimBlock("default", BLOCK, blockRecord("node2"));
      assert.deepEqual(second, { claimed: false, owner: blockRecord("node1") });
      assert.deepEqual(await store.claimedBlocks("default"), [BLOCK]);
      const { blocks, bad } = await store.allBlocks();
      assert.deepEqual(bad, []);
      assert.equal(blocks.length, 1);
      assert.deepEqual(blocks[0].cidr, BLOCK);
      assert.equal(blocks[0].record.node, "node1");
      assert.equal(blocks[0].revision, first.revision);
    });

    await t.step("claimBlock() returns the address keys already in the block", async () => {
      const store = newStore();
      const ip = parseIp("10.1.0.7");
      await client.put(store.keys.address(BLOCK, ip)).value(JSON.stringify(addressRecord("c1")));
      await client.put(`${store.keys.addressesOfBlock(BLOCK)}junk`).value("x");
      const outcome = await store.claimBlock("default", BLOCK, blockRecord("node1"));
      assert.ok(outcome.claimed);
      const byKey = new Map(outcome.addresses.map((a) => [a.key, a]));
      assert.deepEqual(byKey.get(store.keys.address(BLOCK, ip))?.ip, ip);
      assert.equal(byKey.get(store.keys.address(BLOCK, ip))?.record?.containerId, "c1");
      assert.equal(byKey.get(`${store.keys.addressesOfBlock(BLOCK)}junk`)?.ip, undefined);
      assert.match(byKey.get(`${store.keys.addressesOfBlock(BLOCK)}junk`)?.problem ?? "", /not an address/);
    });

    await t.step("putAddresses() writes only while every guarded block is unchanged", async () => {
      const store = newStore();
      const claim = await store.claimBlock("default", BLOCK, blockRecord("node1"));
      assert.ok(claim.claimed);
      const guard = { pool: "default", cidr: BLOCK, revision: claim.revision };
      const a1 = { block: BLOCK, ip: parseIp("10.1.0.1"), record: addressRecord("c1") };
      const put = await store.putAddresses([guard], [a1]);
      assert.ok(put.ok);
      assert.deepEqual(JSON.parse((await client.get(store.keys.address(BLOCK, a1.ip)).string())!), a1.record);

      // The same address again: its CreateRevision is no longer 0.
      const again = await store.putAddresses([guard], [{ ...a1, record: addressRecord("c2") }]);
      assert.ok(!again.ok);
      assert.deepEqual(again.states[0].block?.revision, claim.revision);
      assert.deepEqual(again.states[0].addresses.map((a) => a.record?.containerId), ["c1"]);

      // The block deleted behind our back: the guard fails and the state says it is gone.
      await client.delete().key(store.keys.block("default", BLOCK));
      const a2 = { block: BLOCK, ip: parseIp("10.1.0.2"), record: addressRecord("c3") };
      const lost = await store.putAddresses([guard], [a2]);
      assert.ok(!lost.ok);
      assert.equal(lost.states[0].block, undefined);
      assert.equal(await client.get(store.keys.address(BLOCK, a2.ip)).exists(), false);
    });

    await t.step("putAddresses() writes a dual-stack pair in one txn or neither", async () => {
      const store = newStore();
      const v6 = parseCidr("fd00::/123");
      const c4 = await store.claimBlock("default", BLOCK, blockRecord("node1"));
      const c6 = await store.claimBlock("default", v6, blockRecord("node1"));
      assert.ok(c4.claimed && c6.claimed);
      const guards = [
        { pool: "default", cidr: BLOCK, revision: c4.revision },
        { pool: "default", cidr: v6, revision: "1" },
      ];
      const pair = [
        { block: BLOCK, ip: parseIp("10.1.0.3"), record: addressRecord("c1") },
        { block: v6, ip: parseIp("fd00::3"), record: addressRecord("c1") },
      ];
      const stale = await store.putAddresses(guards, pair);
      assert.ok(!stale.ok);
      assert.equal(stale.states.length, 2);
      assert.equal(await client.get(store.keys.address(BLOCK, pair[0].ip)).exists(), false);
      guards[1].revision = c6.revision;
      assert.ok((await store.putAddresses(guards, pair)).ok);
      assert.ok(await client.get(store.keys.address(v6, pair[1].ip)).exists());
    });

    await t.step("releaseAddresses() deletes unchanged keys and leaves rewritten ones", async () => {
      const store = newStore();
      const claim = await store.claimBlock("default", BLOCK, blockRecord("node1"));
      assert.ok(claim.claimed);
      const guard = { pool: "default", cidr: BLOCK, revision: claim.revision };
      const ips = [parseIp("10.1.0.1"), parseIp("10.1.0.2")];
      const put = await store.putAddresses(
        [guard],
        ips.map((ip) => ({ block: BLOCK, ip, record: addressRecord("c") })),
      );
      assert.ok(put.ok);
      const stored = ips.map((ip) => ({ key: store.keys.address(BLOCK, ip), revision: put.revision }));
      await client.put(stored[1].key).value(JSON.stringify(addressRecord("other")));
      assert.deepEqual(await store.releaseAddresses(stored), [stored[1].key]);
      assert.equal(await client.get(stored[0].key).exists(), false);
      assert.equal(await client.get(stored[1].key).exists(), true);
      await client.delete().key(stored[1].key);
      assert.deepEqual(await store.releaseAddresses(stored), [], "keys already gone count as released");
    });

    await t.step(
      "fenceBlock() moves the block's revision so a write comparing the old one fails",
      async () => {
        const store = newStore();
        const claim = await store.claimBlock("default", BLOCK, blockRecord("node1"));
        assert.ok(claim.claimed);
        const guard = { pool: "default", cidr: BLOCK, revision: claim.revision };
        const a1 = { block: BLOCK, ip: parseIp("10.1.0.1"), record: addressRecord("c1") };
        assert.ok((await store.putAddresses([guard], [a1])).ok);

        const fence = await store.fenceBlock(guard);
        assert.ok(fence.fenced);
        const moved = fence.state.block?.revision;
        assert.ok(moved && BigInt(moved) > BigInt(claim.revision), `revision ${moved}`);
        assert.deepEqual(fence.state.block?.record, blockRecord("node1"), "the owner record is kept");
        assert.deepEqual(fence.state.addresses.map((a) => a.record?.containerId), ["c1"]);
        const kv = await client.get(store.keys.block("default", BLOCK)).exec();
        assert.equal(kv.kvs[0].mod_revision, moved);
        assert.equal(kv.kvs[0].create_revision, claim.revision);

        // A write still in flight with the old revision can no longer commit.
        const a2 = { block: BLOCK, ip: parseIp("10.1.0.2"), record: addressRecord("c2") };
        assert.ok(!(await store.putAddresses([guard], [a2])).ok);
        assert.equal(await client.get(store.keys.address(BLOCK, a2.ip)).exists(), false);

        // A stale fence changes nothing and reads the block as it is; a fence of a gone block reads nothing.
        const stale = await store.fenceBlock(guard);
        assert.ok(!stale.fenced);
        assert.equal(stale.state.block?.revision, moved);
        await client.delete().key(store.keys.block("default", BLOCK));
        const gone = await store.fenceBlock({ ...guard, revision: moved });
        assert.ok(!gone.fenced);
        assert.equal(gone.state.block, undefined);
        assert.equal(await client.get(store.keys.block("default", BLOCK)).exists(), false);
      },
    );

    await t.step("releaseBlock() needs an unchanged block key and an empty address range", async () => {
      const store = newStore();
      const claim = await store.claimBlock("default", BLOCK, blockRecord("node1"));
      const neighbour = await store.claimBlock("default", OTHER, blockRecord("node1"));
      assert.ok(claim.claimed && neighbour.claimed);
      // An address of the neighbouring block is outside this block's range.
      await client.put(store.keys.address(OTHER, parseIp("10.1.0.33"))).value(
        JSON.stringify(addressRecord("n")),
      );
      const key = store.keys.address(BLOCK, parseIp("10.1.0.9"));
      await client.put(key).value(JSON.stringify(addressRecord("hand")));

      const busy = await store.releaseBlock({ pool: "default", cidr: BLOCK, revision: claim.revision });
      assert.ok(!busy.released);
      assert.deepEqual(busy.state.addresses.map((a) => a.key), [key]);
      assert.equal(busy.state.block?.revision, claim.revision);
      await client.delete().key(key);

      const stale = await store.releaseBlock({ pool: "default", cidr: BLOCK, revision: "1" });
      assert.ok(!stale.released);
      assert.ok(await client.get(store.keys.block("default", BLOCK)).exists());

      const done = await store.releaseBlock({ pool: "default", cidr: BLOCK, revision: claim.revision });
      assert.ok(done.released);
      assert.equal(await client.get(store.keys.block("default", BLOCK)).exists(), false);
      assert.deepEqual(await store.claimedBlocks("default"), [OTHER]);
    });

    await t.step("allBlocks() reports keys that are not blocks and corrupt owners", async () => {
      const store = newStore();
      await client.put(`${store.keys.blocks()}default/not-a-cidr`).value("{}");
      await client.put(store.keys.block("default", BLOCK)).value("{");
      await client.put(store.keys.block("default", OTHER)).value(JSON.stringify(blockRecord("n2")));
      const { blocks, bad } = await store.allBlocks();
      assert.deepEqual(blocks.map((b) => b.cidr), [OTHER]);
      assert.deepEqual(bad.map((b) => b.key).sort(), [
        `${store.keys.blocks()}default/10.1.0.0_27`,
        `${store.keys.blocks()}default/not-a-cidr`,
      ]);
    });

    await t.step("readPools() and watchPools() see pool puts and deletes", async () => {
      const store = newStore();
      await client.put(store.keys.pool("default")).value('{"subnets":["10.1.0.0/16"]}');
      await client.put(store.keys.poolsRevision()).value("1");
      const { values, revision } = await store.readPools();
      assert.deepEqual([...values.keys()], ["default"]);
      assert.equal(await store.readPool("default"), '{"subnets":["10.1.0.0/16"]}');
      assert.equal(await store.readPool("missing"), undefined);
      const seen: [string, string | undefined][] = [];
      const stop = await store.watchPools(revision, (name, value) => seen.push([name, value]), assert.fail);
      try {
        await client.put(store.keys.pool("dmz")).value("v");
        await client.delete().key(store.keys.pool("default"));
        while (seen.length < 2) await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(seen, [["dmz", "v"], ["default", undefined]]);
      } finally {
        await stop();
      }
    });

    await t.step("watchPools() reports a watch that etcd cancels (its revision was compacted)", async () => {
      const store = newStore();
      for (let i = 0; i < 3; i++) await client.put(store.keys.pool("p")).value(String(i));
      const { revision } = await store.readPools();
      await client.kv.compact({ revision });
      let lost: Error | undefined;
      const stop = await store.watchPools("1", () => {}, (err) => lost = err);
      try {
        while (!lost) await new Promise((r) => setTimeout(r, 20));
        assert.match(lost.message, /canceled/);
      } finally {
        await stop();
      }
    });

    await t.step("every method rejects with kind unavailable when etcd is down", async () => {
      const store = newStore();
      await etcd.stop();
      const calls: [string, () => Promise<unknown>][] = [
        ["readPools", () => store.readPools()],
        ["claimBlock", () => store.claimBlock("default", BLOCK, blockRecord("n"))],
        ["claimedBlocks", () => store.claimedBlocks("default")],
        ["releaseBlock", () => store.releaseBlock({ pool: "default", cidr: BLOCK, revision: "1" })],
        ["fenceBlock", () => store.fenceBlock({ pool: "default", cidr: BLOCK, revision: "1" })],
      ];
      for (const [name, call] of calls) {
        await assert.rejects(call(), (err: unknown) => {
          assert.ok(err instanceof IpamError && err.kind === "unavailable", `${name}: ${err}`);
          return true;
        });
      }
    });
  } finally {
    client.close();
  }
});
