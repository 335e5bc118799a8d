// NodeIpam against a real etcd whose space quota is used up (NOSPACE): allocation is refused and leaves
// nothing in doubt, so release, which only deletes, still works; a NodeIpam still loads; and service
// resumes once the space is freed and the alarm disarmed.

import assert from "node:assert/strict";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { keysFor } from "../../ipam/keys.ts";
import { type Allocation, createNodeIpam, type NodeIpam } from "../../ipam/node_ipam.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { fillUntilNoSpace, freeSpaceAndDisarm } from "../helpers/etcd_space.ts";
import { assertIpamError, ips, request } from "./node_ipam_fixture.ts";

Deno.test("NodeIpam under etcd's NOSPACE alarm", async (t) => {
  await using etcd = await startEtcd({ args: ["--quota-backend-bytes", String(4 * 1024 * 1024)] });
  const prefix = etcd.newPrefix();
  const keys = keysFor(prefix);
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix, callTimeoutMs: 5000 });
  const opened: NodeIpam[] = [];
  try {
    await client.put(keys.pool("default")).value(
      JSON.stringify({ subnets: ["10.72.0.0/24"], blockSizeBits: 4 }),
    );
    const store = createEtcdStore(client, prefix);
    const open = async (node: string) => {
      const ipam = await createNodeIpam({ store, node });
      opened.push(ipam);
      return ipam;
    };
    const ipam = await open("node-a");
    const held: Allocation[] = [];
    for (const id of ["a1", "a2", "a3"]) held.push(await ipam.allocate(request(id)));
    await ipam.settled();
    const fillPrefix = `${prefix}fill/`;
    await fillUntilNoSpace(client, fillPrefix);

    await t.step("allocate() is refused with no-space, naming the alarm, again and again", async () => {
      await assertIpamError(ipam.allocate(request("b1")), "no-space", /NOSPACE alarm/);
      await assertIpamError(ipam.allocate(request("b2")), "no-space", /NOSPACE alarm/);
      assert.equal(ipam.find("k8s", "b1", "eth0"), undefined);
    });

    await t.step("release() after those refusals deletes the address keys", async () => {
      for (const allocation of held.splice(0, 2)) {
        const released = await ipam.release("k8s", allocation.containerId, "eth0");
        assert.deepEqual(released && ips(released), ips(allocation));
        const [address] = allocation.addresses;
        assert.equal(await client.get(keys.address(address.block, address.address)).string(), null);
      }
      assert.equal(await ipam.release("k8s", "b1", "eth0"), undefined);
    });

    await t.step("a NodeIpam still loads (its node index stays as it was)", async () => {
      const b = await open("node-b");
      assert.deepEqual(b.ownedBlocks(), []);
    });

    await t.step("after the space is freed and the alarm disarmed, allocate() works at once", async () => {
      await freeSpaceAndDisarm(client, fillPrefix);
      const again = await ipam.allocate(request("b1"));
      assert.equal(again.addresses.length, 1);
      assert.ok(ipam.find("k8s", "a3", "eth0"), "the allocation that was never released is kept");
    });
  } finally {
    for (const ipam of opened) await ipam.close();
    client.close();
  }
});

Deno.test("NodeIpam: a block claim refused for lack of space leaves releases free to run", async () => {
  await using etcd = await startEtcd({ args: ["--quota-backend-bytes", String(4 * 1024 * 1024)] });
  const prefix = etcd.newPrefix();
  const keys = keysFor(prefix);
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix, callTimeoutMs: 5000 });
  try {
    // Four blocks of two usable addresses: six pods fill three, so the seventh needs the last block.
    await client.put(keys.pool("default")).value(
      JSON.stringify({ subnets: ["10.74.0.0/28"], blockSizeBits: 2 }),
    );
    const ipam = await createNodeIpam({ store: createEtcdStore(client, prefix), node: "node-x" });
    try {
      const held: Allocation[] = [];
      for (let i = 1; i <= 6; i++) {
        held.push(await ipam.allocate(request(`x${i}`)));
        await ipam.settled();
      }
      assert.equal(ipam.ownedBlocks().length, 3, "the set-up needs three full blocks and one free");
      await fillUntilNoSpace(client, `${prefix}fill/`);
      const refused = ipam.allocate(request("x7"));
      await refused.catch(() => {});
      const released = await ipam.release("k8s", "x1", "eth0");
      assert.deepEqual(released && ips(released), ips(held[0]));
      await assertIpamError(refused, "no-space", /NOSPACE alarm/);
    } finally {
      await ipam.close();
    }
  } finally {
    client.close();
  }
});
