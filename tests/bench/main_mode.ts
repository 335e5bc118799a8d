// Main mode, where coil creates the pod's veth, routes and addresses: ADD and DEL exec'd in the node's
// netns as a runtime does, against Debian's ptp delegating to host-local, each pod in a fresh netns;
// serially, then 50 at once next to 50 concurrent bare deno starts.

import { createNetns, type TestNetns } from "../helpers/netns.ts";
import { type BenchContext, type Benchmark, iterations } from "./_bench.ts";
import {
  bareDeno,
  checkOk,
  cniEnv,
  COIL,
  emptyModule,
  execOk,
  type ExecResult,
  type ExecSpec,
  PTP,
  spawnAll,
} from "./_exec.ts";
import { startNode } from "./_fixture.ts";
import { median, percentile, rotate, summarize } from "./_stats.ts";
import { coildDurations } from "./cni_exec.ts";

export const benchmark: Benchmark = {
  name: "main-mode",
  description: "main-mode ADD/DEL (veth) vs ptp + host-local, serial and 50 at once",
  run,
};

const ADD_BUDGET_MS = 5;
const CONCURRENT_WALL_LIMIT = 1.15;
const P99_OVER_P50_LIMIT = 3;

type Who = "coil" | "ptp" | "bare";

async function run(ctx: BenchContext): Promise<void> {
  const n = iterations(ctx, 40, 4);
  const rounds = iterations(ctx, 3, 1);
  const burst = iterations(ctx, 50, 10);
  const empty = await emptyModule();
  const hostLocalDir = await Deno.makeTempDir({ prefix: "coil-bench-host-local-" });
  try {
    await using fx = await startNode(["10.96.0.0/16"]);
    const confs: Record<"coil" | "ptp", string> = {
      coil: JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "coil", socket: fx.coild.socket }),
      ptp: JSON.stringify({
        cniVersion: "1.0.0",
        name: "bench-ptp",
        type: "ptp",
        ipMasq: false,
        ipam: {
          type: "host-local",
          ranges: [[{ subnet: "10.97.0.0/16" }]],
          routes: [{ dst: "0.0.0.0/0" }],
          dataDir: hostLocalDir,
        },
      }),
    };
    const spec = (who: Who, command: "ADD" | "DEL", pod: TestNetns | undefined, id: string): ExecSpec => {
      if (who === "bare") return bareDeno(empty.path, fx.nodeFd);
      return {
        cmd: who === "coil" ? COIL : PTP,
        env: cniEnv(command, { containerId: id, netns: pod!.path, podName: id }),
        stdin: confs[who],
        netnsFd: fx.nodeFd,
      };
    };
    await serial(ctx, n, spec);
    await concurrent(ctx, rounds, burst, spec);
    // Where the time goes: coild's own handling of each request, from its log.
    const log = fx.coild.log();
    const handled = (verb: string, prefix: string) => {
      const list = coildDurations(log, verb, prefix);
      return list.length ? `${median(list).toFixed(1)} / ${Math.max(...list).toFixed(0)} ms` : "not logged";
    };
    ctx.info(
      `coild's own handling (its log's durationMs), median / max: serial ADD ${
        handled("add", "serial-coil-")
      }, ` +
        `serial DEL ${handled("del", "serial-coil-")}; burst ADD ${handled("add", "burst-coil-")}, ` +
        `burst DEL ${handled("del", "burst-coil-")}`,
    );
  } finally {
    await Deno.remove(hostLocalDir, { recursive: true });
    await Deno.remove(empty.dir, { recursive: true });
  }
}

type SpecOf = (who: Who, command: "ADD" | "DEL", pod: TestNetns | undefined, id: string) => ExecSpec;

async function serial(ctx: BenchContext, n: number, spec: SpecOf): Promise<void> {
  const samples: Record<string, number[]> = { coilAdd: [], coilDel: [], ptpAdd: [], ptpDel: [], bare: [] };
  for (let i = -3; i < n; i++) {
    const order = rotate<Who>(["coil", "ptp", "bare"], i + 3);
    const pods = new Map<Who, TestNetns>();
    try {
      for (const who of ["coil", "ptp"] as const) pods.set(who, await createNetns());
      for (const who of order) {
        const add = await execOk(`${who} ADD`, spec(who, "ADD", pods.get(who), `serial-${who}-${i}`));
        if (i >= 0) samples[who === "bare" ? "bare" : `${who}Add`].push(add.ms);
      }
      for (const who of order) {
        if (who === "bare") continue;
        const del = await execOk(`${who} DEL`, spec(who, "DEL", pods.get(who), `serial-${who}-${i}`));
        if (i >= 0) samples[`${who}Del`].push(del.ms);
      }
    } finally {
      for (const pod of pods.values()) await pod[Symbol.asyncDispose]();
    }
  }
  const bare = median(samples.bare);
  const coilAdd = summarize(samples.coilAdd);
  const coilDel = median(samples.coilDel);
  const ptpDel = median(samples.ptpDel);
  ctx.info(
    `serial: ${n} ADDs then DELs each, interleaved, each pod in a fresh netns, exec'd in the node netns`,
  );
  ctx.report({
    name: "main-mode ADD via scripts/coil, serial, median",
    value: coilAdd.median,
    unit: "ms",
    baseline: { name: "ptp + host-local ADD", value: median(samples.ptpAdd) },
    note: `coil ADD p99 ${coilAdd.p99.toFixed(1)} ms`,
  });
  ctx.report({
    name: "main-mode ADD via scripts/coil vs deno's bare start, serial, median",
    value: coilAdd.median,
    unit: "ms",
    baseline: { name: "bare deno start", value: bare },
    target: {
      text: `≤ bare start + ${ADD_BUDGET_MS} ms (${(bare + ADD_BUDGET_MS).toFixed(1)} ms)`,
      pass: coilAdd.median <= bare + ADD_BUDGET_MS,
    },
  });
  ctx.report({
    name: "main-mode DEL via scripts/coil, serial, median",
    value: coilDel,
    unit: "ms",
    baseline: { name: "ptp + host-local DEL", value: ptpDel },
    target: { text: "no slower than ptp", pass: coilDel <= ptpDel },
  });
}

/** Spawns every spec at once; returns the wall time to the last exit and each one's own time. */
async function burstOf(what: string, specs: ExecSpec[]): Promise<{ wall: number; each: number[] }> {
  const started = performance.now();
  const results: ExecResult[] = await Promise.all(spawnAll(specs).map((r) => r.done));
  const wall = performance.now() - started;
  results.forEach((result, i) => checkOk(`${what} #${i}`, result));
  return { wall, each: results.map((r) => r.ms) };
}

async function concurrent(ctx: BenchContext, rounds: number, burst: number, spec: SpecOf): Promise<void> {
  const walls: Record<Who, number[]> = { coil: [], ptp: [], bare: [] };
  const each: Record<Who, number[]> = { coil: [], ptp: [], bare: [] };
  const delWalls: Record<"coil" | "ptp", number[]> = { coil: [], ptp: [] };
  for (let r = -1; r < rounds; r++) {
    for (const who of rotate<Who>(["coil", "ptp", "bare"], r + 1)) {
      const pods: TestNetns[] = [];
      try {
        if (who !== "bare") { for (let k = 0; k < burst; k++) pods.push(await createNetns()); }
        const ids = Array.from({ length: burst }, (_, k) => `burst-${who}-${r}-${k}`);
        const adds = await burstOf(`${who} ADD`, ids.map((id, k) => spec(who, "ADD", pods[k], id)));
        if (r >= 0) {
          walls[who].push(adds.wall);
          each[who].push(...adds.each);
        }
        if (who !== "bare") {
          const dels = await burstOf(`${who} DEL`, ids.map((id, k) => spec(who, "DEL", pods[k], id)));
          if (r >= 0) delWalls[who].push(dels.wall);
        }
      } finally {
        for (const pod of pods) await pod[Symbol.asyncDispose]();
      }
    }
  }
  const wall = (who: Who) => median(walls[who]);
  const coil = summarize(each.coil);
  ctx.info(`${burst} at once, ${rounds} rounds each (after a warm-up round), rounds interleaved`);
  ctx.info(
    `per-ADD p50 / p99: coil ${coil.median.toFixed(0)} / ${coil.p99.toFixed(0)} ms; ` +
      `ptp ${median(each.ptp).toFixed(0)} / ${percentile(each.ptp, 99).toFixed(0)} ms; ` +
      `bare deno ${median(each.bare).toFixed(0)} / ${percentile(each.bare, 99).toFixed(0)} ms`,
  );
  ctx.report({
    name: `${burst} concurrent main-mode ADDs: wall time to all done, median round`,
    value: wall("coil"),
    unit: "ms",
    baseline: { name: `${burst} concurrent bare deno starts`, value: wall("bare") },
    target: {
      text: `≤ ${CONCURRENT_WALL_LIMIT}× the bare starts (${
        (wall("bare") * CONCURRENT_WALL_LIMIT).toFixed(0)
      } ms)`,
      pass: wall("coil") <= wall("bare") * CONCURRENT_WALL_LIMIT,
    },
  });
  ctx.report({
    name: `${burst} concurrent main-mode ADDs: wall time vs ptp + host-local`,
    value: wall("coil"),
    unit: "ms",
    baseline: { name: `${burst} concurrent ptp + host-local ADDs`, value: wall("ptp") },
  });
  ctx.report({
    name: `${burst} concurrent main-mode ADDs: per-ADD p99`,
    value: coil.p99,
    unit: "ms",
    baseline: { name: "their p50", value: coil.median },
    target: { text: `p99 ≤ ${P99_OVER_P50_LIMIT}× p50`, pass: coil.p99 <= P99_OVER_P50_LIMIT * coil.median },
  });
  ctx.report({
    name: `${burst} concurrent main-mode DELs: wall time, median round`,
    value: median(delWalls.coil),
    unit: "ms",
    baseline: { name: `${burst} concurrent ptp + host-local DELs`, value: median(delWalls.ptp) },
  });
}
