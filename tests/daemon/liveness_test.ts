// Node liveness: a running coild keeps `nodes/<name>` alive through an etcd lease; the key goes when
// coild stops (revoked) or dies (expired), and comes back when the lease is lost while coild runs.
// `coil node list` and `coil node remove` read it.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parseNodeRecord } from "../../ipam/records.ts";
import { type CliRun, runCoilCli } from "../helpers/coil_cli.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns } from "../helpers/netns.ts";
import { addPod, addressKeys, createPod, startNode, type TestNode, waitUntil } from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

const SUBNETS = ["10.130.0.0/16"];

function coil(etcd: TestEtcd, node: TestNode, args: string[]): Promise<CliRun> {
  return runCoilCli([...args, "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", node.prefix]);
}

async function nodeKey(client: Etcd3, node: TestNode) {
  const res = await client.kv.range({ key: Buffer.from(node.keys.node(node.coild.nodeName)) });
  return res.kvs[0];
}

Deno.test("coild keeps a lease-bound liveness key while it runs", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    await t.step("the key exists while coild runs and goes at once when it stops", async () => {
      await using node = await startNode({ etcd, client, subnets: SUBNETS });
      await waitUntil("the node key exists", async () => (await nodeKey(client, node)) !== undefined);
      const kv = (await nodeKey(client, node))!;
      const record = parseNodeRecord(kv.key.toString(), kv.value.toString());
      assert.equal(record.node, node.coild.nodeName);
      assert.ok(!Number.isNaN(Date.parse(record.startedAt)));
      assert.notEqual(kv.lease, "0", "bound to a lease");
      await node.stop();
      assert.equal(await nodeKey(client, node), undefined, "a clean stop revokes the lease");
    });

    await t.step("after a crash the key expires with the lease", async () => {
      await using node = await startNode({ etcd, client, subnets: SUBNETS, args: ["--node-lease-ttl", "5"] });
      await waitUntil("the node key exists", async () => (await nodeKey(client, node)) !== undefined);
      await node.kill();
      assert.notEqual(await nodeKey(client, node), undefined, "nobody revoked it");
      await waitUntil("the node key expired", async () => (await nodeKey(client, node)) === undefined);
    });

    await t.step("a lost lease is granted again and the key rewritten", async () => {
      await using node = await startNode({ etcd, client, subnets: SUBNETS, args: ["--node-lease-ttl", "3"] });
      await waitUntil("the node key exists", async () => (await nodeKey(client, node)) !== undefined);
      const first = (await nodeKey(client, node))!.lease;
      // As etcd does when the lease expires during an outage: the lease and its key are gone.
      await client.leaseClient.leaseRevoke({ ID: first });
      assert.equal(await nodeKey(client, node), undefined);
      await waitUntil(
        "the node key is back, on a new lease",
        async () => {
          const kv = await nodeKey(client, node);
          return kv !== undefined && kv.lease !== first;
        },
        () => node.coild.log(),
      );
    });
  } finally {
    client.close();
  }
});

Deno.test("coil node list and remove use the liveness key", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    await using node = await startNode({ etcd, client, subnets: SUBNETS });
    await using pod = await createPod();
    await addPod(node, pod);
    await waitUntil("the node key exists", async () => (await nodeKey(client, node)) !== undefined);
    const name = node.coild.nodeName;

    await t.step("node list shows the running node with its blocks and addresses", async () => {
      const run = await coil(etcd, node, ["node", "list", "--json"]);
      assert.equal(run.code, 0, run.stderr);
      const nodes = JSON.parse(run.stdout);
      assert.equal(nodes.length, 1);
      assert.equal(nodes[0].node, name);
      assert.equal(nodes[0].live, true);
      assert.ok(nodes[0].blocks >= 1);
      assert.equal(nodes[0].addressesUsed, 1);
      const text = await coil(etcd, node, ["node", "list"]);
      assert.match(text.stdout, new RegExp(`^${name}\\s+running\\s+`, "m"));
    });

    await t.step("node remove refuses a live node", async () => {
      const run = await coil(etcd, node, ["node", "remove", name]);
      assert.equal(run.code, 1);
      assert.match(run.stderr, /^coil: Refusing to remove node ".*": its coild is running/);
      assert.equal((await addressKeys(client, node)).size, 1, "nothing changed");
    });

    await t.step("after coild stops, node list says so and node remove releases everything", async () => {
      await node.stop();
      const list = JSON.parse((await coil(etcd, node, ["node", "list", "--json"])).stdout);
      assert.deepEqual(list.map((n: { live: boolean }) => n.live), [false]);
      const run = await coil(etcd, node, ["node", "remove", name]);
      assert.equal(run.code, 0, run.stderr);
      assert.match(
        run.stdout,
        new RegExp(`^Removed node "${name}": \\d+ block\\(s\\), 1 address\\(es\\)$`, "m"),
      );
      assert.equal((await addressKeys(client, node)).size, 0);
      assert.deepEqual(await client.getAll().prefix(node.keys.blocks()).keys(), []);
      const after = JSON.parse((await coil(etcd, node, ["node", "list", "--json"])).stdout);
      assert.deepEqual(after, [], "a removed node without coild is not listed");
    });
  } finally {
    client.close();
  }
});
