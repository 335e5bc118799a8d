// `deno task bench [--quick] [--json FILE] [NAME…]`: runs Coil's benchmarks (all, or those named), each
// figure printed next to its baseline from the same run, then one Markdown table of the whole run.
// Benchmarks are not tests: nothing here asserts on time; a missed target prints MISS.

import { parseArgs } from "node:util";
import type { Benchmark } from "./_bench.ts";
import { type Figure, markdownTable, printFigure, printInfo, printTitle } from "./_report.ts";
import { benchmark as aggregation } from "./aggregation.ts";
import { benchmark as bgpPropagation } from "./bgp_propagation.ts";
import { benchmark as blockClaim } from "./block_claim.ts";
import { benchmark as cniExec } from "./cni_exec.ts";
import { benchmark as clusterScale } from "./cluster_scale.ts";
import { benchmark as denseNode } from "./dense_node.ts";
import { benchmark as ipamThroughput } from "./ipam_throughput.ts";
import { benchmark as mainMode } from "./main_mode.ts";
import { benchmark as metricsCost } from "./metrics_cost.ts";
import { benchmark as routeSync } from "./route_sync.ts";

const BENCHMARKS: readonly Benchmark[] = [
  cniExec,
  ipamThroughput,
  blockClaim,
  clusterScale,
  mainMode,
  denseNode,
  metricsCost,
  routeSync,
  bgpPropagation,
  aggregation,
];

const USAGE = `Usage: deno task bench [--quick] [--json FILE] [NAME…]

Benchmarks (default: all, in this order):
${BENCHMARKS.map((b) => `  ${b.name.padEnd(18)} ${b.description}`).join("\n")}

  --quick      a few iterations each: checks the benchmarks work; the figures mean nothing
  --json FILE  also write every figure, with the machine description, to FILE`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      quick: { type: "boolean", default: false },
      json: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const unknown = positionals.filter((name) => !BENCHMARKS.some((b) => b.name === name));
  if (unknown.length > 0) {
    console.error(`Unknown benchmark ${unknown.map((n) => `"${n}"`).join(", ")}\n\n${USAGE}`);
    return 2;
  }
  const selected = positionals.length ? BENCHMARKS.filter((b) => positionals.includes(b.name)) : BENCHMARKS;
  const machine = await describeMachine();
  console.log(
    `Coil benchmarks, ${machine.date}${values.quick ? " (--quick: figures are not meaningful)" : ""}`,
  );
  console.log(`machine: ${machine.summary}`);
  const figures: Figure[] = [];
  const failures: string[] = [];
  const started = performance.now();
  for (const bench of selected) {
    printTitle(bench.name, bench.description);
    const benchStarted = performance.now();
    try {
      await bench.run({
        quick: values.quick,
        report(figure) {
          const full = { bench: bench.name, ...figure };
          figures.push(full);
          printFigure(full);
        },
        info: printInfo,
      });
    } catch (err) {
      failures.push(bench.name);
      console.error(`   ${bench.name} failed: ${err instanceof Error ? err.stack ?? err.message : err}`);
    }
    printInfo(`(${((performance.now() - benchStarted) / 1000).toFixed(1)} s)`);
  }
  console.log(`\n${markdownTable(figures)}`);
  console.log(`\ntotal ${((performance.now() - started) / 1000).toFixed(0)} s`);
  if (values.json) {
    await Deno.writeTextFile(
      values.json,
      JSON.stringify({ machine, quick: values.quick, figures }, null, 2) + "\n",
    );
  }
  if (failures.length) {
    console.error(`failed: ${failures.join(", ")}`);
    return 1;
  }
  return 0;
}

/** What the figures were measured on. */
async function describeMachine() {
  const text = async (cmd: string, args: string[]) => {
    try {
      const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
      return new TextDecoder().decode(out.stdout).trim();
    } catch {
      return "";
    }
  };
  const model = /^Model name:\s*(.*)$/m.exec(await text("lscpu", []))?.[1] ?? "unknown";
  const memKb = Number(/^MemTotal:\s*(\d+)/m.exec(await Deno.readTextFile("/proc/meminfo"))?.[1] ?? 0);
  const info = {
    date: new Date().toISOString(),
    cpus: navigator.hardwareConcurrency,
    model,
    memoryGiB: Math.round(memKb / 1024 / 1024),
    kernel: await text("uname", ["-r"]),
    deno: Deno.version.deno,
    load: (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" "),
  };
  return {
    ...info,
    summary:
      `${info.cpus} CPUs (${info.model}), ${info.memoryGiB} GiB, Linux ${info.kernel}, deno ${info.deno}, ` +
      `load average ${info.load}`,
  };
}

if (import.meta.main) Deno.exit(await main(Deno.args));
