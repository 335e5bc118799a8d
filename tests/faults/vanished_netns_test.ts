// Fault campaign: pods whose netns vanished without a DEL (a runtime that crashed or lost the call) are
// reclaimed by coild's sweep once the grace has passed, and not before; GC with a list of valid
// attachments releases exactly the others. Pods that still exist keep their address and stay reachable.
// Every call, every vanished netns and each comparison's etcd read go to the history checker (_history.ts).

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";
import { assertHistory, History } from "./_history.ts";
import { compare, disagreementList, holdersOf, readIpamState } from "./_ipam_state.ts";
import { CoildNode } from "./_node.ts";
import { cniCall, cniGc, type Network, type Pod, reachable } from "./_runtime.ts";

/** Short sweep settings, so that the campaign waits seconds rather than the minute of the defaults. */
const SWEEP_ARGS = ["--sweep-interval", "1", "--sweep-grace", "2"];
const CONVERGE_MS = 30_000;

/** A pod the test created: its netns (when it still exists) and the address its ADD returned. */
interface TestPod {
  pod: Pod;
  ip: string;
  netns?: TestNetns;
}

Deno.test("the sweep of coild releases exactly the pods whose netns vanished without DEL", async (t) => {
  await using etcd = await startEtcd();
  await using fixture = await Fixture.create(etcd, SWEEP_ARGS);
  const { node, net } = fixture;
  const pods: TestPod[] = [];
  for (let i = 0; i < 12; i++) pods.push(await fixture.addPod(`swept${i}`, i % 2 === 0 ? "main" : "ipam"));
  const gone = pods.filter((_, i) => i % 4 < 2); // three of each mode
  const kept = pods.filter((p) => !gone.includes(p));

  await t.step("addresses of vanished netns are released, the others kept", async () => {
    for (const p of gone) await fixture.vanish(p);
    const vanishedAt = Date.now();
    await fixture.waitUntil(
      "the sweep released the vanished pods",
      async () => (await fixture.disagreements(kept)).length === 0,
    );
    console.log(
      `vanished netns: ${gone.length} of ${pods.length} pods (half main mode) lost their netns without DEL; ` +
        `all ${gone.length} released ${Date.now() - vanishedAt} ms later (sweep interval 1 s, grace 2 s), ` +
        `the other ${kept.length} kept`,
    );
    await fixture.assertPodsIntact(kept);
  });

  await t.step("a late DEL of a swept pod succeeds and changes nothing", async () => {
    for (const p of gone) {
      const out = await cniCall(net, "DEL", p.pod);
      assert.equal(out.kind, "ok", `${out.msg}\n${node.logTail()}`);
    }
    assert.deepEqual(await fixture.disagreements(kept), []);
  });

  await t.step("the log names every swept pod and its missing netns", () => {
    for (const p of gone) {
      assert.match(node.log(), new RegExp(`"released".*sweep: netns .*${p.pod.netns}.*${p.pod.containerId}`));
    }
  });

  await t.step(
    "after DEL of every pod, the history holds no duplicate, lost or leftover address",
    async () => {
      await fixture.deleteAllAndCheck(pods, "vanished netns (sweep)");
    },
  );
});

Deno.test("the sweep of coild keeps a vanished pod's address during the grace, and a restart keeps it too", async (t) => {
  await using etcd = await startEtcd();
  // A grace far longer than the test: whatever the machine's speed, no release may happen.
  await using fixture = await Fixture.create(etcd, ["--sweep-interval", "1", "--sweep-grace", "3600"]);
  const pods = [await fixture.addPod("graced0", "main"), await fixture.addPod("graced1", "ipam")];
  const [vanished, kept] = pods;
  await fixture.vanish(vanished);

  await t.step("several sweeps later the address is still held", async () => {
    await sleep(4000); // about four sweeps at one per second; fewer on a loaded machine, never a false failure
    assert.deepEqual(await fixture.disagreements(pods), []);
  });

  await t.step(
    "after a SIGKILL and a restart, the grace starts over and the address is still held",
    async () => {
      await fixture.node.kill();
      await fixture.node.start();
      await sleep(3000);
      assert.deepEqual(await fixture.disagreements(pods), []);
    },
  );

  await t.step("restarted with a short grace, coild releases it and keeps the other", async () => {
    await fixture.node.stop();
    await fixture.node.start(SWEEP_ARGS); // later flags win
    await fixture.waitUntil(
      "the sweep released the vanished pod",
      async () => (await fixture.disagreements([kept])).length === 0,
    );
    await fixture.assertPodsIntact([kept]);
  });

  await t.step(
    "after DEL of every pod, the history holds no duplicate, lost or leftover address",
    async () => {
      await fixture.deleteAllAndCheck(pods, "vanished netns (grace)");
    },
  );
});

Deno.test("GC with valid attachments releases exactly the attachments not listed", async (t) => {
  await using etcd = await startEtcd();
  // No sweep: every netns exists, and GC alone must do the work.
  await using fixture = await Fixture.create(etcd, ["--sweep-interval", "0"]);
  const { net, node } = fixture;
  const pods: TestPod[] = [];
  for (let i = 0; i < 8; i++) pods.push(await fixture.addPod(`gc${i}`, i % 2 === 0 ? "main" : "ipam"));
  // A second interface of one IPAM-mode pod: GC keys on container ID and interface, not the container alone.
  const second = await fixture.addPod("gc1", "ipam", "eth1", pods[1].netns);
  const valid = [...pods.slice(0, 4), pods[5]];

  await t.step("GC of another network releases nothing of this one", async () => {
    const out = await cniGc({ ...net, name: "other-network" }, []);
    assert.equal(out.kind, "ok", out.msg);
    assert.deepEqual(await fixture.disagreements([...pods, second]), []);
  });

  await t.step(
    "GC releases the unlisted attachments, second interface included, and their veths",
    async () => {
      const out = await cniGc(net, valid.map((p) => p.pod));
      assert.equal(out.kind, "ok", `${out.msg}\n${node.logTail()}`);
      assert.deepEqual(await fixture.disagreements(valid), []);
      await fixture.assertPodsIntact(valid);
    },
  );

  await t.step("GC again with the same list is a no-op", async () => {
    const out = await cniGc(net, valid.map((p) => p.pod));
    assert.equal(out.kind, "ok", out.msg);
    assert.deepEqual(await fixture.disagreements(valid), []);
  });

  await t.step("DEL of a pod GC released succeeds", async () => {
    const out = await cniCall(net, "DEL", pods[4].pod);
    assert.equal(out.kind, "ok", out.msg);
  });

  await t.step(
    "after DEL of every pod, the history holds no duplicate, lost or leftover address",
    async () => {
      await fixture.deleteAllAndCheck([...pods, second], "vanished netns (GC)");
    },
  );
});

/** One node, its pool, and the pods the test created; dispose removes every pod netns left. */
class Fixture implements AsyncDisposable {
  readonly node: CoildNode;
  readonly net: Network;
  readonly history = new History();
  #client: Etcd3;
  #prefix: string;
  #netns: TestNetns[] = [];

  private constructor(node: CoildNode, client: Etcd3, prefix: string) {
    this.node = node;
    this.net = { name: "vanish", socket: node.socket, history: this.history, node: node.name };
    this.#client = client;
    this.#prefix = prefix;
  }

  static async create(etcd: TestEtcd, args: string[]): Promise<Fixture> {
    const prefix = etcd.newPrefix();
    const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix });
    try {
      await new PoolStore(client, prefix).createPool(
        parsePool("default", { subnets: ["10.66.0.0/16"], blockSizeBits: 4 }),
      );
      return new Fixture(await CoildNode.create({ etcd, prefix, args }), client, prefix);
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** ADDs a pod in its own netns (or `netns`); @throws {AssertionError} when ADD fails. */
  async addPod(id: string, mode: Pod["mode"], ifName = "eth0", netns?: TestNetns): Promise<TestPod> {
    if (!netns) {
      netns = await createNetns();
      this.#netns.push(netns);
    }
    const pod: Pod = { containerId: id, ifName, namespace: "vanish", name: id, mode, netns: netns.path };
    const out = await cniCall(this.net, "ADD", pod);
    assert.equal(out.kind, "ok", `ADD ${id}: ${out.msg}\n${this.node.logTail()}`);
    return { pod, ip: out.ip!, netns };
  }

  /** Removes the pod's netns without a DEL, as a crashed runtime would leave it. */
  async vanish(p: TestPod): Promise<void> {
    await p.netns![Symbol.asyncDispose]();
    this.#netns.splice(this.#netns.indexOf(p.netns!), 1);
    p.netns = undefined;
    this.history.vanished(
      { network: this.net.name, containerId: p.pod.containerId, ifName: p.pod.ifName },
      this.node.name,
    );
  }

  /** Every way etcd differs from "exactly `live` hold addresses". */
  async disagreements(live: TestPod[]): Promise<string[]> {
    const holders = holdersOf(live);
    const start = History.now();
    const state = await readIpamState(this.#client, this.#prefix);
    this.history.sample(start, state.addresses);
    return disagreementList(compare(state, holders));
  }

  /** Main-mode pods answer a ping, and host veths exist for exactly them. */
  async assertPodsIntact(live: TestPod[]): Promise<void> {
    const mains = live.filter((p) => p.pod.mode === "main");
    for (const p of mains) {
      assert.ok(await reachable(this.node.netns, p.ip), `${p.pod.containerId} at ${p.ip} does not answer`);
    }
    const veths = await this.node.taggedContainerIds();
    assert.deepEqual(veths, mains.map((p) => p.pod.containerId).sort(), this.node.logTail());
  }

  /**
   * DELs every pod (a DEL of a pod already released is a no-op), then checks the whole history.
   * @throws {AssertionError} when a DEL fails; {Error} on a history violation.
   */
  async deleteAllAndCheck(pods: TestPod[], campaign: string): Promise<void> {
    for (const p of pods) {
      const out = await cniCall(this.net, "DEL", p.pod);
      assert.equal(out.kind, "ok", `DEL ${p.pod.containerId}: ${out.msg}\n${this.node.logTail()}`);
    }
    const { addresses } = await readIpamState(this.#client, this.#prefix);
    this.history.final({ keys: addresses, veths: await this.node.taggedVeths() });
    assertHistory(this.history, campaign);
  }

  async waitUntil(what: string, check: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + CONVERGE_MS;
    while (!await check()) {
      if (Date.now() > deadline) assert.fail(`Not within ${CONVERGE_MS} ms: ${what}\n${this.node.logTail()}`);
      await sleep(200);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.node[Symbol.asyncDispose]();
      for (const netns of this.#netns) await netns[Symbol.asyncDispose]();
    } finally {
      this.#client.close();
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
