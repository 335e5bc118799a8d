// The cluster of the partition campaign (partition_test.ts): three coild nodes, a churning runtime and
// resident pods on each, fresh-pod probes, an etcd watch that feeds the history checker and flags any
// block of a guarded node owned by another, and the checks of a node against its state before a cut.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { aggregate } from "../../ipam/aggregate.ts";
import { formatCidr, parseCidr } from "../../ipam/cidr.ts";
import { keysFor } from "../../ipam/keys.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";
import { ChurnRuntime, totalStats } from "./_churn.ts";
import { History } from "./_history.ts";
import { exportedPrefixes, type IpamState, readIpamState } from "./_ipam_state.ts";
import type { CoildNode } from "./_node.ts";
import type { Random } from "./_random.ts";
import { cniCall, type Network, type Pod } from "./_runtime.ts";

/** Calls started in the background: stop() starts no more, done() waits for those in flight. */
export interface Probes {
  stop(): void;
  done(): Promise<void>;
}

/** A node's blocks in etcd (block ids, sorted) and its table 119 (prefixes, sorted). */
export interface Snapshot {
  blocks: string[];
  table: string[];
}

export interface ClusterOptions {
  client: Etcd3;
  prefix: string;
  history: History;
  random: Random;
  nodes: CoildNode[];
  /** Concurrent CNI calls of each node's churn, in the order of `nodes`. */
  workers: number[];
  /** The plugin's deadline (COIL_CNI_TIMEOUT_MS). */
  cniTimeoutMs: number;
}

/** A pod of the campaign that lives throughout it. */
interface Resident {
  id: string;
  pod: Pod;
  ip: string;
  netns: TestNetns;
  node: number;
}

/** The three nodes, a churning runtime on each, residents, the etcd watch and the shared checks. */
export class Cluster implements AsyncDisposable {
  readonly nodes: CoildNode[];
  readonly history: History;
  /** Blocks that went from the guarded node to another one. */
  readonly blockThefts: string[] = [];
  /** Samples where one attachment held two addresses of a family. */
  readonly doubled: string[] = [];
  #options: ClusterOptions;
  #nets: Network[];
  #runtimes: ChurnRuntime[] = [];
  #residents: Resident[] = [];
  #guarded: { node: string; blocks: Set<string> } | undefined;
  #probes = 0;

  private constructor(options: ClusterOptions) {
    this.#options = options;
    this.nodes = options.nodes;
    this.history = options.history;
    this.#nets = options.nodes.map((node) => ({
      name: "partition",
      socket: node.socket,
      history: options.history,
      node: node.name,
      env: { COIL_CNI_TIMEOUT_MS: String(options.cniTimeoutMs) },
    }));
  }

  static async create(options: ClusterOptions): Promise<Cluster> {
    const cluster = new Cluster(options);
    try {
      for (const [i, net] of cluster.#nets.entries()) {
        cluster.#runtimes.push(
          await ChurnRuntime.create({
            net,
            random: options.random,
            mainShare: 0.2,
            maxMain: 3,
            low: 4,
            high: 10,
            readdChance: 0.5,
            idPrefix: `p${i}-`,
          }),
        );
        for (const mode of ["main", "main", "ipam"] as const) await cluster.#addResident(i, mode);
      }
      return cluster;
    } catch (err) {
      await cluster[Symbol.asyncDispose]();
      throw err;
    }
  }

  async #addResident(node: number, mode: Pod["mode"]): Promise<void> {
    const netns = await createNetns();
    const id = `resident-${node}-${this.#residents.length}`;
    const pod: Pod = {
      containerId: id,
      ifName: "eth0",
      namespace: "partition",
      name: id,
      mode,
      netns: netns.path,
    };
    const out = await cniCall(this.#nets[node], "ADD", pod);
    if (out.kind !== "ok") {
      await netns[Symbol.asyncDispose]();
      throw new Error(`ADD of resident ${id} failed: ${out.msg}`);
    }
    this.#residents.push({ id, pod, ip: out.ip!, netns, node });
  }

  /** Starts churn on every node. */
  churn(): Probes {
    let stopped = false;
    const runs = Promise.all(this.#runtimes.map((r, i) => r.run(this.#options.workers[i], () => stopped)));
    return { stop: () => void (stopped = true), done: () => runs.then(() => {}) };
  }

  /**
   * An ADD of a fresh IPAM-mode pod on `node` every `ms`, each followed, once `healed` resolves, by its
   * DEL, retried until it succeeds: a runtime backs off from a failing pod, so DELs do not pile up.
   */
  probeEvery(node: CoildNode, ms: number, healed: Promise<void>): Probes {
    let stopped = false;
    const calls: Promise<unknown>[] = [];
    const loop = (async () => {
      while (!stopped) {
        calls.push(this.#probe(node, healed));
        await sleep(ms);
      }
    })();
    return {
      stop: () => void (stopped = true),
      done: async () => {
        await loop;
        await Promise.all(calls);
      },
    };
  }

  /** One probe (see probeEvery()); @returns whether its ADD succeeded and when it ended. */
  async #probe(node: CoildNode, healed: Promise<void>): Promise<{ ok: boolean; end: number }> {
    const i = this.nodes.indexOf(node);
    const id = `probe-${i}-${this.#probes++}`;
    const pod: Pod = {
      containerId: id,
      ifName: "eth0",
      namespace: "partition",
      name: id,
      mode: "ipam",
      netns: this.#residents.find((r) => r.node === i && r.pod.mode === "ipam")!.netns.path,
    };
    const out = await cniCall(this.#nets[i], "ADD", pod);
    const end = History.now();
    await healed;
    for (let attempt = 1; (await cniCall(this.#nets[i], "DEL", pod)).kind !== "ok"; attempt++) {
      assert.ok(attempt < 100, `DEL of probe ${id} keeps failing`);
      await sleep(200);
    }
    return { ok: out.kind === "ok", end };
  }

  /** Every DEL owed (retried until it succeeds, as the runtime does). */
  async drain(): Promise<void> {
    for (const r of this.#runtimes) await r.drain();
  }

  /** Main-mode pods of `node` that live now: residents and churned pods. */
  mainPodsOf(node: CoildNode): { id: string; ip: string }[] {
    const i = this.nodes.indexOf(node);
    return [
      ...this.#residents.filter((r) => r.node === i && r.pod.mode === "main"),
      ...this.#runtimes[i].liveMain().map((p) => ({ id: p.pod.containerId, ip: p.ip })),
    ];
  }

  /** From now on, a sample showing one of `blocks` owned by another node than `node` is a theft. */
  guard(node: string, blocks: string[]): void {
    this.#guarded = { node, blocks: new Set(blocks) };
  }

  /** Samples etcd every 250 ms for the history and the guard until disposed. */
  watch(): AsyncDisposable {
    let stopped = false;
    const loop = (async () => {
      while (!stopped) {
        await this.#sample().catch(() => {});
        await sleep(250);
      }
    })();
    return {
      async [Symbol.asyncDispose]() {
        stopped = true;
        await loop;
      },
    };
  }

  async #sample(): Promise<IpamState> {
    const start = History.now();
    const state = await readIpamState(this.#options.client, this.#options.prefix);
    this.history.sample(start, state.addresses);
    const guarded = this.#guarded;
    for (const b of state.blocks) {
      if (guarded?.blocks.has(b.block) && b.node !== guarded.node) {
        this.blockThefts.push(`${b.block} of ${guarded.node} owned by ${b.node}`);
      }
    }
    const families = new Map<string, number>();
    for (const a of state.addresses) {
      const key = `${a.network}/${a.containerId}/${a.ifName}/${a.ip.includes(":") ? 6 : 4}`;
      families.set(key, (families.get(key) ?? 0) + 1);
      if (families.get(key) === 2) this.doubled.push(`${key} at ${start.toFixed(0)} ms`);
    }
    return state;
  }

  /** The node's blocks in etcd and its table 119. */
  async snapshot(node: CoildNode): Promise<Snapshot> {
    const state = await readIpamState(this.#options.client, this.#options.prefix);
    return {
      blocks: state.blocks.filter((b) => b.node === node.name).map((b) => b.block).sort(),
      table: await this.tableOf(node),
    };
  }

  tableOf(node: CoildNode): Promise<string[]> {
    return exportedPrefixes(node.netns);
  }

  /** The holder of the node key (pid, lease), or undefined when there is no key. */
  async nodeRecord(node: string): Promise<{ pid: number; lease: string } | undefined> {
    const res = await this.#options.client.get(keysFor(this.#options.prefix).node(node)).exec();
    const kv = res.kvs[0];
    if (!kv) return undefined;
    return { pid: Number(JSON.parse(kv.value.toString()).holder?.pid), lease: kv.lease };
  }

  /** Waits until the node key is held by process `pid` again; @returns ms since `healAt`. */
  async waitNodeRecordHeld(node: CoildNode, pid: number, healAt: number): Promise<number> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const record = await this.nodeRecord(node.name);
      if (record?.pid === pid) return History.now() - healAt;
      assert.ok(
        Date.now() < deadline,
        `Node key of ${node.name} not held by pid ${pid} again: ${JSON.stringify(record)}\n${node.logTail()}`,
      );
      await sleep(100);
    }
  }

  /**
   * Probes (see probeEvery()) on `node`, a new one every 250 ms while none has succeeded; @returns ms
   * from `healAt` to the end of the first ADD that succeeded. @throws when none did within `withinMs`.
   */
  async probeUntilServed(node: CoildNode, healAt: number, withinMs: number): Promise<number> {
    let servedAt: number | undefined;
    const calls: Promise<void>[] = [];
    const deadline = healAt + withinMs;
    while (servedAt === undefined && History.now() < deadline) {
      calls.push(
        this.#probe(node, Promise.resolve()).then(({ ok, end }) => {
          if (ok) servedAt = Math.min(servedAt ?? Infinity, end);
        }),
      );
      await sleep(250);
    }
    await Promise.all(calls);
    assert.ok(
      servedAt !== undefined,
      `${node.name} did not serve an ADD within ${withinMs} ms of the heal\n${node.logTail()}`,
    );
    return servedAt - healAt;
  }

  /**
   * The node's blocks are those before the cut, but for blocks its own coild claimed or released after
   * `since` (its log says).
   */
  async assertBlocksAsBefore(node: CoildNode, before: Snapshot, since: number): Promise<void> {
    const now = await this.snapshot(node);
    const own = ownBlockEvents(node.log(), since);
    const unexplained = [
      ...before.blocks.filter((x) => !now.blocks.includes(x) && !own.released.has(x)).map((x) => `lost ${x}`),
      ...now.blocks.filter((x) => !before.blocks.includes(x) && !own.claimed.has(x)).map((x) =>
        `gained ${x}`
      ),
    ];
    assert.deepEqual(
      unexplained,
      [],
      `blocks of ${node.name} changed by no act of its own\n${node.logTail()}`,
    );
  }

  /** Table 119 of `node` comes to hold exactly the aggregate of the blocks etcd says it owns. */
  async assertTableMatchesBlocks(node: CoildNode): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const blocks = (await this.snapshot(node)).blocks.map((x) => parseCidr(x.replace("_", "/")));
      const expected = aggregate(blocks).map(formatCidr).sort();
      const table = await this.tableOf(node);
      if (JSON.stringify(table) === JSON.stringify(expected)) return;
      assert.ok(
        Date.now() < deadline,
        `table 119 of ${node.name} is ${table}, not ${expected}\n${node.logTail()}`,
      );
      await sleep(200);
    }
  }

  /** DELs every churned pod and resident, then waits for the sweep to leave no address key. */
  async deleteAll(): Promise<void> {
    for (const r of this.#runtimes) await r.deleteAll();
    for (const r of [...this.#residents]) {
      for (let attempt = 1; (await cniCall(this.#nets[r.node], "DEL", r.pod)).kind !== "ok"; attempt++) {
        assert.ok(attempt < 50, `DEL of resident ${r.id} keeps failing`);
        await sleep(200);
      }
      this.#residents.splice(this.#residents.indexOf(r), 1);
      await r.netns[Symbol.asyncDispose]();
    }
    const deadline = Date.now() + 30_000;
    while ((await this.#sample()).addresses.length > 0 && Date.now() < deadline) await sleep(200);
  }

  stats(): ReturnType<typeof totalStats> {
    return totalStats(this.#runtimes.map((r) => r.stats));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      for (const r of this.#runtimes) await r[Symbol.asyncDispose]();
    } finally {
      for (const r of this.#residents) await r.netns[Symbol.asyncDispose]();
    }
  }
}

/** Blocks the coild of `log` claimed or released after `since` (History.now() ms; log times are wall clock). */
function ownBlockEvents(log: string, since: number): { claimed: Set<string>; released: Set<string> } {
  const sinceWall = Date.now() - (History.now() - since);
  const out = { claimed: new Set<string>(), released: new Set<string>() };
  for (const line of log.split("\n")) {
    let entry: { time?: string; event?: string; block?: string };
    try {
      entry = JSON.parse(line);
    } catch {
      continue;
    }
    if (!entry.block || (entry.time && Date.parse(entry.time) < sinceWall - 1000)) continue;
    const id = entry.block.replace("/", "_");
    if (entry.event === "block claimed") out.claimed.add(id);
    if (entry.event === "block released") out.released.add(id);
  }
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
