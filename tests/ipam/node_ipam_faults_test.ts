// NodeIpam over an in-memory store, call by call: writes that commit and then time out, writes that
// commit after their caller gave up, settles that fail or find the block changed or gone, and blocks
// removed behind the node's back. The real-etcd tests show the etcd store keeps the same promises.

import assert from "node:assert/strict";
import { formatCidr } from "../../ipam/cidr.ts";
import { createNodeIpam, type NodeIpam, type NodeIpamOptions } from "../../ipam/node_ipam.ts";
import { gate, MemoryStore } from "../helpers/memory_store.ts";
import { assertIpamError, ips, request } from "./node_ipam_fixture.ts";

/** A store holding pool "default" (a /24 in blocks of 32) and a NodeIpam over it, closed after `fn`. */
async function withIpam(
  fn: (ipam: NodeIpam, store: MemoryStore, events: Record<string, unknown>[]) => Promise<void>,
  extra: Partial<NodeIpamOptions> = {},
): Promise<void> {
  const store = new MemoryStore();
  store.put(store.keys.pool("default"), JSON.stringify({ subnets: ["10.1.0.0/24"], blockSizeBits: 5 }));
  const events: Record<string, unknown>[] = [];
  const ipam = await createNodeIpam({ store, node: "node1", log: (e) => events.push(e), ...extra });
  try {
    await fn(ipam, store, events);
  } finally {
    await ipam.close();
  }
}

/** The address keys of the store, by container ID. */
function addressOwners(store: MemoryStore): Map<string, string> {
  const out = new Map<string, string>();
  for (const key of store.keysUnder(store.keys.addresses())) {
    out.set(JSON.parse(store.get(key)!).containerId, key.slice(key.lastIndexOf("/") + 1));
  }
  return out;
}

/** Lets every queued microtask and timer of this turn run. */
function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Whether `promise` settled by now. */
async function settledYet(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await tick();
  return done;
}

Deno.test("NodeIpam with writes in doubt", async (t) => {
  await t.step(
    "allocate() whose write committed then timed out: a repeat ADD gets that address",
    async () => {
      await withIpam(async (ipam, store) => {
        store.inject("putAddresses", { kind: "commit-then-timeout" });
        await assertIpamError(ipam.allocate(request("c1")), "unavailable");
        const stored = addressOwners(store).get("c1");
        assert.ok(stored, "the write committed");
        const again = await ipam.allocate(request("c1"));
        assert.deepEqual(ips(again), [stored]);
        assert.equal(store.calls.filter((c) => c === "fenceBlock").length, 1);
      });
    },
  );

  await t.step("release() during a settle waits for it, then releases the attachment settled", async () => {
    await withIpam(async (ipam, store) => {
      await ipam.allocate(request("a"));
      store.inject("putAddresses", { kind: "commit-then-timeout" });
      await assertIpamError(ipam.allocate(request("c1")), "unavailable");
      const slow = gate();
      store.inject("fenceBlock", { kind: "delay", until: slow.until });
      // The DEL of "a" starts the settle; the DEL of "c1" arrives while it runs.
      const releaseA = ipam.release("k8s", "a", "eth0");
      await tick();
      assert.ok(store.calls.includes("fenceBlock"));
      const releaseC1 = ipam.release("k8s", "c1", "eth0");
      assert.equal(await settledYet(releaseC1), false, "the DEL waits for the settle");
      slow.open();
      assert.equal((await releaseA)?.containerId, "a");
      assert.equal((await releaseC1)?.containerId, "c1", "the DEL found the settled attachment");
      assert.deepEqual([...addressOwners(store).keys()], []);
      assert.deepEqual(ipam.allocations(), []);
    });
  });

  await t.step(
    "release() while the same attachment's ADD is in flight settles that ADD's write",
    async () => {
      await withIpam(async (ipam, store) => {
        const slow = gate();
        store.inject("putAddresses", { kind: "commit-then-timeout", until: slow.until });
        const add = ipam.allocate(request("c1"));
        await tick();
        assert.ok(addressOwners(store).has("c1"), "the write committed; its answer is still on its way");
        const del = ipam.release("k8s", "c1", "eth0");
        slow.open();
        await assertIpamError(add, "unavailable");
        assert.equal((await del)?.containerId, "c1");
        assert.equal(addressOwners(store).has("c1"), false);
      });
    },
  );

  await t.step("release() of another attachment during a settle is not undone by the settle", async () => {
    await withIpam(async (ipam, store) => {
      await ipam.allocate(request("a"));
      await ipam.allocate(request("b"));
      store.inject("putAddresses", { kind: "commit-then-timeout" });
      await assertIpamError(ipam.allocate(request("c1")), "unavailable");
      // The fence reads the block now, with "b" in it, and answers only later.
      const slow = gate();
      store.inject("fenceBlock", { kind: "delay", until: slow.until });
      const retry = ipam.allocate(request("c1"));
      await tick();
      const releaseB = ipam.release("k8s", "b", "eth0");
      assert.equal(await settledYet(releaseB), false, "the DEL waits for the settle");
      assert.ok(!store.calls.includes("releaseAddresses"));
      slow.open();
      await retry;
      assert.equal((await releaseB)?.containerId, "b");
      assert.equal(ipam.find("k8s", "b", "eth0"), undefined, "the settle's older read did not bring it back");
      assert.deepEqual([...addressOwners(store).keys()].sort(), ["a", "c1"]);
      assert.deepEqual(ipam.allocations().map((x) => x.containerId).sort(), ["a", "c1"]);
    });
  });

  await t.step(
    "allocate() whose write commits after the settle: the late write fails its compare",
    async () => {
      await withIpam(async (ipam, store) => {
        await ipam.allocate(request("a"));
        const late = gate();
        const applied = store.inject("putAddresses", { kind: "late", until: late.until });
        await assertIpamError(ipam.allocate(request("c1")), "unavailable");
        // The runtime gives up on the ADD and sends DEL: the settle finds nothing and frees the reservation.
        assert.equal(await ipam.release("k8s", "c1", "eth0"), undefined);
        late.open();
        assert.equal((await applied as { ok: boolean }).ok, false);
        assert.deepEqual([...addressOwners(store).keys()], ["a"], "no address is left for a deleted pod");
        // The reservation was freed: the next pods get every other address of the block.
        const got = [];
        for (let i = 0; i < 29; i++) got.push(...ips(await ipam.allocate(request(`n${i}`))));
        assert.equal(new Set([...got, ...ips(ipam.find("k8s", "a", "eth0")!)]).size, 30);
      });
    },
  );

  await t.step("a settle that fails keeps the write in doubt and answers unavailable", async () => {
    await withIpam(async (ipam, store) => {
      store.inject("putAddresses", { kind: "commit-then-timeout" });
      await assertIpamError(ipam.allocate(request("c1")), "unavailable");
      store.inject("fenceBlock", { kind: "unavailable" });
      await assertIpamError(ipam.release("k8s", "c1", "eth0"), "unavailable");
      assert.ok(addressOwners(store).has("c1"), "nothing was freed");
      assert.equal((await ipam.release("k8s", "c1", "eth0"))?.containerId, "c1");
      assert.equal(addressOwners(store).has("c1"), false);
    });
  });

  await t.step("a settle whose fence finds the block rewritten fences again with its revision", async () => {
    await withIpam(async (ipam, store) => {
      const a = await ipam.allocate(request("a"));
      store.inject("putAddresses", { kind: "commit-then-timeout" });
      await assertIpamError(ipam.allocate(request("c1")), "unavailable");
      const blockKey = store.keys.block("default", a.addresses[0].block);
      store.put(blockKey, store.get(blockKey)!);
      assert.equal((await ipam.release("k8s", "c1", "eth0"))?.containerId, "c1");
      assert.equal(store.calls.filter((c) => c === "fenceBlock").length, 2);
      assert.deepEqual([...addressOwners(store).keys()], ["a"]);
      assert.equal(
        (await ipam.release("k8s", "a", "eth0"))?.containerId,
        "a",
        "the block's revision is known",
      );
    });
  });

  await t.step("a settle whose fence finds the block gone drops it and tells the listeners", async () => {
    await withIpam(async (ipam, store, events) => {
      const a = await ipam.allocate(request("a"));
      const block = a.addresses[0].block;
      let changes = 0;
      ipam.onBlocksChanged(() => changes++);
      store.inject("putAddresses", { kind: "commit-then-timeout" });
      await assertIpamError(ipam.allocate(request("c1")), "unavailable");
      // `coil node remove --force` meanwhile: the block and its addresses go.
      const removed = await store.removeBlock({
        pool: "default",
        cidr: block,
        revision: store.modRevision(store.keys.block("default", block)),
      });
      assert.deepEqual(removed, { removed: true, addresses: 2 });
      assert.equal(await ipam.release("k8s", "c1", "eth0"), undefined);
      assert.ok(!ipam.ownedBlocks().some((b) => formatCidr(b.block) === formatCidr(block)));
      assert.equal(changes, 1);
      assert.ok(events.some((e) => e.event === "block lost" && e.block === formatCidr(block)));
      await ipam.allocate(request("c2"));
      assert.equal(ipam.ownedBlocks().length, 1);
    });
  });
});

Deno.test("NodeIpam with blocks changed behind its back", async (t) => {
  await t.step(
    "refreshBlocks() drops the blocks removed or taken, tells the listeners, returns them",
    async () => {
      await withIpam(async (ipam, store, events) => {
        const a = await ipam.allocate(request("a"));
        const ours = a.addresses[0].block;
        // Fill the first block so that a second one is claimed.
        for (let i = 0; i < 30; i++) await ipam.allocate(request(`f${i}`));
        await ipam.settled();
        const blocks = ipam.ownedBlocks().map((b) => b.block);
        assert.ok(blocks.length >= 2);
        const taken = blocks.find((b) => formatCidr(b) !== formatCidr(ours))!;
        let changes = 0;
        ipam.onBlocksChanged(() => changes++);
        assert.deepEqual(await ipam.refreshBlocks(), [], "nothing changed");
        const blockKey = (cidr: typeof ours) => store.keys.block("default", cidr);
        await store.removeBlock({ pool: "default", cidr: ours, revision: store.modRevision(blockKey(ours)) });
        store.delete(blockKey(taken));
        store.put(blockKey(taken), JSON.stringify({ node: "node2", pool: "default", claimedAt: "" }));

        const lost = await ipam.refreshBlocks();
        assert.deepEqual(lost.map(formatCidr).sort(), [ours, taken].map(formatCidr).sort());
        assert.equal(changes, 2);
        const rest = blocks.filter((b) => b !== ours && b !== taken);
        assert.deepEqual(ipam.ownedBlocks().map((b) => formatCidr(b.block)), rest.map(formatCidr));
        assert.ok(events.some((e) => e.event === "block lost" && e.owner === "node2"));
        // The pods in the lost block stay listed; releasing one leaves alone a key someone else wrote.
        assert.ok(ipam.find("k8s", "a", "eth0"));
        const addressKey = store.keys.address(ours, a.addresses[0].address);
        store.put(
          addressKey,
          JSON.stringify({ ...request("intruder"), node: "node2", pool: "default", createdAt: "" }),
        );
        assert.equal((await ipam.release("k8s", "a", "eth0"))?.containerId, "a");
        assert.ok(store.get(addressKey), "another node's address key is left alone");
      });
    },
  );

  await t.step("refreshBlocks() rejects unavailable after applying the reads that came back", async () => {
    await withIpam(async (ipam, store) => {
      await ipam.allocate(request("a"));
      store.inject("readBlock", { kind: "unavailable" });
      await assertIpamError(ipam.refreshBlocks(), "unavailable");
      assert.equal(ipam.ownedBlocks().length, 1);
    });
  });

  await t.step("allocate() whose write finds its block gone drops it and writes into a new one", async () => {
    await withIpam(async (ipam, store) => {
      const a = await ipam.allocate(request("a"));
      const block = a.addresses[0].block;
      store.delete(store.keys.block("default", block));
      const events = store.calls.length;
      const b = await ipam.allocate(request("b"));
      assert.notDeepEqual(ips(b), ips(a));
      assert.equal(ipam.claimRetries(), 1, "one address write re-run");
      assert.deepEqual(store.calls.slice(events).filter((c) => c === "claimBlock"), ["claimBlock"]);
      assert.deepEqual(ipam.ownedBlocks().map((x) => formatCidr(x.block)), [
        formatCidr(b.addresses[0].block),
      ]);
      assert.equal(
        JSON.parse(store.get(store.keys.address(b.addresses[0].block, b.addresses[0].address))!).containerId,
        "b",
      );
    });
  });

  await t.step("release() of an address rewritten by another party leaves that key alone", async () => {
    await withIpam(async (ipam, store, events) => {
      const a = await ipam.allocate(request("a"));
      const key = store.keys.address(a.addresses[0].block, a.addresses[0].address);
      store.put(key, store.get(key)!);
      assert.equal((await ipam.release("k8s", "a", "eth0"))?.containerId, "a");
      assert.ok(store.get(key));
      assert.ok(events.some((e) => e.event === "address rewritten by another party, left alone"));
    });
  });
});
