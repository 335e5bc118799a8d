// A dense node: one coild, 500 main-mode pods (real veths, each in its own netns) added through the CNI
// binary, four at a time. Whether ADD stays as fast at 500 pods as at 0, coild's memory on the way
// (resident, V8 heap, external), a restart with 500 pods (time to ready, table 119 left untouched), and
// the CPU time of one leak sweep at 500 pods against the same at 0.

import { startCoild, type TestCoild } from "../helpers/coild.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";
import { type BenchContext, type Benchmark, iterations } from "./_bench.ts";
import { cniEnv, COIL, execOk, type ExecSpec } from "./_exec.ts";
import { startNode } from "./_fixture.ts";
import { median } from "./_stats.ts";
import { coildDurations } from "./cni_exec.ts";

export const benchmark: Benchmark = {
  name: "dense-node",
  description: "500 main-mode pods on one coild: ADD at 0 vs 500 pods, RSS, restart",
  run,
};

const PARALLEL = 4;
const EDGE = 50;
const FLAT_LIMIT = 1.2;
const RSS_LIMIT_MB = 100;
const READY_LIMIT_S = 3;
/** Where the measured coilds serve /metrics, inside the node netns (its own loopback). */
const METRICS = "127.0.0.1:9391";
/** How long sweeps every second are watched to take their CPU time. */
const SWEEP_WINDOW_MS = 8_000;

async function run(ctx: BenchContext): Promise<void> {
  const total = iterations(ctx, 500, 60);
  const edge = Math.min(EDGE, Math.floor(total / 4));
  await using fx = await startNode(["10.96.0.0/16"]);
  const conf = (coild: TestCoild) =>
    JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "coil", socket: coild.socket });
  const pods: TestNetns[] = [];
  // The fixture's coild serves no metrics: this one does (same flags otherwise).
  await fx.coild.stop();
  const restart = (sweepSeconds: number) =>
    startCoild({
      etcd: fx.etcd,
      prefix: fx.prefix,
      node: fx.node,
      args: ["--sweep-interval", String(sweepSeconds), "--metrics-address", METRICS],
    });
  const sweepIdle = await sweepCpu(ctx, fx.node, await restart(1));
  let coild = await restart(0);
  const memory: Memory[] = [];
  const spec = (command: "ADD" | "DEL", i: number): ExecSpec => ({
    cmd: COIL,
    env: cniEnv(command, { containerId: `dense-${i}`, netns: pods[i].path, podName: `dense-${i}` }),
    stdin: conf(coild),
    netnsFd: fx.nodeFd,
  });
  const execMs: number[] = new Array(total);
  try {
    memory.push(await readMemory(fx.node, coild, 0));
    for (let i = 0; i < total; i++) pods.push(await createNetns());
    for (let next = 0; next < total;) {
      const batch = Array.from({ length: Math.min(PARALLEL, total - next) }, (_, k) => next + k);
      await Promise.all(batch.map(async (i) => execMs[i] = (await execOk(`ADD ${i}`, spec("ADD", i))).ms));
      // At the batch that reaches half the pods (batches of 4 step over 250), and at the end.
      const half = next < total / 2 && next + batch.length >= total / 2;
      next += batch.length;
      if (half || next === total) memory.push(await readMemory(fx.node, coild, next));
    }
    const handled = coildDurations(coild.log(), "add", "dense-");
    const first = median(handled.slice(0, edge)), last = median(handled.slice(-edge));
    ctx.info(
      `${total} pods added ${PARALLEL} at a time; exec p50 first ${edge} ${
        median(execMs.slice(0, edge)).toFixed(1)
      } ms, ` +
        `last ${edge} ${median(execMs.slice(-edge)).toFixed(1)} ms`,
    );
    ctx.report({
      name: `ADD handled by coild (its log), p50 of the last ${edge} pods`,
      value: last,
      unit: "ms",
      baseline: { name: `p50 of the first ${edge}`, value: first },
      target: { text: `≤ ${FLAT_LIMIT}×`, pass: last <= first * FLAT_LIMIT },
    });
    for (const m of memory) {
      ctx.info(
        `coild at ${m.pods} pods: RSS ${mb(m.rss)} MB = V8 heap ${mb(m.heapTotal)} MB (used ${
          mb(m.heapUsed)
        }) + ` +
          `external ${mb(m.external)} MB + native ${mb(m.rss - m.heapTotal - m.external)} MB; ` +
          `anonymous ${mb(m.rssAnon)} MB, file-backed ${
            mb(m.rssFile)
          } MB, ${m.threads} threads, ${m.fds} fds`,
      );
    }
    const [idle, full] = [memory[0], memory.at(-1)!];
    ctx.report({
      name: `coild RSS at ${total} pods`,
      value: full.rss / MB,
      unit: "count",
      baseline: { name: "at 0 pods", value: idle.rss / MB },
      target: { text: `≤ ${RSS_LIMIT_MB} MB`, pass: full.rss / MB <= RSS_LIMIT_MB },
      note: `MB (VmRSS); growth: heap +${mb(full.heapTotal - idle.heapTotal)}, external +${
        mb(full.external - idle.external)
      }, native +${
        mb(full.rss - full.heapTotal - full.external - (idle.rss - idle.heapTotal - idle.external))
      } MB`,
    });

    // Restart with every pod in place: time to a ready socket, table 119 as it was.
    const table = () => fx.node.exec(["ip", "-j", "route", "show", "table", "119"]);
    const before = await table();
    const cpuBefore = cpuSeconds(coild.process.pid);
    await coild.stop();
    const started = performance.now();
    coild = await restart(0);
    const readyS = (performance.now() - started) / 1000;
    const after = await table();
    ctx.info(`the first coild used ${cpuBefore.toFixed(2)} s of CPU for ${total} ADDs`);
    ctx.report({
      name: `coild restart with ${total} pods: ready (socket accepting)`,
      value: readyS,
      unit: "s",
      target: {
        text: `≤ ${READY_LIMIT_S} s, table 119 unchanged`,
        pass: readyS <= READY_LIMIT_S && before === after,
      },
      note: `table 119 ${before === after ? "unchanged" : "CHANGED"}; restart CPU ${
        cpuSeconds(coild.process.pid).toFixed(2)
      } s`,
    });

    await coild.stop();
    coild = await restart(1);
    const sweepFull = await sweepCpu(ctx, fx.node, coild, false);
    ctx.report({
      name: `CPU time of one sweep at ${total} pods`,
      value: sweepFull,
      unit: "ms",
      baseline: { name: "at 0 pods", value: sweepIdle },
      note: `sweeps every 1 s for ${SWEEP_WINDOW_MS / 1000} s, coild's utime + stime per sweep`,
    });
    for (let i = 0; i < total; i += PARALLEL) {
      const batch = Array.from({ length: Math.min(PARALLEL, total - i) }, (_, k) => i + k);
      await Promise.all(
        batch.map((k) => execOk(`DEL ${k}`, spec("DEL", k))),
      );
    }
  } finally {
    await coild.stop();
    for (const pod of pods) await pod[Symbol.asyncDispose]();
  }
}

const MB = 1024 * 1024;
const mb = (bytes: number) => (bytes / MB).toFixed(1);

/** coild's memory as /proc and V8 see it (its /metrics). */
interface Memory {
  pods: number;
  rss: number;
  /** Of the resident size: anonymous memory, pages of mapped files (the deno binary); threads, open fds. */
  rssAnon: number;
  rssFile: number;
  threads: number;
  fds: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
}

async function readMemory(node: TestNetns, coild: TestCoild, pods: number): Promise<Memory> {
  const text = await node.exec(["curl", "-sf", `http://${METRICS}/metrics`]);
  const proc = Deno.readTextFileSync(`/proc/${coild.process.pid}/status`);
  const status = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(proc)![1]);
  const sample = (name: string) => {
    const value = new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1];
    if (value === undefined) throw new Error(`coild's /metrics has no ${name}`);
    return Number(value);
  };
  return {
    pods,
    rss: status("VmRSS") * 1024,
    rssAnon: status("RssAnon") * 1024,
    rssFile: (status("RssFile") + status("RssShmem")) * 1024,
    threads: status("Threads"),
    fds: [...Deno.readDirSync(`/proc/${coild.process.pid}/fd`)].length,
    heapTotal: sample("deno_heap_size_total_bytes"),
    heapUsed: sample("deno_heap_size_used_bytes"),
    external: sample("deno_external_memory_bytes"),
  };
}

/**
 * CPU milliseconds per sweep of a coild sweeping every second, over SWEEP_WINDOW_MS; stops it unless
 * `stop` is false. Between sweeps coild is idle, so the window's CPU is the sweeps'.
 */
async function sweepCpu(ctx: BenchContext, node: TestNetns, coild: TestCoild, stop = true): Promise<number> {
  const sweeps = async () => {
    const text = await node.exec(["curl", "-sf", `http://${METRICS}/metrics`]);
    return Number(/^coil_sweeps_total (\S+)$/m.exec(text)?.[1] ?? NaN);
  };
  try {
    const [cpu0, n0] = [cpuSeconds(coild.process.pid), await sweeps()];
    await new Promise((r) => setTimeout(r, SWEEP_WINDOW_MS));
    const [cpu1, n1] = [cpuSeconds(coild.process.pid), await sweeps()];
    if (!(n1 > n0)) throw new Error(`coild ran no sweep in ${SWEEP_WINDOW_MS} ms (sweeps ${n0} → ${n1})`);
    ctx.info(`${n1 - n0} sweeps took ${((cpu1 - cpu0) * 1000).toFixed(0)} ms of CPU`);
    return (cpu1 - cpu0) * 1000 / (n1 - n0);
  } finally {
    if (stop) await coild.stop();
  }
}

/** User plus system CPU time of a process so far, in seconds (clock ticks of 100 Hz). */
function cpuSeconds(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
