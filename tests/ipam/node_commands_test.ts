// `coil node list` and `coil node remove` as operators run them (scripts/coil as a separate process),
// and removeNode() underneath, against a real etcd holding records written where coild would write them.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { parseCidr, parseIp } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { isIpamError } from "../../ipam/errors.ts";
import { keysFor } from "../../ipam/keys.ts";
import { removeNode } from "../../ipam/node_removal.ts";
import type { AddressRecord, BlockRecord, NodeRecord } from "../../ipam/records.ts";
import { assertCliOk, type CliRun, runCoilCli } from "../helpers/coil_cli.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";

function coil(etcd: TestEtcd, prefix: string, args: string[]): Promise<CliRun> {
  return runCoilCli([...args, "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix]);
}

/** Writes the records of one node: blocks of pool `default` and addresses in them. */
async function putNode(client: Etcd3, prefix: string, node: string, blocks: Record<string, string[]>) {
  const keys = keysFor(prefix);
  for (const [block, ips] of Object.entries(blocks)) {
    const record: BlockRecord = { node, pool: "default", claimedAt: "2025-01-02T03:04:05Z" };
    await client.put(keys.block("default", parseCidr(block))).value(JSON.stringify(record));
    for (const ip of ips) {
      const address: AddressRecord = {
        network: "k8s-pod-network",
        containerId: `ctr-${ip}`,
        ifName: "eth0",
        podNamespace: "default",
        podName: `pod-${ip}`,
        podUid: `uid-${ip}`,
        netns: `/var/run/netns/cni-${ip}`,
        node,
        pool: "default",
        createdAt: "2025-01-02T03:04:06Z",
      };
      await client.put(keys.address(parseCidr(block), parseIp(ip))).value(JSON.stringify(address));
    }
  }
}

const RECORD: NodeRecord = { node: "", startedAt: "2025-01-02T00:00:00Z", version: "0.1.0" };

/** Marks `node` alive as its coild does: the node key on a lease. Returns the lease, to revoke. */
async function markAlive(client: Etcd3, prefix: string, node: string) {
  const lease = client.lease(30);
  await lease.put(keysFor(prefix).node(node)).value(JSON.stringify({ ...RECORD, node }));
  return lease;
}

/** Marks `node` alive recently, as its stopped or paused coild leaves it: the fence key on a long lease. */
async function markRecent(client: Etcd3, prefix: string, node: string) {
  const lease = client.lease(600);
  await lease.put(keysFor(prefix).nodeFence(node)).value(JSON.stringify({ ...RECORD, node }));
  return lease;
}

async function keysUnder(client: Etcd3, prefix: string): Promise<string[]> {
  return (await client.getAll().prefix(prefix).keys()).map((k) => k.slice(prefix.length)).sort();
}

Deno.test("coil node list and remove against a real etcd", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    await t.step("coil node list shows every node with blocks or a running coild", async () => {
      const prefix = etcd.newPrefix();
      await putNode(client, prefix, "node1", { "10.1.0.0/27": ["10.1.0.1", "10.1.0.2"], "10.1.0.32/27": [] });
      await putNode(client, prefix, "node2", { "10.1.0.64/27": ["10.1.0.65"] });
      await putNode(client, prefix, "node4", { "10.1.0.96/27": ["10.1.0.97"] });
      const leases = [
        await markAlive(client, prefix, "node1"),
        await markRecent(client, prefix, "node1"),
        await markAlive(client, prefix, "node3"),
        await markRecent(client, prefix, "node4"),
        await markRecent(client, prefix, "node5"),
      ];
      try {
        const json = JSON.parse(assertCliOk(await coil(etcd, prefix, ["node", "list", "--json"])));
        const removable = (json as { removableInSeconds?: number }[]).map((n) => n.removableInSeconds);
        assert.ok(removable[3]! > 590 && removable[3]! <= 600, `removable in ${removable[3]} s`);
        assert.deepEqual(json, [
          { node: "node1", live: true, blocks: 2, addressesUsed: 2, capacity: 60 },
          { node: "node2", live: false, blocks: 1, addressesUsed: 1, capacity: 30 },
          { node: "node3", live: true, blocks: 0, addressesUsed: 0, capacity: 0 },
          {
            node: "node4",
            live: false,
            removableInSeconds: removable[3],
            blocks: 1,
            addressesUsed: 1,
            capacity: 30,
          },
          {
            node: "node5",
            live: false,
            removableInSeconds: removable[4],
            blocks: 0,
            addressesUsed: 0,
            capacity: 0,
          },
        ]);
        const text = assertCliOk(await coil(etcd, prefix, ["node", "list"]));
        assert.match(text, /^NODE +COILD +BLOCKS +ADDRESSES-USED +USE$/m);
        assert.match(text, /^node1 +running +2 +2\/60 +3%$/m);
        assert.match(text, /^node2 +not running +1 +1\/30 +3%$/m);
        assert.match(text, /^node3 +running +0 +0\/0 +-$/m);
        assert.match(
          text,
          /^node4 +not running, alive recently \(removable in (9m\d+s|10m)\) +1 +1\/30 +3%$/m,
        );
        const blocks = assertCliOk(await coil(etcd, prefix, ["node", "blocks", "node4"]));
        assert.match(
          blocks,
          /^Node "node4" \(coild not running, alive recently \(removable in 9m\d+s\)\): 1 block/m,
        );
      } finally {
        for (const lease of leases) await lease.revoke();
      }
      const empty = etcd.newPrefix();
      assert.match(
        assertCliOk(await coil(etcd, empty, ["node", "list"])),
        /^No nodes hold blocks and no coild is running$/m,
      );
    });

    await t.step(
      "coil node remove releases a dead node's blocks and addresses, and nothing else",
      async () => {
        const prefix = etcd.newPrefix();
        await client.put(keysFor(prefix).pool("default")).value("{}");
        await putNode(client, prefix, "node1", {
          "10.1.0.0/27": ["10.1.0.1", "10.1.0.2"],
          "10.1.0.32/27": [],
        });
        await putNode(client, prefix, "node2", { "10.1.0.64/27": ["10.1.0.65"] });
        const out = assertCliOk(await coil(etcd, prefix, ["node", "remove", "node1"]));
        assert.match(out, /^Released block 10\.1\.0\.0\/27 of pool "default" with 2 address\(es\)$/m);
        assert.match(out, /^Released block 10\.1\.0\.32\/27 of pool "default" with 0 address\(es\)$/m);
        assert.match(out, /^Removed node "node1": 2 block\(s\), 2 address\(es\)$/m);
        assert.deepEqual(await keysUnder(client, prefix), [
          "addresses/10.1.0.64_27/10.1.0.65",
          "blocks/default/10.1.0.64_27",
          "pools/default",
        ]);
        const again = assertCliOk(await coil(etcd, prefix, ["node", "remove", "node1"]));
        assert.match(again, /^Node "node1" holds no blocks: nothing to release$/m, "idempotent");
      },
    );

    await t.step("coil node remove refuses a live node unless --force", async () => {
      const prefix = etcd.newPrefix();
      await putNode(client, prefix, "node1", { "10.1.0.0/27": ["10.1.0.1"] });
      const lease = await markAlive(client, prefix, "node1");
      try {
        const refused = await coil(etcd, prefix, ["node", "remove", "node1"]);
        assert.equal(refused.code, 1);
        assert.match(
          refused.stderr,
          /^coil: Refusing to remove node "node1": its coild is running \(key ".*nodes\/node1" exists\); stop it first; --force is only for a host known to be down\n$/,
        );
        assert.equal((await keysUnder(client, prefix)).length, 3, "nothing changed");
        const forced = JSON.parse(
          assertCliOk(await coil(etcd, prefix, ["node", "remove", "node1", "--force", "--json"])),
        );
        assert.deepEqual(forced, {
          node: "node1",
          wasAlive: true,
          wasRecentlyAlive: false,
          blocks: [{ pool: "default", block: "10.1.0.0/27", addresses: 1 }],
        });
        assert.deepEqual(await keysUnder(client, prefix), ["nodes/node1"], "the liveness key is the lease's");
      } finally {
        await lease.revoke();
      }
    });

    await t.step(
      "coil node remove refuses a node alive recently unless --force, which drops its fence",
      async () => {
        const prefix = etcd.newPrefix();
        await putNode(client, prefix, "node1", { "10.1.0.0/27": ["10.1.0.1"] });
        const lease = await markRecent(client, prefix, "node1");
        try {
          const refused = await coil(etcd, prefix, ["node", "remove", "node1"]);
          assert.equal(refused.code, 1);
          assert.match(
            refused.stderr,
            /^coil: Refusing to remove node "node1": its coild was alive recently \(key ".*node-fences\/node1" exists\), so it may only be paused or cut off from etcd, and its pods still use their addresses; the node becomes removable in (9m\d+s|10m), when that key expires; --force is only for a host known to be down\n$/,
          );
          assert.equal((await keysUnder(client, prefix)).length, 3, "nothing changed");
          const forced = assertCliOk(await coil(etcd, prefix, ["node", "remove", "node1", "--force"]));
          assert.match(forced, /^Warning: node "node1" was alive recently \(--force\)$/m);
          assert.match(forced, /^Removed node "node1": 1 block\(s\), 1 address\(es\)$/m);
          assert.deepEqual(await keysUnder(client, prefix), [], "the fence key went too");
        } finally {
          await lease.revoke();
        }
      },
    );

    await t.step("coil node remove needs a node name", async () => {
      const run = await coil(etcd, etcd.newPrefix(), ["node", "remove"]);
      assert.equal(run.code, 2);
      assert.match(run.stderr, /^coil: missing required argument 'node'/);
    });

    await t.step("removeNode() releases only blocks the node owns", async () => {
      const prefix = etcd.newPrefix();
      await putNode(client, prefix, "node1", { "10.1.0.0/27": ["10.1.0.1"] });
      await putNode(client, prefix, "node10", { "10.1.0.32/27": ["10.1.0.33"] });
      const removal = await removeNode(client, prefix, "node1");
      assert.deepEqual(removal.blocks.map((b) => [b.pool, b.addresses]), [["default", 1]]);
      assert.deepEqual(await keysUnder(client, prefix), [
        "addresses/10.1.0.32_27/10.1.0.33",
        "blocks/default/10.1.0.32_27",
      ]);
    });

    await t.step("removeNode() rejects an empty name", async () => {
      await assert.rejects(removeNode(client, etcd.newPrefix(), ""), (err) => isIpamError(err, "invalid"));
    });
  } finally {
    client.close();
  }
});
