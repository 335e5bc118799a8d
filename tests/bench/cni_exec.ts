// CNI exec latency: what one plugin exec costs a runtime. VERSION (start-up only) and an IPAM-only
// ADD (+ DEL) of coil, exec'd through scripts/coil, against Debian's host-local and against deno's bare
// start, interleaved in one loop; plus where an ADD's time goes.

import { callCoild } from "../../cni/client.ts";
import type { AddRequest, DelRequest } from "../../cni/api.ts";
import { type BenchContext, type Benchmark, iterations } from "./_bench.ts";
import {
  bareDeno,
  cniEnv,
  COIL,
  DENO,
  emptyModule,
  execOk,
  type ExecSpec,
  HOST_LOCAL,
  ROOT,
} from "./_exec.ts";
import { startNode } from "./_fixture.ts";
import { median, rotate, summarize } from "./_stats.ts";

export const benchmark: Benchmark = {
  name: "cni-exec",
  description: "exec latency of VERSION and of an IPAM-only ADD/DEL, coil vs host-local vs bare deno",
  run,
};

/** The target of the issues: an ADD costs at most deno's bare start plus this. */
const ADD_BUDGET_MS = 5;

async function run(ctx: BenchContext): Promise<void> {
  const n = iterations(ctx, 80, 5);
  const empty = await emptyModule();
  try {
    await using fx = await startNode(["10.64.0.0/16"]);
    const hostLocalDir = await Deno.makeTempDir({ prefix: "coil-bench-host-local-" });
    try {
      await versionLatency(ctx, n, empty.path);
      const coilConf = JSON.stringify({
        cniVersion: "1.0.0",
        name: "bench",
        type: "ptp",
        ipam: { type: "coil", socket: fx.coild.socket },
      });
      const hostLocalConf = JSON.stringify({
        cniVersion: "1.0.0",
        name: "bench",
        type: "ptp",
        ipam: {
          type: "host-local",
          ranges: [[{ subnet: "10.65.0.0/16" }]],
          routes: [{ dst: "0.0.0.0/0" }],
          dataDir: hostLocalDir,
        },
      });
      await addLatency(ctx, n, empty.path, fx.node.path, coilConf, hostLocalConf);
      await addBreakdown(ctx, n, fx.coild.socket, fx.node.path, fx.coild.log());
    } finally {
      await Deno.remove(hostLocalDir, { recursive: true });
    }
  } finally {
    await Deno.remove(empty.dir, { recursive: true });
  }
}

async function flagsOfCoil(): Promise<string[]> {
  return (await Deno.readTextFile(`${ROOT}scripts/deno_flags`)).trim().split(/\s+/);
}

async function versionLatency(ctx: BenchContext, n: number, emptyPath: string): Promise<void> {
  const env = cniEnv("VERSION");
  const specs: Record<string, ExecSpec> = {
    coil: { cmd: COIL, env },
    // The same without the bash wrapper, to see what the wrapper costs.
    native: {
      cmd: DENO,
      args: ["run", ...await flagsOfCoil(), "--config", `${ROOT}deno.json`, `${ROOT}main.ts`],
      env,
    },
    hostLocal: { cmd: HOST_LOCAL, env },
    bare: bareDeno(emptyPath),
  };
  const samples = await interleave(n, specs, "VERSION");
  const m = (k: string) => median(samples[k]);
  ctx.info(`VERSION, ${n} execs each, interleaved`);
  ctx.report({
    name: "VERSION via scripts/coil, median",
    value: m("coil"),
    unit: "ms",
    baseline: { name: "host-local VERSION", value: m("hostLocal") },
  });
  ctx.report({
    name: "VERSION via scripts/coil vs deno's bare start, median",
    value: m("coil"),
    unit: "ms",
    baseline: { name: "bare deno run of an empty file", value: m("bare") },
    note: `without the bash wrapper (native deno, same flags): ${m("native").toFixed(2)} ms`,
  });
}

/** Runs each spec `n` times, rotating their order every round; returns the times by name. */
async function interleave(
  n: number,
  specs: Record<string, ExecSpec>,
  what: string,
): Promise<Record<string, number[]>> {
  const names = Object.keys(specs);
  for (const name of names) {
    for (let w = 0; w < 3; w++) await execOk(`${what} ${name} (warm-up)`, specs[name]);
  }
  const samples: Record<string, number[]> = Object.fromEntries(names.map((k) => [k, []]));
  for (let i = 0; i < n; i++) {
    for (const name of rotate(names, i)) {
      samples[name].push((await execOk(`${what} ${name}`, specs[name])).ms);
    }
  }
  return samples;
}

async function addLatency(
  ctx: BenchContext,
  n: number,
  emptyPath: string,
  netns: string,
  coilConf: string,
  hostLocalConf: string,
): Promise<void> {
  const samples: Record<string, number[]> = { coilAdd: [], coilDel: [], hlAdd: [], hlDel: [], bare: [] };
  const pair = async (name: "coil" | "hl", conf: string, i: number) => {
    const call = { containerId: `exec-${name}-${i}`, netns, podName: `p${i}` };
    const cmd = name === "coil" ? COIL : HOST_LOCAL;
    const add = await execOk(`${name} ADD`, { cmd, env: cniEnv("ADD", call), stdin: conf });
    const del = await execOk(`${name} DEL`, { cmd, env: cniEnv("DEL", call), stdin: conf });
    if (i >= 0) {
      samples[`${name}Add`].push(add.ms);
      samples[`${name}Del`].push(del.ms);
    }
  };
  const bare = async (i: number) => {
    const result = await execOk("bare deno", bareDeno(emptyPath));
    if (i >= 0) samples.bare.push(result.ms);
  };
  for (let w = -3; w < 0; w++) {
    await pair("coil", coilConf, w);
    await pair("hl", hostLocalConf, w);
    await bare(w);
  }
  for (let i = 0; i < n; i++) {
    for (const k of rotate(["coil", "hl", "bare"] as const, i)) {
      await (k === "bare" ? bare(i) : pair(k, k === "coil" ? coilConf : hostLocalConf, i));
    }
  }
  const coilAdd = summarize(samples.coilAdd);
  const bareStart = median(samples.bare);
  ctx.info(`IPAM-only ADD then DEL, ${n} of each, interleaved with host-local and bare deno starts`);
  ctx.report({
    name: "IPAM ADD via scripts/coil, median",
    value: coilAdd.median,
    unit: "ms",
    baseline: { name: "host-local ADD", value: median(samples.hlAdd) },
    note: `coil ADD p99 ${coilAdd.p99.toFixed(2)} ms`,
  });
  ctx.report({
    name: "IPAM ADD via scripts/coil vs deno's bare start, median",
    value: coilAdd.median,
    unit: "ms",
    baseline: { name: "bare deno start", value: bareStart },
    target: {
      text: `≤ bare start + ${ADD_BUDGET_MS} ms (${(bareStart + ADD_BUDGET_MS).toFixed(1)} ms)`,
      pass: coilAdd.median <= bareStart + ADD_BUDGET_MS,
    },
  });
  ctx.report({
    name: "IPAM DEL via scripts/coil, median",
    value: median(samples.coilDel),
    unit: "ms",
    baseline: { name: "host-local DEL", value: median(samples.hlDel) },
  });
}

/**
 * Where an ADD's time goes: the same ADD/DEL sent in-process over coild's socket (the round trip without
 * any exec), and coild's own handling time from its log, next to the exec figures above.
 */
async function addBreakdown(
  ctx: BenchContext,
  n: number,
  socket: string,
  netns: string,
  coildLog: string,
): Promise<void> {
  const rtt: number[] = [];
  for (let i = -3; i < n; i++) {
    const attachment = {
      network: "bench",
      containerId: `socket-${i}`,
      ifName: "eth0",
      netns,
      podNamespace: "default",
      podName: `s${i}`,
      podUid: "",
    };
    const add: AddRequest = { verb: "add", mode: "ipam", mtu: 0, hostRouteTable: 0, ...attachment };
    const started = performance.now();
    await callCoild(socket, add, 10_000);
    if (i >= 0) rtt.push(performance.now() - started);
    const del: DelRequest = { verb: "del", mode: "ipam", hostRouteTable: 0, ...attachment };
    await callCoild(socket, del, 10_000);
  }
  const handled = coildDurations(coildLog, "add", "exec-coil-");
  ctx.info("where an IPAM ADD's time goes (medians)");
  ctx.report({
    name: "IPAM ADD over coild's socket in-process (no exec), median",
    value: median(rtt),
    unit: "ms",
    note: handled.length
      ? `coild's own handling of the exec'd ADDs (its log's durationMs), median: ${
        median(handled).toFixed(2)
      } ms`
      : "coild logged no durations",
  });
}

/** `durationMs` of coild's "request" log lines for `verb` whose container ID starts with `idPrefix`. */
export function coildDurations(log: string, verb: string, idPrefix: string): number[] {
  const found: number[] = [];
  for (const line of log.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line);
      if (entry.msg === "request" && entry.verb === verb && String(entry.containerId).startsWith(idPrefix)) {
        found.push(Number(entry.durationMs));
      }
    } catch { /* a partial line */ }
  }
  return found;
}
