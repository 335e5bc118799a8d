// NodeIpam against a real etcd, the address side: allocate and release, idempotency, exhaustion, both
// families, next-fit, pool selection, gc, and etcd going away.

import assert from "node:assert/strict";
import { contains, formatCidr, parseCidr } from "../../ipam/cidr.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { type Allocation, createNodeIpam } from "../../ipam/node_ipam.ts";
import { assertIpamError, ips, request, startNodeIpamFixture } from "./node_ipam_fixture.ts";

Deno.test("NodeIpam allocations against a real etcd", async (t) => {
  await using fixture = await startNodeIpamFixture();
  const { client, etcd, setup } = fixture;

  await t.step("allocate() takes an address from a block it claims; release() frees it", async () => {
    const { keys, open } = await setup({ default: ["10.1.0.0/16"] });
    const events: Record<string, unknown>[] = [];
    const ipam = await open("node1", { log: (e) => events.push(e) });
    let changes = 0;
    ipam.onBlocksChanged(() => changes++);

    const allocation = await ipam.allocate(request("c1"));
    assert.equal(allocation.pool, "default");
    assert.equal(allocation.node, "node1");
    assert.equal(allocation.addresses.length, 1);
    const [{ address, block }] = allocation.addresses;
    assert.ok(contains(block, address));
    assert.equal(block.prefix, 27);
    assert.deepEqual(ipam.ownedBlocks(), [{ pool: "default", block }]);
    assert.equal(changes, 1);
    assert.ok(events.some((e) => e.event === "block claimed" && e.block === formatCidr(block)));
    const owner = JSON.parse((await client.get(keys.block("default", block)).string())!);
    assert.equal(owner.node, "node1");
    const record = JSON.parse((await client.get(keys.address(block, address)).string())!);
    assert.equal(record.containerId, "c1");
    assert.equal(record.podName, "pod-c1");
    assert.deepEqual(ipam.find("k8s", "c1", "eth0"), allocation);

    assert.deepEqual(await ipam.release("k8s", "c1", "eth0"), allocation);
    assert.equal(await client.get(keys.address(block, address)).exists(), false);
    assert.equal(ipam.find("k8s", "c1", "eth0"), undefined);
    assert.equal(await ipam.release("k8s", "c1", "eth0"), undefined, "a second release is a no-op");
    assert.equal(await ipam.release("k8s", "never", "eth0"), undefined);
    assert.deepEqual(ipam.ownedBlocks(), [{ pool: "default", block }], "the last block is kept");
  });

  await t.step("allocate() is idempotent per network, container and interface", async () => {
    const { keys, open } = await setup({ default: ["10.1.0.0/16"] });
    const ipam = await open("node1");
    const [a, b] = await Promise.all([ipam.allocate(request("c1")), ipam.allocate(request("c1"))]);
    assert.deepEqual(a, b);
    assert.deepEqual(await ipam.allocate(request("c1")), a);
    const other = await ipam.allocate({ ...request("c1"), ifName: "net1" });
    const otherNetwork = await ipam.allocate(request("c1", "default", "other"));
    assert.notDeepEqual(ips(other), ips(a));
    assert.notDeepEqual(ips(otherNetwork), ips(a));
    const kvs = await client.getAll().prefix(keys.addresses()).keys();
    assert.equal(kvs.length, 3);
  });

  await t.step("allocate() reports an exhausted pool by name and changes nothing", async () => {
    // A /28 in blocks of 4 holds 4 blocks of 2 pod addresses each: every block's first (the gateway)
    // and last (the broadcast address) are reserved.
    const { prefix, open } = await setup({ default: ["10.9.0.0/28"] }, 2);
    const ipam = await open("node1");
    const got: string[] = [];
    for (let i = 0; i < 8; i++) got.push(...ips(await ipam.allocate(request(`c${i}`))));
    assert.equal(new Set(got).size, 8);
    const lastOctets = got.map((ip) => Number(ip.split(".")[3])).sort((a, b) => a - b);
    assert.deepEqual(lastOctets, [1, 2, 5, 6, 9, 10, 13, 14]);
    await ipam.settled();
    const snapshot = async () => await client.getAll().prefix(prefix).strings();
    const before = await snapshot();
    await assertIpamError(ipam.allocate(request("c8")), "exhausted", /"default"/);
    await ipam.settled();
    assert.deepEqual(await snapshot(), before);
    assert.equal(ipam.find("k8s", "c8", "eth0"), undefined);
    assert.equal(ipam.allocations().length, 8);
  });

  await t.step("allocate() gives one address per family from a dual-stack pool, IPv4 first", async () => {
    const { keys, open } = await setup({ default: ["10.1.0.0/16", "fd00::/48"] });
    const ipam = await open("node1");
    const allocation = await ipam.allocate(request("c1"));
    assert.deepEqual(allocation.addresses.map((a) => a.family), [4, 6]);
    for (const { address, block } of allocation.addresses) {
      assert.ok(contains(block, address));
      assert.ok(await client.get(keys.address(block, address)).exists());
    }
    assert.equal(allocation.addresses[1].block.prefix, 123);
    assert.deepEqual(ipam.ownedBlocks().map((b) => b.block.family), [4, 6]);
  });

  await t.step("allocate() works in an IPv6 /48 pool of 2^75 blocks", async () => {
    const { open } = await setup({ default: ["fd00:1::/48"] });
    const pool = parseCidr("fd00:1::/48");
    const ipam = await open("node1");
    const got = await Promise.all(Array.from({ length: 40 }, (_, i) => ipam.allocate(request(`c${i}`))));
    for (const allocation of got) assert.ok(contains(pool, allocation.addresses[0].address));
    assert.equal(new Set(got.flatMap(ips)).size, 40);
    await ipam.settled();
    assert.ok(ipam.ownedBlocks().length >= 2);
  });

  await t.step("allocate() does not hand a just-released address out next (next-fit)", async () => {
    const { open } = await setup({ default: ["10.1.0.0/16"] });
    const ipam = await open("node1");
    const a = await ipam.allocate(request("a"));
    const b = await ipam.allocate(request("b"));
    await ipam.release("k8s", "a", "eth0");
    const c = await ipam.allocate(request("c"));
    assert.notDeepEqual(ips(c), ips(a));
    assert.notDeepEqual(ips(c), ips(b));
  });

  await t.step("allocate() picks the namespace's pool, else default, else fails naming both", async () => {
    const { keys, open } = await setup({ default: ["10.12.0.0/16"], dmz: ["10.13.0.0/16"] });
    const ipam = await open("node1");
    const inPool = (a: Allocation, cidr: string) => contains(parseCidr(cidr), a.addresses[0].address);
    const dmz = await ipam.allocate(request("a", "dmz"));
    assert.equal(dmz.pool, "dmz");
    assert.ok(inPool(dmz, "10.13.0.0/16"));
    assert.ok(inPool(await ipam.allocate(request("b", "other")), "10.12.0.0/16"));
    assert.ok(inPool(await ipam.allocate(request("c", "")), "10.12.0.0/16"));
    assert.deepEqual(await ipam.canServe("other"), { ok: true });

    // A pool created after start is found; without `default`, other namespaces have no pool.
    await client.put(keys.pool("late")).value(JSON.stringify({ subnets: ["10.14.0.0/16"] }));
    await client.delete().key(keys.pool("default"));
    assert.ok(inPool(await ipam.allocate(request("d", "late")), "10.14.0.0/16"));
    await assertIpamError(ipam.allocate(request("e", "other")), "no-pool", /"other".*"default"/);
    await assertIpamError(ipam.allocate(request("f", "")), "no-pool", /"default"/);
    const status = await ipam.canServe("other");
    assert.equal(status.ok, false);
    assert.match(status.reason ?? "", /"other".*"default"/);
    assert.deepEqual(await ipam.canServeAny(), { ok: true }, "a namespace pool serves some pods");
  });

  await t.step(
    "createNodeIpam() refuses an empty node name",
    async () => {
      const store = createEtcdStore(client, "/coil/");
      await assertIpamError(createNodeIpam({ store, node: "" }), "invalid", /node name/);
    },
  );

  await t.step("allocate() rejects with kind unavailable once etcd is stopped", async () => {
    const { open } = await setup({ default: ["10.16.0.0/16"] });
    const ipam = await open("node1");
    await ipam.allocate(request("a"));
    await ipam.settled();
    await etcd.stop();
    await assertIpamError(ipam.allocate(request("b")), "unavailable");
    await assertIpamError(ipam.allocate(request("c", "unknown-namespace")), "unavailable");
    await assertIpamError(ipam.release("k8s", "a", "eth0"), "unavailable");
    assert.ok(ipam.find("k8s", "a", "eth0"), "a failed release keeps the allocation for a retry");
    assert.equal(ipam.find("k8s", "b", "eth0"), undefined);
  });
});
