// A dense node: one coild, 500 main-mode pods (real veths, each in its own netns) added through the CNI
// binary, four at a time. Whether ADD stays as fast at 500 pods as at 0, coild's memory on the way,
// and a restart with 500 pods: time to ready and table 119 left untouched.

import { startCoild } from "../helpers/coild.ts";
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

async function run(ctx: BenchContext): Promise<void> {
  const total = iterations(ctx, 500, 60);
  const edge = Math.min(EDGE, Math.floor(total / 4));
  await using fx = await startNode(["10.96.0.0/16"]);
  const conf = JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "coil", socket: fx.coild.socket });
  const pods: TestNetns[] = [];
  const rss: [number, number][] = [[0, rssMb(fx.coild.process.pid)]];
  const spec = (command: "ADD" | "DEL", i: number): ExecSpec => ({
    cmd: COIL,
    env: cniEnv(command, { containerId: `dense-${i}`, netns: pods[i].path, podName: `dense-${i}` }),
    stdin: conf,
    netnsFd: fx.nodeFd,
  });
  const execMs: number[] = new Array(total);
  try {
    for (let i = 0; i < total; i++) pods.push(await createNetns());
    for (let next = 0; next < total;) {
      const batch = Array.from({ length: Math.min(PARALLEL, total - next) }, (_, k) => next + k);
      await Promise.all(batch.map(async (i) => execMs[i] = (await execOk(`ADD ${i}`, spec("ADD", i))).ms));
      next += batch.length;
      if (next === total / 2 || next === total) rss.push([next, rssMb(fx.coild.process.pid)]);
    }
    const handled = coildDurations(fx.coild.log(), "add", "dense-");
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
    ctx.info(`coild RSS: ${rss.map(([n, mb]) => `${mb.toFixed(0)} MB at ${n} pods`).join(", ")}`);
    ctx.report({
      name: `coild RSS at ${total} pods`,
      value: rss.at(-1)![1],
      unit: "count",
      baseline: { name: "at 0 pods", value: rss[0][1] },
      target: { text: `≤ ${RSS_LIMIT_MB} MB`, pass: rss.at(-1)![1] <= RSS_LIMIT_MB },
      note: "MB (VmRSS)",
    });

    // Restart with every pod in place: time to a ready socket, table 119 as it was.
    const table = () => fx.node.exec(["ip", "-j", "route", "show", "table", "119"]);
    const before = await table();
    const cpuBefore = cpuSeconds(fx.coild.process.pid);
    await fx.coild.stop();
    const started = performance.now();
    await using again = await startCoild({
      etcd: fx.etcd,
      prefix: fx.prefix,
      node: fx.node,
      args: ["--sweep-interval", "0"],
    });
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
        cpuSeconds(again.process.pid).toFixed(2)
      } s`,
    });
    for (let i = 0; i < total; i += PARALLEL) {
      const batch = Array.from({ length: Math.min(PARALLEL, total - i) }, (_, k) => i + k);
      await Promise.all(
        batch.map((k) =>
          execOk(`DEL ${k}`, { ...spec("DEL", k), stdin: conf.replace(fx.coild.socket, again.socket) })
        ),
      );
    }
  } finally {
    for (const pod of pods) await pod[Symbol.asyncDispose]();
  }
}

/** VmRSS of a process in MB. */
function rssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** User plus system CPU time of a process so far, in seconds (clock ticks of 100 Hz). */
function cpuSeconds(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
