// The per-node block index (ipam/node_block_index.ts) against a real etcd: every txn that creates or
// deletes a block keeps it, a start reads only the node's own blocks once it is complete, data from before
// the index is loaded by one scan that builds it, and stale entries are dropped. One fault path (the
// index write failing at start) runs over the in-memory store.

import assert from "node:assert/strict";
import { formatCidr, parseCidr } from "../../ipam/cidr.ts";
import type { IpamStore } from "../../ipam/ipam_store.ts";
import { nodeIndexKeys } from "../../ipam/node_block_index.ts";
import { createNodeIpam } from "../../ipam/node_ipam.ts";
import { removeNode } from "../../ipam/node_removal.ts";
import { MemoryStore } from "../helpers/memory_store.ts";
import { request, startNodeIpamFixture } from "./node_ipam_fixture.ts";

/** `store` with every call recorded as `method args…` (a spy over the real store, not a fake). */
function recording(store: IpamStore): { store: IpamStore; calls: string[] } {
  const calls: string[] = [];
  const spy = new Proxy(store, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        const shown = args.map((a) => typeof a === "object" && a && "base" in a ? formatCidr(a as never) : a);
        calls.push([String(name), ...shown.filter((a) => typeof a === "string")].join(" "));
        return value.apply(target, args);
      };
    },
  });
  return { store: spy, calls };
}

const BLOCK_RECORD = (node: string) =>
  JSON.stringify({ node, pool: "default", claimedAt: "2024-01-01T00:00:00Z" });

Deno.test("node block index against a real etcd", async (t) => {
  await using fx = await startNodeIpamFixture();

  await t.step("createNodeIpam() with a complete index reads only the node's own blocks", async () => {
    const s = await fx.setup({ default: ["10.1.0.0/22"] });
    const node1 = await s.open("node1");
    const node2 = await s.open("node2");
    for (let i = 0; i < 40; i++) await node1.allocate(request(`a${i}`));
    for (let i = 0; i < 40; i++) await node2.allocate(request(`b${i}`));
    await Promise.all([node1.settled(), node2.settled()]);
    const own = node1.ownedBlocks().map((b) => formatCidr(b.block)).sort();
    const theirs = node2.ownedBlocks().map((b) => formatCidr(b.block));
    assert.ok(own.length >= 2 && theirs.length >= 2);

    const { store, calls } = recording(s.store);
    const again = await createNodeIpam({ store, node: "node1" });
    try {
      assert.deepEqual(again.ownedBlocks().map((b) => formatCidr(b.block)).sort(), own);
      assert.equal(again.allocations().length, 40);
      assert.ok(!calls.some((c) => c.startsWith("allBlocks")), calls.join("; "));
      const read = calls.filter((c) => c.startsWith("readBlock")).map((c) => c.split(" ")[2]).sort();
      assert.deepEqual(read, own);
      assert.ok(!calls.some((c) => c.startsWith("updateNodeIndex")), "nothing to fix: no write");
    } finally {
      await again.close();
    }
  });

  await t.step("createNodeIpam() on data without an index scans once and builds the index", async () => {
    const s = await fx.setup({ default: ["10.1.0.0/24"] });
    const ours = parseCidr("10.1.0.32/27");
    const other = parseCidr("10.1.0.64/27");
    // As an older coild left it: block keys and an address, no index.
    await fx.client.put(s.keys.block("default", ours)).value(BLOCK_RECORD("node1"));
    await fx.client.put(s.keys.block("default", other)).value(BLOCK_RECORD("node2"));
    const address = { ...request("old"), node: "node1", pool: "default", createdAt: "2024-01-01T00:00:00Z" };
    await fx.client.put(`${s.keys.addressesOfBlock(ours)}10.1.0.33`).value(JSON.stringify(address));

    const first = recording(s.store);
    const upgraded = await createNodeIpam({ store: first.store, node: "node1" });
    await upgraded.close();
    assert.ok(first.calls.some((c) => c.startsWith("allBlocks")));
    assert.deepEqual(upgraded.ownedBlocks().map((b) => formatCidr(b.block)), ["10.1.0.32/27"]);
    assert.equal(upgraded.find("k8s", "old", "eth0")?.addresses.length, 1);
    const index = nodeIndexKeys(s.prefix);
    assert.deepEqual(await fx.client.getAll().prefix(index.entries("node1")).keys(), [
      index.entry("node1", "default", ours),
    ]);
    assert.ok(await fx.client.get(index.complete("node1")).exists());

    const second = recording(s.store);
    const restarted = await createNodeIpam({ store: second.store, node: "node1" });
    await restarted.close();
    assert.ok(!second.calls.some((c) => c.startsWith("allBlocks")), second.calls.join("; "));
    assert.deepEqual(restarted.ownedBlocks().map((b) => formatCidr(b.block)), ["10.1.0.32/27"]);
    assert.equal(restarted.find("k8s", "old", "eth0")?.addresses.length, 1);
  });

  await t.step(
    "claimBlock(), releaseBlock() and removeBlock() keep the owner's entry in their txn",
    async () => {
      const s = await fx.setup({ default: ["10.1.0.0/24"] });
      const index = nodeIndexKeys(s.prefix);
      const block = parseCidr("10.1.0.0/27");
      const record = { node: "node1", pool: "default", claimedAt: "2024-01-01T00:00:00Z" };
      const claim = await s.store.claimBlock("default", block, record);
      assert.ok(claim.claimed);
      const entry = index.entry("node1", "default", block);
      const entryKv = await fx.client.get(entry).exists();
      assert.ok(entryKv);
      const lost = await s.store.claimBlock("default", block, { ...record, node: "node2" });
      assert.equal(lost.claimed, false);
      assert.ok(!await fx.client.get(index.entry("node2", "default", block)).exists());

      // A release with a stale revision changes nothing, the entry included.
      const stale = await s.store.releaseBlock({ pool: "default", cidr: block, revision: "1" });
      assert.equal(stale.released, false);
      assert.ok(await fx.client.get(entry).exists());
      assert.deepEqual(
        await s.store.releaseBlock({ pool: "default", cidr: block, revision: claim.revision }),
        {
          released: true,
        },
      );
      assert.ok(!await fx.client.get(entry).exists());

      const again = await s.store.claimBlock("default", block, record);
      assert.ok(again.claimed);
      const removed = await s.store.removeBlock({ pool: "default", cidr: block, revision: again.revision });
      assert.deepEqual(removed, { removed: true, addresses: 0 });
      assert.ok(!await fx.client.get(entry).exists());
    },
  );

  await t.step("removeNode() leaves no index entry of the removed node", async () => {
    const s = await fx.setup({ default: ["10.1.0.0/24"] });
    const node = await createNodeIpam({ store: s.store, node: "gone" });
    for (let i = 0; i < 40; i++) await node.allocate(request(`g${i}`));
    await node.close();
    const index = nodeIndexKeys(s.prefix);
    assert.ok(Number(await fx.client.getAll().prefix(index.entries("gone")).count()) >= 2);
    const removal = await removeNode(fx.client, s.prefix, "gone");
    assert.ok(removal.blocks.length >= 2);
    assert.equal(Number(await fx.client.getAll().prefix(index.entries("gone")).count()), 0);
  });

  await t.step("createNodeIpam() drops index entries of blocks that are gone or someone else's", async () => {
    const s = await fx.setup({ default: ["10.1.0.0/24"] });
    const index = nodeIndexKeys(s.prefix);
    const node1 = await s.open("node1");
    await node1.allocate(request("c1"));
    await node1.settled();
    const [{ block: kept }] = node1.ownedBlocks();
    await node1.close();
    // An older admin deleted a block without its entry; another node owns the second entry's block.
    const [gone, taken] = ["10.1.0.0/27", "10.1.0.128/27", "10.1.0.160/27"]
      .filter((c) => c !== formatCidr(kept)).map((c) => parseCidr(c));
    await fx.client.put(index.entry("node1", "default", gone)).value("");
    await fx.client.put(index.entry("node1", "default", taken)).value("");
    await fx.client.put(s.keys.block("default", taken)).value(BLOCK_RECORD("node2"));
    await fx.client.put(`${index.entries("node1")}junk`).value("");
    const events: Record<string, unknown>[] = [];
    const again = await createNodeIpam({ store: s.store, node: "node1", log: (e) => events.push(e) });
    await again.close();
    assert.deepEqual(again.ownedBlocks().map((b) => formatCidr(b.block)), [formatCidr(kept)]);
    assert.deepEqual(await fx.client.getAll().prefix(index.entries("node1")).keys(), [
      index.entry("node1", "default", kept),
    ]);
    assert.ok(events.some((e) => e.event === "bad node index key"));
  });
});

Deno.test("createNodeIpam() loads its blocks when writing the index fails, and builds it next time", async () => {
  const store = new MemoryStore();
  store.put(store.keys.pool("default"), JSON.stringify({ subnets: ["10.1.0.0/24"], blockSizeBits: 5 }));
  const block = parseCidr("10.1.0.0/27");
  store.put(store.keys.block("default", block), BLOCK_RECORD("node1"));
  store.inject("updateNodeIndex", { kind: "unavailable" });
  const events: Record<string, unknown>[] = [];
  const first = await createNodeIpam({ store, node: "node1", log: (e) => events.push(e) });
  await first.close();
  assert.deepEqual(first.ownedBlocks().map((b) => formatCidr(b.block)), ["10.1.0.0/27"]);
  assert.ok(events.some((e) => e.event === "node index update failed"));
  assert.equal(store.get(store.indexKeys.complete("node1")), undefined);

  const second = await createNodeIpam({ store, node: "node1" });
  await second.close();
  assert.deepEqual(second.ownedBlocks().map((b) => formatCidr(b.block)), ["10.1.0.0/27"]);
  assert.deepEqual(store.calls.filter((c) => c === "allBlocks").length, 2);
  assert.deepEqual(store.keysUnder(store.indexKeys.entries("node1")), [
    store.indexKeys.entry("node1", "default", block),
  ]);
});
