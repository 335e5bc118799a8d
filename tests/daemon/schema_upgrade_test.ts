// An upgrade over live pods: the schema-1 records of tests/fixtures/schema-1 (written by real coilds of
// commit 62c6a4d, one node without the block index) are loaded into a real etcd, and coilds of this code
// start on them: they write the schema key once, serve CHECK, DEL and ADD for the fixture's pods; a second
// start changes nothing; a newer schema makes coild refuse to start with every key left as it was. The
// campaign runs a coild of 62c6a4d itself on one node, with pods churning on both, while the other node's
// coild upgrades, then restarts it on the upgraded data before upgrading it too (trials and churn time
// from COIL_FAULTS_UPGRADE_TRIALS and COIL_FAULTS_UPGRADE_CHURN_MS).

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import { SCHEMA_VERSION, schemaValue } from "../../ipam/schema.ts";
import { type CniOutcome, runCni } from "../helpers/cni.ts";
import { coildRefusing, startCoild, type TestCoild } from "../helpers/coild.ts";
import { type FixtureRecords, loadRecords, readPrefix } from "../helpers/etcd_dump.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { createNetns, removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";
import { type ReleaseTree, releaseTree } from "../helpers/release_tree.ts";
import { envCount } from "../faults/_params.ts";

await removeLeftoverNetns();

interface FixturePod {
  node: string;
  containerId: string;
  ifName: string;
  netns: string;
  args: string;
  result: { ips: { address: string }[] };
}

interface Fixture {
  network: string;
  pods: FixturePod[];
  records: FixtureRecords;
}

const FIXTURE: Fixture = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/schema-1/records.json", import.meta.url)),
);
const NODES = [...new Set(FIXTURE.pods.map((p) => p.node))];
/** The fixture's netns paths do not exist here: no sweep may take their pods during the test. */
const COILD_ARGS = ["--sweep-grace", "3600"];

/** One coild per fixture node, each in its own netns, all stopped and removed on dispose. */
class Nodes implements AsyncDisposable {
  readonly coilds = new Map<string, TestCoild>();
  private readonly netns = new Map<string, TestNetns>();
  constructor(private readonly etcd: TestEtcd, private readonly prefix: string) {}

  async netnsOf(node: string): Promise<TestNetns> {
    let ns = this.netns.get(node);
    if (!ns) {
      ns = await createNetns();
      this.netns.set(node, ns);
      await ns.exec(["ip", "link", "set", "lo", "up"]);
    }
    return ns;
  }

  /** Starts coild for each of `nodes` at once: this tree's, or the one of `release`. */
  async start(nodes: string[], release?: ReleaseTree): Promise<void> {
    const started = await Promise.allSettled(nodes.map(async (nodeName) => {
      const coild = await startCoild({
        etcd: this.etcd,
        prefix: this.prefix,
        node: await this.netnsOf(nodeName),
        nodeName,
        args: COILD_ARGS,
        coil: release?.coil,
      });
      this.coilds.set(nodeName, coild);
    }));
    const failed = started.find((s) => s.status === "rejected");
    if (failed) throw failed.reason;
  }

  /** SIGTERM to the coild of `node`; asserts a clean exit. */
  async stop(node: string): Promise<void> {
    const coild = this.coilds.get(node);
    if (!coild) return;
    this.coilds.delete(node);
    const status = await coild.stop();
    assert.equal(status.code, 0, `coild ${node} exited with ${status.code}:\n${coild.log()}`);
  }

  async stopAll(): Promise<void> {
    for (const node of [...this.coilds.keys()]) await this.stop(node);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const coild of this.coilds.values()) await coild.stop();
    for (const ns of this.netns.values()) await ns[Symbol.asyncDispose]();
  }
}

/** One IPAM-mode CNI exec for `pod` against `coild`, through this tree's plugin or `release`'s. */
function cni(
  coild: TestCoild,
  command: "ADD" | "CHECK" | "DEL",
  pod: Omit<FixturePod, "node" | "result">,
  prevResult?: unknown,
  release?: ReleaseTree,
): Promise<CniOutcome> {
  const netconf = {
    cniVersion: "1.1.0",
    name: FIXTURE.network,
    type: "ptp",
    ipam: { type: "coil", socket: coild.socket },
    ...(prevResult ? { prevResult } : {}),
  };
  return runCni({ command, netconf, ...pod, plugin: release?.coil });
}

const addressesOf = (result: unknown) => (result as FixturePod["result"]).ips.map((ip) => ip.address).sort();

/** The fixture's pools, blocks and addresses, as stored now under `prefix`. */
async function fixtureRecordsNow(client: Etcd3, prefix: string): Promise<Record<string, string>> {
  const now = await readPrefix(client, prefix);
  return Object.fromEntries(
    Object.keys(FIXTURE.records)
      .filter((key) => /^(pools|blocks|addresses)\//.test(key))
      .map((key) => [key, now.get(prefix + key)?.value ?? "(absent)"]),
  );
}

Deno.test("coild upgrades schema-1 records over live pods", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  const prefix = etcd.newPrefix();
  const schemaKey = keysFor(prefix).schema();
  try {
    await using nodes = new Nodes(etcd, prefix);
    await loadRecords(client, prefix, FIXTURE.records);
    const loaded = await fixtureRecordsNow(client, prefix);
    assert.equal((await readPrefix(client, prefix)).has(schemaKey), false, "the fixture holds a schema key");

    await t.step("coilds of two nodes starting at once write the schema key once", async () => {
      await nodes.start(NODES);
      const kv = (await client.getAll().prefix(schemaKey).exec()).kvs.find((k) =>
        k.key.toString() === schemaKey
      );
      assert.equal(kv?.value.toString(), schemaValue(SCHEMA_VERSION));
      assert.equal(kv?.version, "1", "the schema key was written more than once");
      const upgraders = [...nodes.coilds.values()].filter((c) =>
        c.log().includes('"msg":"etcd data upgraded"')
      );
      assert.equal(upgraders.length, 1, "exactly one coild reports the upgrade");
      assert.deepEqual(await fixtureRecordsNow(client, prefix), loaded, "the upgrade changed a record");
      const index = await readPrefix(client, `${prefix}node-blocks-complete/`);
      assert.deepEqual([...index.keys()].map((k) => k.split("/").pop()).sort(), [...NODES].sort());
    });

    await t.step("CHECK succeeds for every pod of the fixture, with its ADD result", async () => {
      for (const { node, result, ...pod } of FIXTURE.pods) {
        const out = await cni(nodes.coilds.get(node)!, "CHECK", pod, result);
        assert.equal(out.code, 0, `CHECK ${pod.containerId}: ${out.stdout}${out.stderr}`);
      }
    });

    await t.step("a repeated ADD of a fixture pod returns its addresses", async () => {
      const { node, result, ...pod } = FIXTURE.pods[0];
      const out = await cni(nodes.coilds.get(node)!, "ADD", pod);
      assert.equal(out.code, 0, out.stdout);
      assert.deepEqual(addressesOf(out.json), addressesOf(result));
    });

    await t.step("DEL releases one fixture pod per node; CHECK then fails for it", async () => {
      for (const node of NODES) {
        const { result, node: _, ...pod } = FIXTURE.pods.find((p) => p.node === node)!;
        const coild = nodes.coilds.get(node)!;
        const del = await cni(coild, "DEL", pod);
        assert.equal(del.code, 0, `DEL ${pod.containerId}: ${del.stdout}`);
        const check = await cni(coild, "CHECK", pod, result);
        assert.notEqual(check.code, 0, `CHECK after DEL of ${pod.containerId} succeeded`);
        const addresses = await client.getAll().prefix(keysFor(prefix).addresses()).strings();
        assert.ok(
          Object.values(addresses).every((v) => JSON.parse(v).containerId !== pod.containerId),
          `${pod.containerId} still holds an address`,
        );
      }
    });

    await t.step("ADD of a new pod on each node succeeds after the upgrade", async () => {
      for (const node of NODES) {
        const pod = {
          containerId: `schema2-${node}`,
          ifName: "eth0",
          netns: `/var/run/netns/schema-2-${node}`,
          args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=new-${node}`,
        };
        const out = await cni(nodes.coilds.get(node)!, "ADD", pod);
        assert.equal(out.code, 0, `ADD on ${node}: ${out.stdout}${out.stderr}`);
        assert.equal(addressesOf(out.json).length, 2, "one address per family");
        const check = await cni(nodes.coilds.get(node)!, "CHECK", pod, out.json);
        assert.equal(check.code, 0, check.stdout);
      }
    });

    await t.step("a second start changes neither the schema key nor a record", async () => {
      await nodes.stopAll();
      const before = await readPrefix(client, prefix);
      await nodes.start([NODES[0]]);
      const after = await readPrefix(client, prefix);
      assert.deepEqual(after.get(schemaKey), before.get(schemaKey));
      assert.ok(!nodes.coilds.get(NODES[0])!.log().includes("etcd data upgraded"));
      const records = (m: typeof before) =>
        [...m].filter(([key]) => /^(pools|addresses)\//.test(key.slice(prefix.length)));
      assert.deepEqual(records(after), records(before));
    });

    await t.step("a newer schema makes coild refuse to start, every key unchanged", async () => {
      await nodes.stopAll();
      await client.put(schemaKey).value(schemaValue(SCHEMA_VERSION + 1));
      const before = await readPrefix(client, prefix);
      const { status, log } = await coildRefusing({
        etcd,
        prefix,
        node: await nodes.netnsOf(NODES[0]),
        nodeName: NODES[0],
        args: COILD_ARGS,
      });
      assert.equal(status.code, 1);
      const refusal = log.split("\n").find((line) => line.includes('"msg":"refusing to start"'));
      assert.ok(refusal, log);
      const message = String(JSON.parse(refusal).error);
      assert.match(message, new RegExp(`schema version ${SCHEMA_VERSION + 1} \\(key "${schemaKey}"\\)`));
      assert.ok(!message.includes("\n"), "the message is one line");
      assert.deepEqual(await readPrefix(client, prefix), before, "a refusing coild changed etcd");
    });
  } finally {
    await client.delete().prefix(prefix);
    client.close();
  }
});

/** The release whose records the fixture holds: its coilds run beside this tree's in the campaign. */
const OLD_RELEASE = "62c6a4d";
const TRIALS = envCount("COIL_FAULTS_UPGRADE_TRIALS", 2);
/** How long both nodes churn once the upgraded coild serves. */
const CHURN_MS = envCount("COIL_FAULTS_UPGRADE_CHURN_MS", 1500);

type PodSpec = Omit<FixturePod, "node" | "result">;

/** Every live attachment of a trial, and what the calls did. */
class Ledger {
  /** By container ID. */
  readonly live = new Map<string, { node: string; pod: PodSpec; result: unknown }>();
  /** Address → container ID of the live attachment holding it. */
  readonly holders = new Map<string, string>();
  calls = 0;
  oldCalls = 0;
  slowestMs = 0;
  duplicates: string[] = [];
  failures: string[] = [];

  attach(node: string, pod: PodSpec, result: unknown): void {
    for (const address of addressesOf(result)) {
      const holder = this.holders.get(address);
      if (holder !== undefined && holder !== pod.containerId) {
        this.duplicates.push(`${address}: ${holder} and ${pod.containerId}`);
      }
      this.holders.set(address, pod.containerId);
    }
    this.live.set(pod.containerId, { node, pod, result });
  }

  detach(containerId: string): void {
    const entry = this.live.get(containerId);
    if (!entry) return;
    for (const address of addressesOf(entry.result)) this.holders.delete(address);
    this.live.delete(containerId);
  }

  /** Runs one call, timing it; a failure is recorded with the call and its answer. */
  async call(
    coild: TestCoild,
    command: "ADD" | "CHECK" | "DEL",
    pod: PodSpec,
    prevResult?: unknown,
    release?: ReleaseTree,
  ): Promise<CniOutcome> {
    const start = performance.now();
    const out = await cni(coild, command, pod, prevResult, release);
    this.slowestMs = Math.max(this.slowestMs, performance.now() - start);
    this.calls++;
    if (release) this.oldCalls++;
    if (out.code !== 0) this.failures.push(`${command} ${pod.containerId}: ${out.stdout}${out.stderr}`);
    return out;
  }
}

/** ADD, CHECK and (two times in three) DEL of new pods on `node` until `until.done`. */
async function churn(
  ledger: Ledger,
  node: string,
  coild: TestCoild,
  tag: string,
  until: { done: boolean },
  release?: ReleaseTree,
): Promise<void> {
  for (let i = 0; !until.done; i++) {
    const pod = {
      containerId: `${tag}-${node}-${i}`,
      ifName: "eth0",
      netns: `/var/run/netns/${tag}-${node}-${i}`,
      args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${tag}-${i}`,
    };
    const added = await ledger.call(coild, "ADD", pod, undefined, release);
    if (added.code !== 0) continue;
    ledger.attach(node, pod, added.json);
    await ledger.call(coild, "CHECK", pod, added.json, release);
    if (i % 3 === 0) continue;
    if ((await ledger.call(coild, "DEL", pod, undefined, release)).code === 0) ledger.detach(pod.containerId);
  }
}

Deno.test(`coild upgrades over live pods while a coild of ${OLD_RELEASE} serves another node`, async () => {
  await using etcd = await startEtcd();
  await using old = await releaseTree(OLD_RELEASE);
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  const totals = { calls: 0, oldCalls: 0, carried: 0, slowestMs: 0, schemaWrites: 0, leaked: 0 };
  const [upgraded, oldNode] = NODES;
  try {
    for (let trial = 0; trial < TRIALS; trial++) {
      const prefix = etcd.newPrefix();
      const schemaKey = keysFor(prefix).schema();
      try {
        await using nodes = new Nodes(etcd, prefix);
        await loadRecords(client, prefix, FIXTURE.records);
        const ledger = new Ledger();
        for (const { node, result, ...pod } of FIXTURE.pods) ledger.attach(node, pod, result);

        // The old release serves its node throughout; this tree's coild upgrades the data meanwhile.
        await nodes.start([oldNode], old);
        const until = { done: false };
        const oldChurn = churn(ledger, oldNode, nodes.coilds.get(oldNode)!, `t${trial}`, until, old);
        while (ledger.oldCalls < 3 && ledger.failures.length === 0) {
          await new Promise((r) => setTimeout(r, 20));
        }
        await nodes.start([upgraded]);
        const newChurn = churn(ledger, upgraded, nodes.coilds.get(upgraded)!, `t${trial}`, until);
        await new Promise((r) => setTimeout(r, CHURN_MS));
        until.done = true;
        await Promise.all([oldChurn, newChurn]);
        assert.deepEqual(ledger.failures, [], "a CNI call failed during the upgrade");
        const schema = (await readPrefix(client, prefix)).get(schemaKey);
        assert.equal(schema?.value, schemaValue(SCHEMA_VERSION), "the schema key was not written");

        // The old release restarted on upgraded data (a node rebooted mid-rollout) serves its pods.
        await nodes.stop(oldNode);
        await nodes.start([oldNode], old);
        for (const { node, pod, result } of ledger.live.values()) {
          if (node === oldNode) await ledger.call(nodes.coilds.get(oldNode)!, "CHECK", pod, result, old);
        }
        assert.deepEqual(ledger.failures, [], "the old release failed on upgraded data");

        // Then the old node is upgraded too: it finds the key and serves every live pod of both releases.
        await nodes.stop(oldNode);
        await nodes.start([oldNode]);
        assert.ok(!nodes.coilds.get(oldNode)!.log().includes("etcd data upgraded"));
        totals.carried += ledger.live.size;
        for (const [containerId, { node, pod, result }] of [...ledger.live]) {
          const coild = nodes.coilds.get(node)!;
          assert.equal((await ledger.call(coild, "CHECK", pod, result)).code, 0, `lost ${containerId}`);
          if ((await ledger.call(coild, "DEL", pod)).code === 0) ledger.detach(containerId);
        }
        assert.deepEqual(ledger.failures, []);
        assert.deepEqual(ledger.duplicates, [], "an address was held by two live pods");
        const kv = (await client.getAll().prefix(schemaKey).exec()).kvs.find((k) =>
          k.key.toString() === schemaKey
        );
        assert.equal(kv?.version, "1", "the schema key was written more than once");
        assert.equal((await readPrefix(client, prefix)).get(schemaKey)?.modRevision, schema?.modRevision);
        totals.schemaWrites += Number(kv?.version);
        const leaked = Object.keys(await client.getAll().prefix(keysFor(prefix).addresses()).keys());
        totals.leaked += leaked.length;
        assert.deepEqual(leaked, [], "address records left after every pod's DEL");
        totals.calls += ledger.calls;
        totals.oldCalls += ledger.oldCalls;
        totals.slowestMs = Math.max(totals.slowestMs, ledger.slowestMs);
      } finally {
        await client.delete().prefix(prefix);
      }
    }
    console.log(
      `upgrade over live pods: ${TRIALS} trials, ${totals.calls} CNI calls (${totals.oldCalls} of them ` +
        `through coil and coild of ${OLD_RELEASE}), ${totals.carried} live pods carried through, failed ` +
        `calls 0, slowest ${Math.round(totals.slowestMs)} ms, schema writes ${totals.schemaWrites}/` +
        `${TRIALS}, duplicates 0, lost 0, leaked ${totals.leaked}`,
    );
  } finally {
    client.close();
  }
});
