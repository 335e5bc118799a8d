// Node liveness and identity: a running coild holds `nodes/<name>` alone, through an etcd lease; the key
// goes when coild stops (revoked) or dies (expired), and comes back when the lease is lost while coild
// runs; a second coild with the name refuses to start. `coil node list` and `coil node remove` read it,
// and the fence key that outlives stops and pauses.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parseNodeRecord } from "../../ipam/records.ts";
import { type CliRun, runCoilCli } from "../helpers/coil_cli.ts";
import { coildRefusing } from "../helpers/coild.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { createNetns, removeLeftoverNetns } from "../helpers/netns.ts";
import {
  addPod,
  addressKeys,
  cni,
  createPod,
  logEntries,
  startNode,
  type TestNode,
  waitUntil,
} from "./_lifecycle_fixture.ts";

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

    await t.step("after coild stops, node list says so; node remove waits for --force", async () => {
      await node.stop();
      const list = JSON.parse((await coil(etcd, node, ["node", "list", "--json"])).stdout);
      assert.deepEqual(list.map((n: { live: boolean }) => n.live), [false]);
      assert.ok(list[0].removableInSeconds > 500, "alive recently: the default --node-dead-after is 600 s");
      const refused = await coil(etcd, node, ["node", "remove", name]);
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        /its coild was alive recently .* --force is only for a host known to be down/,
      );
      assert.equal((await addressKeys(client, node)).size, 1, "nothing changed");
      const run = await coil(etcd, node, ["node", "remove", name, "--force"]);
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

Deno.test("coild holds its node name alone", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    await t.step(
      "a second coild with the name, in another netns, exits before changing anything",
      async () => {
        await using node = await startNode({
          etcd,
          client,
          subnets: SUBNETS,
          args: ["--node-lease-ttl", "3"],
        });
        await using pod = await createPod();
        await addPod(node, pod);
        const before = await client.getAll().prefix(node.prefix).strings();
        await using other = await createNetns();
        const refused = await coildRefusing({
          etcd,
          prefix: node.prefix,
          node: other,
          nodeName: node.coild.nodeName,
          args: ["--node-lease-ttl", "3"],
        });
        assert.equal(refused.status.code, 1, refused.log);
        const entries = refused.log.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
        assert.match(
          String(entries.find((e) => e.msg === "refusing to start")?.error),
          new RegExp(
            `^Node name "${node.coild.nodeName}" is held by another coild: host "${Deno.hostname()}" ` +
              `\\(netns net:\\[\\d+\\], pid ${node.coild.process.pid}, started at .*Give each host its own name`,
          ),
          refused.log,
        );
        assert.doesNotMatch(
          refused.log,
          /"msg":"(export table synced|pod networks recovered)"/,
          "kernel untouched",
        );
        assert.deepEqual(await client.getAll().prefix(node.prefix).strings(), before, "etcd unchanged");
        assert.equal((await cni(node, "CHECK", pod)).code, 0, "the first keeps serving");
      },
    );

    await t.step("a SIGKILLed coild restarted at once takes its name over without waiting", async () => {
      // A long TTL: waiting for it would take the test's time limit.
      await using node = await startNode({
        etcd,
        client,
        subnets: SUBNETS,
        args: ["--node-lease-ttl", "120"],
      });
      const pid = node.coild.process.pid;
      await node.kill();
      await node.start();
      const acquired = logEntries(node.coild).find((e) => e.msg === "node name acquired");
      assert.equal(acquired?.tookOverFromPid, pid, node.coild.log());
    });

    await t.step(
      "paused past its TTL: removal refused, then forced; SIGCONT re-acquires the name",
      async () => {
        await using node = await startNode({
          etcd,
          client,
          subnets: SUBNETS,
          args: ["--node-lease-ttl", "2"],
        });
        await using pod = await createPod();
        await addPod(node, pod);
        const name = node.coild.nodeName;
        node.coild.process.kill("SIGSTOP");
        try {
          await waitUntil("the node key expired", async () => (await nodeKey(client, node)) === undefined);
          const before = await client.getAll().prefix(node.prefix).strings();
          const refused = await coil(etcd, node, ["node", "remove", name]);
          assert.equal(refused.code, 1);
          assert.match(refused.stderr, /its coild was alive recently .* removable in \d+m/);
          assert.deepEqual(await client.getAll().prefix(node.prefix).strings(), before, "nothing changed");
          const forced = await coil(etcd, node, ["node", "remove", name, "--force"]);
          assert.equal(forced.code, 0, forced.stderr);
          assert.equal((await addressKeys(client, node)).size, 0);
        } finally {
          node.coild.process.kill("SIGCONT");
        }
        await waitUntil(
          "coild acquired its name again",
          () => logEntries(node.coild).filter((e) => e.msg === "node name acquired").length === 2,
          () => node.coild.log(),
        );
        assert.ok(await nodeKey(client, node), "the node key is back");
      },
    );
  } finally {
    client.close();
  }
});
