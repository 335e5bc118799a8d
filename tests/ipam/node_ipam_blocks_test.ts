// NodeIpam against a real etcd, the block side: claims by concurrent nodes, restart, blocks deleted or
// filled behind the node's back, releasing empty blocks while keeping one per pool and family as long
// as the pool has room for other nodes, and deleted pools.

import assert from "node:assert/strict";
import { contains, formatCidr, formatIp } from "../../ipam/cidr.ts";
import { IpamError } from "../../ipam/errors.ts";
import type { Allocation, NodeIpam } from "../../ipam/node_ipam.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { assertIpamError, ips, request, startNodeIpamFixture } from "./node_ipam_fixture.ts";

Deno.test("NodeIpam blocks against a real etcd", async (t) => {
  await using fixture = await startNodeIpamFixture();
  const { client, setup } = fixture;

  await t.step("allocate() on two nodes at once never puts them in one block", async () => {
    const { keys, open } = await setup({ default: ["10.2.0.0/24"] }, 3);
    const [n1, n2] = await Promise.all([open("node1"), open("node2")]);
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 ? n1 : n2).allocate(request(`c${i}`))),
    );
    await Promise.all([n1.settled(), n2.settled()]);
    const ids = (ipam: NodeIpam) => ipam.ownedBlocks().map((b) => formatCidr(b.block));
    const shared = ids(n1).filter((id) => ids(n2).includes(id));
    assert.deepEqual(shared, []);
    for (const [i, allocation] of results.entries()) {
      const node = i % 2 ? "node1" : "node2";
      const [{ address, block }] = allocation.addresses;
      assert.ok(contains(block, address));
      const owner = JSON.parse((await client.get(keys.block("default", block)).string())!);
      assert.equal(owner.node, node, `${formatIp(address)} lies in a block of ${owner.node}`);
    }
    assert.equal(new Set(results.flatMap(ips)).size, 40);
  });

  await t.step(
    "createNodeIpam() after a restart knows the old allocations and never duplicates",
    async () => {
      const { keys, open } = await setup({ default: ["10.4.0.0/24", "fd04::/120"] }, 3);
      const first = await open("node1");
      const old = await Promise.all(Array.from({ length: 10 }, (_, i) => first.allocate(request(`c${i}`))));
      await first.release("k8s", "c3", "eth0");
      await first.settled();
      const blocks = first.ownedBlocks();
      await first.close();

      const second = await open("node1");
      assert.deepEqual(second.ownedBlocks(), blocks);
      const live = old.filter((a) => a.containerId !== "c3");
      const byId = (list: Allocation[]) =>
        [...list].sort((x, y) => x.containerId.localeCompare(y.containerId));
      assert.deepEqual(byId(second.allocations()), byId(live));
      assert.deepEqual(await second.allocate(request("c5")), old[5]);
      const fresh = await Promise.all(
        Array.from({ length: 20 }, (_, i) => second.allocate(request(`n${i}`))),
      );
      const all = [...live, ...fresh].flatMap(ips);
      assert.equal(new Set(all).size, all.length);
      assert.equal((await client.getAll().prefix(keys.addresses()).keys()).length, all.length);
    },
  );

  await t.step(
    "createNodeIpam() reports a corrupt address record and keeps its address taken",
    async () => {
      const { keys, open } = await setup({ default: ["10.5.0.0/24"] }, 2);
      const first = await open("node1");
      const a = await first.allocate(request("a"));
      await first.close();
      const { block, address } = a.addresses[0];
      const taken = { family: 4 as const, value: address.value + 1n };
      await client.put(keys.address(block, taken)).value("not json");
      const events: Record<string, unknown>[] = [];
      const second = await open("node1", { log: (e) => events.push(e) });
      assert.ok(events.some((e) => e.event === "bad address key" && e.key === keys.address(block, taken)));
      const b = await second.allocate(request("b"));
      assert.notEqual(ips(b)[0], formatIp(taken));
      assert.notEqual(ips(b)[0], formatIp(address));
    },
  );

  await t.step("allocate() recovers without duplicates when its block was deleted by hand", async () => {
    const { keys, open } = await setup({ default: ["10.6.0.0/16"] });
    const events: Record<string, unknown>[] = [];
    // random() = 0 re-picks the first free block, so the deleted block is claimed again.
    const ipam = await open("node1", { random: () => 0, log: (e) => events.push(e) });
    const old = [await ipam.allocate(request("a")), await ipam.allocate(request("b"))];
    const block = old[0].addresses[0].block;
    await client.delete().key(keys.block("default", block));
    const retriesBefore = ipam.claimRetries();

    const fresh = await ipam.allocate(request("c"));
    assert.ok(!old.flatMap(ips).includes(ips(fresh)[0]), `${ips(fresh)} was handed out twice`);
    assert.ok(ipam.claimRetries() > retriesBefore);
    assert.ok(events.some((e) => e.event === "block lost" && e.block === formatCidr(block)));
    const owner = JSON.parse((await client.get(keys.block("default", fresh.addresses[0].block)).string())!);
    assert.equal(owner.node, "node1");
    for (const allocation of [...old, fresh]) {
      const { block, address } = allocation.addresses[0];
      const record = JSON.parse((await client.get(keys.address(block, address)).string())!);
      assert.equal(record.containerId, allocation.containerId);
    }
  });

  await t.step("release() of the last address keeps one block per pool and family", async () => {
    const { keys, open } = await setup({ default: ["10.7.0.0/24", "fd07::/120"] }, 2);
    const ipam = await open("node1");
    const got = [];
    for (let i = 0; i < 12; i++) got.push(await ipam.allocate(request(`c${i}`)));
    await ipam.settled();
    assert.ok(ipam.ownedBlocks().length >= 6);
    for (const a of got) await ipam.release(a.network, a.containerId, a.ifName);
    await ipam.settled();
    assert.deepEqual(ipam.ownedBlocks().map((b) => b.block.family), [4, 6]);
    assert.deepEqual(await ipam.releaseEmptyBlocks(), []);
    assert.equal((await client.getAll().prefix(keys.blocks()).keys()).length, 2);
    assert.deepEqual(await client.getAll().prefix(keys.addresses()).keys(), []);
  });

  await t.step(
    "releaseEmptyBlocks() releases all but one empty block, and all once the pool is gone",
    async () => {
      const { keys, open } = await setup({ default: ["10.8.0.0/24"] }, 2);
      const first = await open("node1");
      // Blocks of 4 hold 2 IPv4 pods each (first and last addresses reserved): 2 full blocks and a spare.
      for (let i = 0; i < 4; i++) await first.allocate(request(`c${i}`));
      await first.settled();
      await first.close();
      // Freed behind the node's back (e.g. by an admin): the next start sees three empty blocks.
      await client.delete().prefix(keys.addresses());
      const second = await open("node1");
      assert.equal(second.allocations().length, 0);
      assert.equal(second.ownedBlocks().length, 3);
      let changes = 0;
      second.onBlocksChanged(() => changes++);
      assert.equal((await second.releaseEmptyBlocks()).length, 2);
      assert.equal(changes, 2);
      const [kept] = second.ownedBlocks();
      assert.deepEqual(await second.releaseEmptyBlocks(), []);
      await client.delete().key(keys.pool("default"));
      assert.deepEqual(await second.releaseEmptyBlocks(), [kept.block]);
      assert.deepEqual(second.ownedBlocks(), []);
      assert.deepEqual(await client.getAll().prefix(keys.blocks()).keys(), []);
    },
  );

  await t.step(
    "release() leaves a block whose address range holds a key the node did not write",
    async () => {
      const { keys, open } = await setup({ default: ["10.10.0.0/24"] }, 2);
      const ipam = await open("node1");
      const got = [];
      // A block of 4 holds 2 IPv4 pods: its first (gateway) and last (broadcast) addresses are reserved.
      for (let i = 0; i < 2; i++) got.push(await ipam.allocate(request(`c${i}`)));
      await ipam.settled();
      const block = got[0].addresses[0].block;
      assert.ok(got.every((a) => formatCidr(a.addresses[0].block) === formatCidr(block)));
      assert.equal(ipam.ownedBlocks().length, 2, "a full block and its spare");
      await ipam.release("k8s", "c0", "eth0");
      // Someone writes an address into the block the node is about to find empty.
      const intruder = { ...request("intruder"), node: "elsewhere", pool: "default", createdAt: "" };
      await client.put(keys.address(block, got[0].addresses[0].address)).value(JSON.stringify(intruder));
      for (const a of got.slice(1)) await ipam.release(a.network, a.containerId, a.ifName);

      assert.ok(
        await client.get(keys.block("default", block)).exists(),
        "the range compare kept the block",
      );
      assert.ok(ipam.ownedBlocks().some((b) => formatCidr(b.block) === formatCidr(block)));
      assert.deepEqual(ips(ipam.find("k8s", "intruder", "eth0")!), ips(got[0]));
      await ipam.release("k8s", "intruder", "eth0");
      assert.equal(await client.get(keys.block("default", block)).exists(), false);
      assert.equal(ipam.ownedBlocks().length, 1);
    },
  );

  await t.step(
    "allocate() by 4 nodes × 100 at once gives unique addresses in each node's own blocks",
    async () => {
      const { keys, open } = await setup({ default: ["10.11.0.0/20"] });
      const nodes = await Promise.all(["n1", "n2", "n3", "n4"].map((n) => open(n)));
      const results = await Promise.all(
        nodes.map((ipam, n) =>
          Promise.all(Array.from({ length: 100 }, (_, i) => ipam.allocate(request(`n${n}-c${i}`))))
        ),
      );
      await Promise.all(nodes.map((ipam) => ipam.settled()));
      const all = results.flat().flatMap(ips);
      assert.equal(new Set(all).size, 400);
      const owners = new Map<string, string>();
      for (const [n, ipam] of nodes.entries()) {
        for (const { block } of ipam.ownedBlocks()) {
          assert.equal(owners.get(formatCidr(block)), undefined, `${formatCidr(block)} owned twice`);
          owners.set(formatCidr(block), `n${n + 1}`);
        }
      }
      for (const [n, list] of results.entries()) {
        for (const allocation of list) {
          const { block, address } = allocation.addresses[0];
          assert.equal(owners.get(formatCidr(block)), `n${n + 1}`);
          assert.ok(contains(block, address));
          assert.notEqual(address.value, block.base, "a block's first address is the gateway");
          assert.notEqual(address.value, block.base + 31n, "an IPv4 block's last address is the broadcast");
        }
      }
      const blockKeys = await client.getAll().prefix(keys.blocks()).strings();
      assert.equal(Object.keys(blockKeys).length, owners.size);
      assert.equal((await client.getAll().prefix(keys.addresses()).keys()).length, 400);

      await Promise.all(
        results.flatMap((list, n) => list.map((a) => nodes[n].release(a.network, a.containerId, a.ifName))),
      );
      assert.deepEqual(await client.getAll().prefix(keys.addresses()).keys(), []);
      for (const ipam of nodes) assert.equal(ipam.allocations().length, 0);
    },
  );

  await t.step(
    "allocate() with the smallest blocks (one pod each) serves concurrent requests until the pool runs out",
    async () => {
      // A /28 in blocks of 2: 8 blocks, each with its first address reserved and its second for a pod
      // (a /31 has no broadcast address).
      const { open } = await setup({ default: ["10.17.0.0/28"] }, 1);
      const ipam = await open("node1");
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) => ipam.allocate(request(`c${i}`))),
      );
      const ok = results.flatMap((r) => (r.status === "fulfilled" ? ips(r.value) : []));
      assert.equal(ok.length, 8);
      assert.deepEqual(
        ok.map((ip) => Number(ip.split(".")[3])).sort((a, b) => a - b),
        [1, 3, 5, 7, 9, 11, 13, 15],
      );
      for (const r of results) {
        if (r.status === "rejected") {
          assert.ok(r.reason instanceof IpamError && r.reason.kind === "exhausted");
        }
      }
      await ipam.settled();
      assert.equal(ipam.ownedBlocks().length, 8);
    },
  );

  await t.step("release() gives the last block back when its pool has no free block left", async () => {
    // One /27: a namespace pool of public addresses, say. Node e1 used it once; e2 must get it now.
    const { keys, open } = await setup({ dmz: ["10.20.0.0/27"] });
    const [e1, e2] = [await open("e1"), await open("e2")];
    await e1.allocate(request("a", "dmz"));
    await e1.settled();
    await assertIpamError(e2.allocate(request("b", "dmz")), "exhausted", /"dmz"/);
    let changes = 0;
    e1.onBlocksChanged(() => changes++);
    await e1.release("k8s", "a", "eth0");
    assert.deepEqual(e1.ownedBlocks(), []);
    assert.equal(changes, 1, "the exporter is told");
    const b = await e2.allocate(request("b", "dmz"));
    const owner = JSON.parse((await client.get(keys.block("dmz", b.addresses[0].block)).string())!);
    assert.equal(owner.node, "e2");
  });

  await t.step("releaseEmptyBlocks() lets a /24 in /27 blocks serve more than 8 nodes", async () => {
    const { open } = await setup({ default: ["10.21.0.0/24"] });
    const nodes: NodeIpam[] = [];
    for (let i = 0; i < 10; i++) nodes.push(await open(`n${i}`));
    // Nodes n0..n7 run one pod each and delete it: n0..n6 keep their empty block as a spare while the
    // pool has room; n7 takes the last block, so its release gives it back.
    for (const [i, ipam] of nodes.slice(0, 8).entries()) {
      await ipam.allocate(request(`c${i}`));
      await ipam.release("k8s", `c${i}`, "eth0");
    }
    assert.deepEqual(nodes.slice(0, 8).map((n) => n.ownedBlocks().length), [1, 1, 1, 1, 1, 1, 1, 0]);
    await nodes[8].allocate(request("c8"));
    await assertIpamError(nodes[9].allocate(request("c9")), "exhausted", /"default"/);
    // At their sweeps, the first node to find the pool full gives its spare back; the others keep theirs.
    const released = [];
    for (const ipam of nodes.slice(0, 7)) released.push(...await ipam.releaseEmptyBlocks());
    assert.equal(released.length, 1);
    const c9 = await nodes[9].allocate(request("c9"));
    assert.equal(formatCidr(c9.addresses[0].block), formatCidr(released[0]));
  });

  await t.step("a spare claim leaves the pool's last free block to a node that asks", async () => {
    // A /29 in blocks of 4: two blocks of 2 IPv4 pods each.
    const { open } = await setup({ default: ["10.22.0.0/29"] }, 2);
    const [e1, e2] = [await open("e1"), await open("e2")];
    const events: Record<string, unknown>[] = [];
    const e3 = await open("e3", { log: (e) => events.push(e) });
    await e1.allocate(request("a0"));
    await e1.allocate(request("a1"));
    await e1.settled();
    assert.equal(e1.ownedBlocks().length, 1, "no spare taken from the last free block");
    await e2.allocate(request("b0"));
    await assertIpamError(e3.allocate(request("c0")), "exhausted");
    assert.ok(!events.some((e) => e.event === "block claimed"));

    // A node's own request may take the last free block.
    const single = await setup({ default: ["10.23.0.0/29"] }, 2);
    const n1 = await single.open("n1");
    for (const id of ["x0", "x1", "x2"]) await n1.allocate(request(id));
    await n1.settled();
    assert.equal(n1.ownedBlocks().length, 2);
  });

  await t.step(
    "deletePool() of an unused pool: the node holding its empty block drops it at its sweep",
    async () => {
      const { keys, prefix, open } = await setup({ default: ["10.24.0.0/24"], dmz: ["10.25.0.0/24"] });
      const events: Record<string, unknown>[] = [];
      const e1 = await open("e1", { log: (e) => events.push(e) });
      const a = await e1.allocate(request("a", "dmz"));
      const dmzBlock = a.addresses[0].block;
      await e1.allocate(request("d"));
      const pools = new PoolStore(client, prefix);
      await assertIpamError(
        pools.deletePool("dmz"),
        "conflict",
        /1 block\(s\) still hold addresses, claimed by e1/,
      );
      await e1.release("k8s", "a", "eth0");
      assert.equal(e1.ownedBlocks().length, 2, "the pool has room: the empty block is kept as a spare");

      await pools.deletePool("dmz");
      assert.equal(await client.get(keys.block("dmz", dmzBlock)).exists(), false);
      const indexEntries = await client.getAll().prefix(`${prefix}node-blocks/e1/dmz/`).keys();
      assert.deepEqual(indexEntries, [], "the owner's index entry went with the block");
      let changes = 0;
      e1.onBlocksChanged(() => changes++);
      assert.deepEqual(await e1.releaseEmptyBlocks(), [], "nothing released: the block was already gone");
      assert.deepEqual(e1.ownedBlocks().map((b) => b.pool), ["default"]);
      assert.equal(changes, 1, "the exporter is told");
      assert.ok(events.some((e) => e.event === "block lost" && e.block === formatCidr(dmzBlock)));
    },
  );

  await t.step(
    "allocate() into a block of a pool deleted and created again drops the stale block",
    async () => {
      const dmz = JSON.stringify({ subnets: ["10.26.0.0/26"], blockSizeBits: 5 });
      const { keys, prefix, open } = await setup({});
      await client.put(keys.pool("dmz")).value(dmz);
      const events: Record<string, unknown>[] = [];
      const e1 = await open("e1", { log: (e) => events.push(e) });
      const a = await e1.allocate(request("a", "dmz"));
      await e1.release("k8s", "a", "eth0");
      assert.equal(e1.ownedBlocks().length, 1, "one of two blocks claimed: kept as a spare");
      await new PoolStore(client, prefix).deletePool("dmz");
      await client.put(keys.pool("dmz")).value(dmz);
      let changes = 0;
      e1.onBlocksChanged(() => changes++);

      const b = await e1.allocate(request("b", "dmz"));
      assert.ok(events.some((e) => e.event === "block lost" && e.block === formatCidr(a.addresses[0].block)));
      assert.equal(changes, 2, "the stale block dropped, a new one claimed");
      assert.equal(e1.ownedBlocks().length, 1);
      const owner = JSON.parse((await client.get(keys.block("dmz", b.addresses[0].block)).string())!);
      assert.equal(owner.node, "e1");
    },
  );

  await t.step(
    "refreshBlocks() drops a block removed behind the node's back (node remove --force)",
    async () => {
      const { keys, store, open } = await setup({ default: ["10.27.0.0/24"] });
      const e1 = await open("e1");
      const a = await e1.allocate(request("a"));
      const block = a.addresses[0].block;
      let changes = 0;
      e1.onBlocksChanged(() => changes++);
      assert.deepEqual(await e1.refreshBlocks(), []);
      const revision = (await store.readBlock("default", block)).block!.revision;
      assert.deepEqual(await store.removeBlock({ pool: "default", cidr: block, revision }), {
        removed: true,
        addresses: 1,
      });
      assert.deepEqual(await e1.refreshBlocks(), [block]);
      assert.deepEqual(e1.ownedBlocks(), []);
      assert.equal(changes, 1);
      assert.deepEqual(await client.getAll().prefix(keys.blocks()).keys(), []);
    },
  );
});
