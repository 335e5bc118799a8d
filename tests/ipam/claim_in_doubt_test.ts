// Block claims whose outcome the node never heard (the reply lost in a partition, or the request
// delivered after the caller gave up): the block must end up known to the node or not claimed at all,
// never owned in etcd by a node that does not know it (it would be neither used nor released).

import assert from "node:assert/strict";
import { formatCidr } from "../../ipam/cidr.ts";
import { createNodeIpam, type NodeIpam } from "../../ipam/node_ipam.ts";
import { gate, MemoryStore } from "../helpers/memory_store.ts";
import { assertIpamError, ips, request } from "./node_ipam_fixture.ts";

/** Pool "default" (a /24 in blocks of 32), a NodeIpam whose claims pick from `picks`, closed after `fn`. */
async function withIpam(picks: number[], fn: (ipam: NodeIpam, store: MemoryStore) => Promise<void>) {
  const store = new MemoryStore();
  store.put(store.keys.pool("default"), JSON.stringify({ subnets: ["10.1.0.0/24"], blockSizeBits: 5 }));
  const ipam = await createNodeIpam({ store, node: "node1", random: () => picks.shift() ?? 0.5 });
  try {
    await fn(ipam, store);
  } finally {
    await ipam.close();
  }
}

/** The blocks node1 owns in the store, as block ids (`10.1.0.0_27`). */
function storedBlocks(store: MemoryStore): string[] {
  const prefix = store.keys.blocksOfPool("default");
  return store.keysUnder(prefix)
    .filter((k) => JSON.parse(store.get(k)!).node === "node1")
    .map((k) => k.slice(prefix.length));
}

function knownBlocks(ipam: NodeIpam): string[] {
  return ipam.ownedBlocks().map((b) => formatCidr(b.block).replace("/", "_"));
}

Deno.test("NodeIpam with block claims in doubt", async (t) => {
  await t.step("a claim that committed then timed out is adopted by the next request", async () => {
    await withIpam([0, 0.9], async (ipam, store) => {
      store.inject("claimBlock", { kind: "commit-then-timeout" });
      await assertIpamError(ipam.allocate(request("c1")), "unavailable");
      assert.deepEqual(storedBlocks(store), ["10.1.0.0_27"], "the claim committed");
      const again = await ipam.allocate(request("c1"));
      assert.deepEqual(ips(again), ["10.1.0.1"]);
      assert.deepEqual(knownBlocks(ipam), storedBlocks(store));
    });
  });

  await t.step("a claim delivered after its caller gave up finds the block claimed already", async () => {
    await withIpam([0, 0.9], async (ipam, store) => {
      const late = gate();
      const applied = store.inject("claimBlock", { kind: "late", until: late.until });
      await assertIpamError(ipam.allocate(request("c1")), "unavailable");
      const again = await ipam.allocate(request("c1"));
      late.open();
      assert.deepEqual(await applied, { claimed: false, owner: JSON.parse(store.get(blockKey(store))!) });
      assert.deepEqual(ips(again), ["10.1.0.1"]);
      assert.deepEqual(knownBlocks(ipam), storedBlocks(store));
    });
  });

  await t.step("a claim in doubt that another node won is left to it", async () => {
    await withIpam([0, 0.9], async (ipam, store) => {
      store.inject("claimBlock", { kind: "unavailable" });
      await assertIpamError(ipam.allocate(request("c1")), "unavailable");
      const other = { node: "node2", pool: "default", claimedAt: new Date().toISOString() };
      store.put(blockKey(store), JSON.stringify(other));
      const again = await ipam.allocate(request("c1"));
      assert.deepEqual(ips(again), ["10.1.0.225"]);
      assert.deepEqual(knownBlocks(ipam), ["10.1.0.224_27"]);
      assert.equal(JSON.parse(store.get(blockKey(store))!).node, "node2");
    });
  });

  await t.step("a settle of a claim in doubt that fails answers unavailable and stays in doubt", async () => {
    await withIpam([0, 0.9], async (ipam, store) => {
      store.inject("claimBlock", { kind: "commit-then-timeout" });
      await assertIpamError(ipam.allocate(request("c1")), "unavailable");
      store.inject("claimBlock", { kind: "unavailable" });
      await assertIpamError(ipam.allocate(request("c2")), "unavailable");
      const again = await ipam.allocate(request("c2"));
      assert.deepEqual(ips(again), ["10.1.0.1"]);
      assert.deepEqual(knownBlocks(ipam), storedBlocks(store));
    });
  });
});

Deno.test("a request that joined a spare claim etcd did not answer fails with it, not one deadline later", async () => {
  const store = new MemoryStore();
  // Blocks of 4 addresses hold 2 pods: the second pod leaves none free, which starts the spare claim.
  store.put(store.keys.pool("default"), JSON.stringify({ subnets: ["10.1.0.0/24"], blockSizeBits: 2 }));
  const ipam = await createNodeIpam({ store, node: "node1", random: () => 0.5 });
  try {
    await ipam.allocate(request("c1"));
    const answer = gate();
    store.inject("claimBlock", { kind: "commit-then-timeout", until: answer.until });
    await ipam.allocate(request("c2"));
    const claimsBefore = store.calls.filter((m) => m === "claimBlock").length;
    const third = ipam.allocate(request("c3"));
    answer.open();
    await assertIpamError(third, "unavailable");
    assert.equal(
      store.calls.filter((m) => m === "claimBlock").length,
      claimsBefore,
      "no second claim after the spare claim went unanswered",
    );
  } finally {
    await ipam.close();
  }
});

/** The key of the first block, the one the first claim picks (random 0). */
function blockKey(store: MemoryStore): string {
  return `${store.keys.blocksOfPool("default")}10.1.0.0_27`;
}
