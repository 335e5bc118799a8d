// A container runtime under churn: pods come and go through CNI ADD and DEL, several calls at once, and
// every failure is handled as kubelet's runtimes do: a failed ADD is followed by DEL, DEL is retried
// until it succeeds, and a pod may be tried again later. It keeps the pods it believes alive.

import { createNetns, type TestNetns } from "../helpers/netns.ts";
import type { Random } from "./_random.ts";
import { type CallOutcome, cniCall, KILLED, type Network, type Pod } from "./_runtime.ts";

export interface ChurnOptions {
  net: Network;
  random: Random;
  /** Share of new pods in main mode (veth in a netns of their own); the rest are IPAM mode. */
  mainShare: number;
  /** At most this many main-mode pods exist at once (each costs a netns). */
  maxMain: number;
  /** The population drifts between these bounds. */
  low: number;
  high: number;
  /** Chance that a pod whose ADD failed is added again (same container ID) after its DEL. */
  readdChance: number;
  /** Start of every container ID (default `churn`): runtimes of several nodes must not share IDs. */
  idPrefix?: string;
}

/** One pod and where the runtime is with it. */
interface Tracked {
  pod: Pod;
  /** `up`: ADD succeeded; `dirty`: an ADD or DEL failed, so a DEL is owed; `readd`: ADD again; `gone`: done. */
  state: "up" | "dirty" | "readd" | "gone";
  /** Whether the DEL owed is the clean-up of a failed ADD (after which the pod may be added again). */
  addFailed: boolean;
  busy: boolean;
  /** No retry before this time (ms since epoch): runtimes back off. */
  notBefore: number;
  ip?: string;
  /** The ADD's result, the prevResult of a CHECK. */
  result?: Record<string, unknown>;
  netns?: TestNetns;
  /** The message of the last failed call, for reports. */
  lastError?: string;
}

/** A live pod: its ADD succeeded and no DEL was tried since. */
export interface LivePod {
  pod: Pod;
  ip: string;
  result?: Record<string, unknown>;
}

/** Counts of one run; `problems` holds anything that must not happen. */
export interface ChurnStats {
  /** CNI calls made (ADD and DEL, failed ones included). */
  calls: number;
  /** Calls that succeeded. */
  ok: number;
  addsOk: number;
  delsOk: number;
  /** Calls that failed with 11, split by cause: coild gone mid-call, or not there at all. */
  retriesInFlight: number;
  retriesDown: number;
  retriesOther: number;
  /** Calls whose plugin the runtime killed at its exec timeout (Network.plugin), so no answer came. */
  killed: number;
  /** ADDs that failed and were followed by a DEL, and of those, pods added again afterwards. */
  failedAdds: number;
  readds: number;
  /** Failures other than 11, and addresses given out twice, as they happened. */
  problems: string[];
}

/** The counts of several runtimes together, as the multi-node campaigns print them. */
export function totalStats(
  all: readonly ChurnStats[],
): { calls: number; ok: number; retries: number; problems: string[] } {
  return {
    calls: all.reduce((n, s) => n + s.calls, 0),
    ok: all.reduce((n, s) => n + s.ok, 0),
    retries: all.reduce((n, s) => n + s.retriesInFlight + s.retriesDown + s.retriesOther, 0),
    problems: all.flatMap((s) => s.problems),
  };
}

/** The runtime; owns the pod netns it creates. */
export class ChurnRuntime implements AsyncDisposable {
  readonly stats: ChurnStats = {
    calls: 0,
    ok: 0,
    addsOk: 0,
    delsOk: 0,
    retriesInFlight: 0,
    retriesDown: 0,
    retriesOther: 0,
    killed: 0,
    failedAdds: 0,
    readds: 0,
    problems: [],
  };
  #options: ChurnOptions;
  #ipamNetns: TestNetns;
  #pods = new Map<string, Tracked>();
  #serial = 0;

  private constructor(options: ChurnOptions, ipamNetns: TestNetns) {
    this.#options = options;
    this.#ipamNetns = ipamNetns;
  }

  /**
   * IPAM-mode pods all name one real netns: coil does not enter it in that mode, but its sweep releases
   * the addresses of pods whose netns is gone.
   */
  static async create(options: ChurnOptions): Promise<ChurnRuntime> {
    return new ChurnRuntime(options, await createNetns());
  }

  /** The pods whose ADD succeeded and that were not deleted since. */
  live(): LivePod[] {
    return [...this.#pods.values()]
      .filter((t) => t.state === "up")
      .map((t) => ({ pod: t.pod, ip: t.ip!, result: t.result }));
  }

  /** The live pods in main mode: each must have its host veth and answer a ping. */
  liveMain(): LivePod[] {
    return this.live().filter((p) => p.pod.mode === "main");
  }

  /** Runs `workers` concurrent callers until `done()` holds (checked between calls). */
  async run(workers: number, done: () => boolean): Promise<void> {
    const worker = async () => {
      while (!done()) await this.#nextStep()();
    };
    await Promise.all(Array.from({ length: workers }, worker));
  }

  /**
   * Ends the churn: DELs every pod that owes one until it succeeds, and drops pending re-adds.
   * @throws {Error} when a DEL still fails after `maxAttempts`.
   */
  async drain(maxAttempts = 200): Promise<void> {
    for (const t of [...this.#pods.values()]) {
      for (let attempt = 1; t.state === "dirty"; attempt++) {
        if (attempt > maxAttempts) {
          throw new Error(`DEL of ${t.pod.containerId} failed ${maxAttempts} times: ${t.lastError}`);
        }
        await this.#del(t);
        if (t.state === "dirty") await sleep(100);
      }
      if (t.state === "readd") await this.#forget(t);
    }
  }

  /** DELs every pod (the end of the campaign). @throws {Error} as drain(). */
  async deleteAll(): Promise<void> {
    for (const t of this.#pods.values()) if (t.state === "up") t.state = "dirty";
    await this.drain();
  }

  #nextStep(): () => Promise<void> {
    const { random, low, high } = this.#options;
    const now = Date.now();
    const idle = [...this.#pods.values()].filter((t) => !t.busy && t.notBefore <= now);
    const owed = idle.filter((t) => t.state === "dirty" || t.state === "readd");
    if (owed.length > 0 && random.chance(0.7)) {
      const t = random.pick(owed);
      return () => this.#guard(t, () => t.state === "dirty" ? this.#del(t) : this.#add(t));
    }
    const up = idle.filter((t) => t.state === "up");
    const population = [...this.#pods.values()].filter((t) => t.state === "up").length;
    const addChance = population < low ? 0.85 : population > high ? 0.15 : 0.5;
    if (up.length === 0 || random.chance(addChance)) return () => this.#addNew();
    const t = random.pick(up);
    return () => this.#guard(t, () => this.#del(t));
  }

  async #guard(t: Tracked, call: () => Promise<void>): Promise<void> {
    t.busy = true;
    try {
      await call();
    } finally {
      t.busy = false;
    }
  }

  async #addNew(): Promise<void> {
    const { random, mainShare, maxMain } = this.#options;
    const mains = [...this.#pods.values()].filter((t) => t.pod.mode === "main").length;
    const mode = mains < maxMain && random.chance(mainShare) ? "main" : "ipam";
    const n = this.#serial++;
    const containerId = `${this.#options.idPrefix ?? "churn"}${n.toString(16).padStart(6, "0")}${
      random.int(1 << 24).toString(16)
    }`;
    const t: Tracked = {
      pod: { containerId, ifName: "eth0", namespace: "churn", name: `pod-${n}`, mode, netns: "" },
      state: "readd",
      addFailed: false,
      busy: true,
      notBefore: 0,
    };
    this.#pods.set(containerId, t);
    try {
      if (mode === "main") {
        t.netns = await createNetns();
        t.pod.netns = t.netns.path;
      } else {
        t.pod.netns = this.#ipamNetns.path;
      }
      await this.#add(t);
    } finally {
      t.busy = false;
    }
  }

  async #add(t: Tracked): Promise<void> {
    const out = await this.#call("ADD", t);
    if (out.kind === "ok") {
      this.stats.addsOk++;
      const holder = this.live().find((p) => p.ip === out.ip);
      if (holder) {
        this.stats.problems.push(
          `ADD gave ${out.ip} to ${t.pod.containerId} while ${holder.pod.containerId} holds it`,
        );
      }
      if (out.gateway !== undefined && out.gateway === out.ip) {
        this.stats.problems.push(`ADD gave ${out.ip} to ${t.pod.containerId} as address and gateway`);
      }
      t.state = "up";
      t.ip = out.ip;
      t.result = out.result;
      return;
    }
    this.stats.failedAdds++;
    t.state = "dirty";
    t.addFailed = true;
    this.#backOff(t);
  }

  async #del(t: Tracked): Promise<void> {
    // From the moment the runtime sends DEL, the pod no longer counts as holding its address: coild may
    // release it and hand it to another pod before this DEL's answer arrives.
    t.state = "dirty";
    const out = await this.#call("DEL", t);
    if (out.kind !== "ok") {
      t.state = "dirty";
      this.#backOff(t);
      return;
    }
    this.stats.delsOk++;
    if (t.addFailed && this.#options.random.chance(this.#options.readdChance)) {
      this.stats.readds++;
      t.state = "readd";
      t.addFailed = false;
      t.ip = undefined;
      this.#backOff(t);
      return;
    }
    await this.#forget(t);
  }

  async #forget(t: Tracked): Promise<void> {
    t.state = "gone";
    this.#pods.delete(t.pod.containerId);
    // The runtime removes the sandbox's netns only once DEL has succeeded.
    await t.netns?.[Symbol.asyncDispose]();
    t.netns = undefined;
  }

  async #call(command: "ADD" | "DEL", t: Tracked): Promise<CallOutcome> {
    const out = await cniCall(this.#options.net, command, t.pod);
    this.stats.calls++;
    if (out.kind !== "ok") t.lastError = `${command}: ${out.cniCode} ${out.msg}`;
    if (out.kind === "ok") this.stats.ok++;
    else if (out.kind === "retry") {
      if (/connection broke|without a reply|no reply within/.test(out.msg)) this.stats.retriesInFlight++;
      else if (/does not exist|connection refused/.test(out.msg)) this.stats.retriesDown++;
      else if (out.msg.startsWith(KILLED)) this.stats.killed++;
      else this.stats.retriesOther++;
    } else {
      this.stats.problems.push(`${command} ${t.pod.containerId} (${t.pod.mode}) failed: ${out.msg}`);
    }
    return out;
  }

  #backOff(t: Tracked): void {
    t.notBefore = Date.now() + this.#options.random.between(20, 200);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      for (const t of this.#pods.values()) await t.netns?.[Symbol.asyncDispose]();
    } finally {
      this.#pods.clear();
      await this.#ipamNetns[Symbol.asyncDispose]();
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
