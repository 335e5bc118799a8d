// Probe campaign: operator mistakes under churn, two nodes adding and deleting pods meanwhile, every call
// and periodic etcd samples checked by the history checker (_history.ts). The mistakes: a second coild
// on another host with a node name already in use; coild restarted under another --node-name; `coil node
// remove` (no --force) of a node whose coild is paused past its lease TTL; a second coild on the same
// --socket. Each must be refused without changing anything. Sizes: COIL_FAULTS_PROBE_ROUNDS (rounds of
// the four mistakes), COIL_FAULTS_PROBE_CHURN_MS (churn around each mistake); replay: COIL_FAULTS_SEED.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { type CliRun, runCoilCli } from "../helpers/coil_cli.ts";
import { COIL } from "../helpers/coild.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";
import { ChurnRuntime, totalStats } from "./_churn.ts";
import { assertHistory, checkHistory, History } from "./_history.ts";
import { readIpamState } from "./_ipam_state.ts";
import { CoildNode } from "./_node.ts";
import { campaignSeed, envCount } from "./_params.ts";
import { type Random, seededRandom } from "./_random.ts";
import { cniCall, cniCheck, type Network, type Pod, reachable } from "./_runtime.ts";
import { sampleEtcd, startSampler } from "./_sampler.ts";

const ROUNDS = envCount("COIL_FAULTS_PROBE_ROUNDS", 1);
const CHURN_MS = envCount("COIL_FAULTS_PROBE_CHURN_MS", 2000);
/** Concurrent CNI calls per node. */
const WORKERS = 2;
/** Short, so that a SIGSTOP outlasts it in seconds; coild's default is 10. */
const LEASE_TTL_S = 2;
const COILD_ARGS = ["--sweep-interval", "1", "--sweep-grace", "5", "--node-lease-ttl", String(LEASE_TTL_S)];
/** The plugin gives up on a paused coild after this (11), as a runtime's retry would go on. */
const CNI_TIMEOUT_MS = 3000;
/** How long a refused coild may take to exit, or a started one to say ready. */
const VERDICT_MS = 30_000;

Deno.test("operator mistakes under churn on two nodes are refused and never give an address twice", async (t) => {
  const random = seededRandom(campaignSeed("operator_mistakes"));
  console.log(
    `operator mistakes: seed ${random.seed} (replay with COIL_FAULTS_SEED=${random.seed}), ${ROUNDS} rounds, ` +
      `${CHURN_MS} ms of churn around each mistake`,
  );
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix });
  try {
    // 16 blocks of /29 for two nodes: blocks one node gives back are soon claimed by the other, so an
    // address released behind a live pod's back is soon handed out again.
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.68.0.0/25"], blockSizeBits: 3 }),
    );
    await using a = await CoildNode.create({ etcd, prefix, args: COILD_ARGS });
    await using b = await CoildNode.create({ etcd, prefix, args: COILD_ARGS });
    const history = new History();
    await using cluster = await Cluster.create({ etcd, client, prefix, history, random, nodes: [a, b] });
    await using _sampler = startSampler(history, client, prefix, 300);
    const started = Date.now();
    const outcomes: string[] = [];
    const step = async (name: string, body: () => Promise<void>) => {
      let violations = 0;
      const ok = await t.step(name, async () => {
        // The history is checked also when the probe failed: the summary says what each step broke.
        const probe = await cluster.churnAround(body).then(() => undefined, (err: unknown) => err);
        const fresh = await cluster.newViolations();
        violations = fresh.length;
        if (fresh.length > 0) console.log(`operator mistakes: first new violation of this step, ${fresh[0]}`);
        if (probe !== undefined) throw probe;
        assert.deepEqual(fresh.slice(0, 1), [], `${fresh.length} new history violations`);
      });
      outcomes.push(`${ok ? "ok  " : "FAIL"} ${name} (new history violations: ${violations})`);
    };

    for (let round = 1; round <= ROUNDS; round++) {
      await step(
        `round ${round}: a second coild on another host with node name ${a.name} is refused`,
        () => probeDuplicateName(cluster, a),
      );
      await step(
        `round ${round}: coild of ${a.name} restarted with another --node-name is refused`,
        () => probeRenamedNode(cluster, a),
      );
      await step(
        `round ${round}: coil node remove of ${a.name}, paused past its lease TTL, is refused`,
        () => probeRemovePaused(cluster, a),
      );
      await step(
        `round ${round}: a second coild on the socket of ${b.name} is refused`,
        () => probeSecondOnSocket(cluster, b),
      );
    }

    await t.step("after DEL of every pod and a sweep, the whole history holds no violation", async () => {
      await cluster.deleteAll();
      history.final({
        keys: (await readIpamState(client, prefix)).addresses,
        veths: [...await a.taggedVeths(), ...await b.taggedVeths()],
      });
      const s = cluster.stats();
      console.log(
        `operator mistakes: ${s.calls} churn calls (${s.ok} ok, ${s.retries} answered 11), other failures ` +
          `${s.problems.length}; ${((Date.now() - started) / 1000).toFixed(1)} s\n${outcomes.join("\n")}`,
      );
      if (s.problems.length > 0) console.log(`operator mistakes, failures:\n${s.problems.join("\n")}`);
      assertHistory(history, "operator mistakes");
    });
  } finally {
    client.close();
  }
});

/** A second coild on another host (its own netns, pod netns paths hidden) takes a node name in use. */
async function probeDuplicateName(cluster: Cluster, a: CoildNode): Promise<void> {
  const nodeKey = await cluster.nodeKey(a.name);
  assert.ok(nodeKey, `Node key of ${a.name} missing before the probe\n${a.logTail()}`);
  await using host = await createNetns();
  await host.exec(["ip", "link", "set", "lo", "up"]);
  // A short grace: on a tree without the fence, the intruder's sweep acts within the churn that follows.
  const args = ["--node-name", a.name, "--sweep-grace", "1"];
  await using rogue = await Rogue.start(cluster, host, args, { otherHost: true });
  const verdict = await rogue.verdict();
  if (verdict.running) await sleep(CHURN_MS); // let the sweep of the intruder do what it would
  assert.ok(!verdict.running, `A second coild with node name ${a.name} started:\n${rogue.logTail()}`);
  assert.notEqual(verdict.code, 0, rogue.logTail());
  console.log(`operator mistakes: second coild named ${a.name} exited ${verdict.code}: ${rogue.logTail(1)}`);
  assert.match(rogue.log(), new RegExp(escape(a.name)), `The refusal does not name ${a.name}`);
  assert.deepEqual(await cluster.nodeKey(a.name), nodeKey, `Node key of ${a.name} changed`);
}

/** coild of a node with pods stopped and started again under another name, then under its own. */
async function probeRenamedNode(cluster: Cluster, a: CoildNode): Promise<void> {
  const other = `${a.name}-renamed`;
  await a.stop();
  let started = false;
  try {
    await a.start(["--node-name", other]);
    started = true;
    await sleep(CHURN_MS);
  } catch (err) {
    // startCoild() throws when coild exits before ready: the expected refusal. Its log is in the message.
    assert.match(String(err), /did not become ready/, String(err));
    console.log(`operator mistakes: renamed coild refused: ${lastLines(String(err), 1)}`);
  } finally {
    await a.stop();
    await a.start();
  }
  if (started) await cluster.forceRemove(other);
  assert.ok(!started, `coild of ${a.name} started as ${other}\n${a.logTail()}`);
  await cluster.assertResidentsWork(a);
}

/** SIGSTOP past the lease TTL, `coil node remove` without --force, SIGCONT. */
async function probeRemovePaused(cluster: Cluster, a: CoildNode): Promise<void> {
  let before: string[];
  let after: string[];
  let removal: CliRun;
  a.signal("SIGSTOP");
  try {
    await cluster.waitNodeKeyGone(a.name, LEASE_TTL_S * 1000 + 5000);
    // Read once the pause is seconds old: a write coild sent just before SIGSTOP has landed by now.
    before = await cluster.holdingsOf(a.name);
    removal = await runCoilCli(["node", "remove", a.name, ...cluster.cliEtcdFlags()]);
    // Still paused: once resumed, coild serves the ADDs queued meanwhile, which change its holdings.
    after = await cluster.holdingsOf(a.name);
  } finally {
    a.signal("SIGCONT");
  }
  console.log(
    `operator mistakes: node remove of paused ${a.name}: exit ${removal.code}, ` +
      `${lastLines(removal.stderr || removal.stdout, 1)}`,
  );
  assert.notEqual(removal.code, 0, `coil node remove released the paused node: ${removal.stdout}`);
  assert.deepEqual(after, before, "The refused removal changed blocks or addresses");
  await sleep(CHURN_MS);
  await cluster.assertResidentsWork(a);
}

/** A second coild, another node name, in the same host netns on the same socket path. */
async function probeSecondOnSocket(cluster: Cluster, b: CoildNode): Promise<void> {
  const inode = (await Deno.stat(b.socket)).ino;
  const other = `${b.name}-second`;
  {
    await using rogue = await Rogue.start(cluster, b.netns, ["--node-name", other, "--socket", b.socket]);
    const verdict = await rogue.verdict();
    if (verdict.running) await sleep(CHURN_MS);
    await rogue.stop(); // a stopping second coild that took the socket over deletes it
    if (verdict.running) {
      await b.stop();
      await b.start(); // gives the node its socket back for the next probes
      await cluster.forceRemove(other);
      assert.fail(`A second coild on ${b.socket} started:\n${rogue.logTail()}`);
    }
    console.log(`operator mistakes: second coild on ${b.socket} exited ${verdict.code}: ${rogue.logTail(1)}`);
    assert.notEqual(verdict.code, 0, rogue.logTail());
    assert.match(rogue.log(), /socket/i, "The refusal does not name the socket");
  }
  const stat = await Deno.stat(b.socket).catch(() => undefined);
  assert.ok(stat?.isSocket, `The socket ${b.socket} of the first coild is gone\n${b.logTail()}`);
  assert.equal(stat.ino, inode, `The socket ${b.socket} was replaced`);
  await cluster.assertResidentsWork(b);
}

/** A pod that lives through the whole campaign, so that a node always has pods of both modes. */
interface Resident {
  pod: Pod;
  ip: string;
  result: Record<string, unknown>;
  netns: TestNetns;
}

interface ClusterOptions {
  etcd: TestEtcd;
  client: Etcd3;
  prefix: string;
  history: History;
  random: Random;
  nodes: CoildNode[];
}

/** The nodes, a runtime per node, resident pods, and the checks shared by the probes. */
class Cluster implements AsyncDisposable {
  readonly options: ClusterOptions;
  #runtimes: ChurnRuntime[];
  #nets: Network[];
  #residents: Resident[][];
  #reported = new Set<string>();

  private constructor(options: ClusterOptions, runtimes: ChurnRuntime[], nets: Network[]) {
    this.options = options;
    this.#runtimes = runtimes;
    this.#nets = nets;
    this.#residents = nets.map(() => []);
  }

  static async create(options: ClusterOptions): Promise<Cluster> {
    const nets = options.nodes.map((node): Network => ({
      name: "probe",
      socket: node.socket,
      history: options.history,
      node: node.name,
      env: { COIL_CNI_TIMEOUT_MS: String(CNI_TIMEOUT_MS) },
    }));
    const runtimes: ChurnRuntime[] = [];
    const cluster = new Cluster(options, runtimes, nets);
    try {
      for (const [i, net] of nets.entries()) {
        runtimes.push(
          await ChurnRuntime.create({
            net,
            random: options.random,
            mainShare: 0.2,
            maxMain: 3,
            low: 4,
            high: 10,
            readdChance: 0.5,
            idPrefix: `n${i}-`,
          }),
        );
        for (const mode of ["main", "ipam"] as const) await cluster.#addResident(i, mode);
      }
      return cluster;
    } catch (err) {
      await cluster[Symbol.asyncDispose]();
      throw err;
    }
  }

  async #addResident(i: number, mode: Pod["mode"]): Promise<void> {
    const netns = await createNetns();
    const containerId = `resident-${i}-${mode}`;
    const pod: Pod = {
      containerId,
      ifName: "eth0",
      namespace: "probe",
      name: containerId,
      mode,
      netns: netns.path,
    };
    const out = await cniCall(this.#nets[i], "ADD", pod);
    if (out.kind !== "ok") {
      await netns[Symbol.asyncDispose]();
      throw new Error(`ADD of resident ${containerId} failed: ${out.msg}`);
    }
    this.#residents[i].push({ pod, ip: out.ip!, result: out.result!, netns });
  }

  /** Churn on every node while `body` runs (from CHURN_MS / 2 before it), then every owed DEL. */
  async churnAround(body: () => Promise<void>): Promise<void> {
    let stop = false;
    const runs = this.#runtimes.map((r) => r.run(WORKERS, () => stop));
    try {
      await sleep(CHURN_MS / 2);
      await body();
    } finally {
      stop = true;
      await Promise.all(runs);
    }
    for (const r of this.#runtimes) await r.drain();
  }

  /** Samples etcd once more and returns the violations (rule and message) no earlier call returned. */
  async newViolations(): Promise<string[]> {
    await sampleEtcd(this.options.history, this.options.client, this.options.prefix);
    const fresh = checkHistory(this.options.history).violations.filter((v) => !this.#reported.has(v.key));
    for (const v of fresh) this.#reported.add(v.key);
    return fresh.map((v) => `rule ${v.rule}: ${v.message}`);
  }

  /** Residents of `node` answer CHECK with their ADD's result, and main-mode ones answer a ping. */
  async assertResidentsWork(node: CoildNode): Promise<void> {
    const i = this.options.nodes.indexOf(node);
    for (const r of this.#residents[i]) {
      const out = await cniCheck(this.#nets[i], r.pod, r.result);
      assert.equal(
        out.kind,
        "ok",
        `CHECK of ${r.pod.containerId} on ${node.name}: ${out.msg}\n${node.logTail()}`,
      );
      if (r.pod.mode === "main") {
        assert.ok(
          await reachable(node.netns, r.ip),
          `${r.pod.containerId} at ${r.ip} does not answer a ping`,
        );
      }
    }
  }

  /** The node's liveness record as etcd has it (value, create revision, lease), or undefined. */
  async nodeKey(node: string): Promise<string | undefined> {
    const res = await this.options.client.get(keysFor(this.options.prefix).node(node)).exec();
    const kv = res.kvs[0];
    return kv ? `${kv.value.toString()} created at ${kv.create_revision} lease ${kv.lease}` : undefined;
  }

  /**
   * Waits until the node's liveness key is gone (its lease expired) or `ms` passed: a fenced identity
   * may outlive the lease, and the removal must be refused either way.
   */
  async waitNodeKeyGone(node: string, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && await this.nodeKey(node) !== undefined) await sleep(200);
  }

  /** Blocks of `node` and the addresses in them, as sorted text, to compare before and after. */
  async holdingsOf(node: string): Promise<string[]> {
    const state = await readIpamState(this.options.client, this.options.prefix);
    const blocks = new Set(state.blocks.filter((b) => b.node === node).map((b) => b.block));
    return [
      ...[...blocks].map((b) => `block ${b}`),
      ...state.addresses.filter((a) => blocks.has(a.block)).map((a) => `${a.ip} ${a.containerId}`),
    ].sort();
  }

  cliEtcdFlags(): string[] {
    return ["--etcd-endpoints", this.options.etcd.endpoint, "--etcd-prefix", this.options.prefix];
  }

  /** Gives back the blocks a wrongly started coild claimed under `node`, so the pool stays usable. */
  async forceRemove(node: string): Promise<void> {
    await runCoilCli(["node", "remove", node, "--force", ...this.cliEtcdFlags()]);
  }

  /** DELs every churned pod and resident, then waits for the sweep to leave no address key. */
  async deleteAll(): Promise<void> {
    for (const r of this.#runtimes) await r.deleteAll();
    for (const [i, residents] of this.#residents.entries()) {
      for (const r of [...residents]) {
        for (let attempt = 1;; attempt++) {
          const out = await cniCall(this.#nets[i], "DEL", r.pod);
          if (out.kind === "ok") break;
          if (attempt >= 50) throw new Error(`DEL of ${r.pod.containerId} failed: ${out.msg}`);
          await sleep(200);
        }
        residents.splice(residents.indexOf(r), 1);
        await r.netns[Symbol.asyncDispose]();
      }
    }
    const deadline = Date.now() + 30_000;
    while ((await readIpamState(this.options.client, this.options.prefix)).addresses.length > 0) {
      if (Date.now() > deadline) break; // the history's rule (c) reports what is left
      await sleep(200);
    }
  }

  stats(): ReturnType<typeof totalStats> {
    return totalStats(this.#runtimes.map((r) => r.stats));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      for (const r of this.#runtimes) await r[Symbol.asyncDispose]();
    } finally {
      for (const r of this.#residents.flat()) await r.netns[Symbol.asyncDispose]();
    }
  }
}

/** A coild started by hand, outside CoildNode: one the operator should not have started. */
class Rogue implements AsyncDisposable {
  #process: Deno.ChildProcess;
  #log = "";
  #exited: Deno.CommandStatus | undefined;
  #status: Promise<Deno.CommandStatus>;
  #logDone: Promise<void>;
  #dir: string;

  private constructor(process: Deno.ChildProcess, dir: string) {
    this.#process = process;
    this.#dir = dir;
    this.#status = process.status.then((s) => this.#exited = s);
    const decoder = new TextDecoder();
    this.#logDone = process.stderr.pipeTo(
      new WritableStream({ write: (chunk) => void (this.#log += decoder.decode(chunk, { stream: true })) }),
    ).catch(() => {});
  }

  /**
   * Starts `coil daemon` in `netns` with the cluster's etcd and `args` (which override the defaults: a
   * socket of its own, the node's flags). `otherHost`: pod netns paths of this machine are hidden from
   * it, as they would be on another host.
   */
  static async start(
    cluster: Cluster,
    netns: TestNetns,
    args: string[],
    options: { otherHost?: boolean } = {},
  ): Promise<Rogue> {
    const dir = await Deno.makeTempDir({ prefix: "coil-t-rogue-" });
    const daemon = [
      COIL,
      "daemon",
      // The UNIX endpoint: the host's loopback is not reachable from inside a netns.
      "--etcd-endpoints",
      cluster.options.etcd.unixEndpoint,
      "--etcd-prefix",
      cluster.options.prefix,
      "--socket",
      `${dir}/coild.sock`,
      ...COILD_ARGS,
      ...args,
    ];
    // `ip netns exec` runs the command in a mount namespace of its own, so the tmpfs stays in there.
    const command = options.otherHost
      ? ["sh", "-c", 'mount -t tmpfs coil-t-other-host /run/netns && exec "$@"', "sh", ...daemon]
      : daemon;
    const process = new Deno.Command("ip", {
      args: ["netns", "exec", netns.name, ...command],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    process.stdout.pipeTo(new WritableStream()).catch(() => {});
    return new Rogue(process, dir);
  }

  /** Waits until it exits (`running: false`, its exit code) or says it is ready (`running: true`). */
  async verdict(): Promise<{ running: boolean; code?: number }> {
    const deadline = Date.now() + VERDICT_MS;
    while (Date.now() < deadline) {
      if (this.#exited) return { running: false, code: this.#exited.code };
      if (this.#log.includes('"msg":"ready"')) return { running: true };
      await sleep(50);
    }
    throw new Error(`The second coild neither exited nor got ready in ${VERDICT_MS} ms:\n${this.logTail()}`);
  }

  log(): string {
    return this.#log;
  }

  logTail(lines = 20): string {
    return lastLines(this.#log, lines);
  }

  /** SIGTERM and wait. Idempotent. */
  async stop(): Promise<void> {
    if (!this.#exited) {
      try {
        this.#process.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    await this.#status;
    await this.#logDone;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

function lastLines(text: string, n: number): string {
  return text.trim().split("\n").slice(-n).join("\n");
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
