// What metrics cost the ADD path: two coilds on one etcd, one serving --metrics-address (scraped every
// second, as Prometheus would) and one with it disabled, each sent ADD then DEL over its UNIX socket in
// turns; coild's own handling is what is compared, without the exec of the CNI client around it. Also
// each coild's RSS at the end.

import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { startCoild, type TestCoild } from "../helpers/coild.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { createNetns } from "../helpers/netns.ts";
import { type BenchContext, type Benchmark, iterations } from "./_bench.ts";
import { median, rotate, summarize } from "./_stats.ts";

export const benchmark: Benchmark = {
  name: "metrics-cost",
  description: "IPAM-mode ADD over coild's socket with and without --metrics-address, interleaved",
  run,
};

/** Within run-to-run noise: metrics may cost the ADD path nothing measurable. */
const RATIO_LIMIT = 1.05;
const METRICS_PORT = 9384;

type Who = "metrics" | "none";

async function run(ctx: BenchContext): Promise<void> {
  const n = iterations(ctx, 400, 10);
  await using stack = new AsyncDisposableStack();
  const etcd = stack.use(await startEtcd());
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  stack.defer(() => client.close());
  const coilds = {} as Record<Who, TestCoild>;
  for (const who of ["metrics", "none"] as const) {
    const prefix = etcd.newPrefix();
    await new PoolStore(client, prefix).createPool(parsePool("default", { subnets: ["10.98.0.0/16"] }));
    const node = stack.use(await createNetns());
    await node.exec(["ip", "link", "set", "lo", "up"]);
    const address = who === "metrics" ? `127.0.0.1:${METRICS_PORT}` : "";
    coilds[who] = stack.use(
      await startCoild({ etcd, prefix, node, args: ["--sweep-interval", "0", "--metrics-address", address] }),
    );
    // Prometheus' part: a scrape every second for the whole run, through curl in the node netns.
    if (who === "metrics") stack.use(scrapeEverySecond(node.name, `http://${address}/metrics`));
  }
  const samples: Record<Who, number[]> = { metrics: [], none: [] };
  for (let i = -20; i < n; i++) {
    for (const who of rotate<Who>(["metrics", "none"], i + 20)) {
      const id = `bench-${who}-${i}`;
      const ms = await request(coilds[who].socket, "add", id);
      await request(coilds[who].socket, "del", id);
      if (i >= 0) samples[who].push(ms);
    }
  }
  const rss = async (who: Who) => {
    const status = await Deno.readTextFile(`/proc/${await coildPid(coilds[who])}/status`);
    return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1]) / 1024;
  };
  const withMetrics = summarize(samples.metrics);
  const without = median(samples.none);
  ctx.info(`${n} ADD+DEL pairs per coild over the UNIX socket, alternating; metrics scraped every second`);
  ctx.report({
    name: "IPAM-mode ADD over the socket, with --metrics-address, median",
    value: withMetrics.median,
    unit: "ms",
    baseline: { name: "same, metrics disabled", value: without },
    target: {
      text: `≤ ${RATIO_LIMIT}× without`,
      pass: withMetrics.median <= without * RATIO_LIMIT,
    },
    note: `p99 ${withMetrics.p99.toFixed(2)} ms`,
  });
  ctx.info(
    `coild RSS after the run: ${(await rss("metrics")).toFixed(1)} MiB with --metrics-address, ` +
      `${(await rss("none")).toFixed(1)} MiB without`,
  );
}

/** Sends one request line for IPAM-mode `verb` of container `id`; returns the ms to the reply. */
async function request(socket: string, verb: "add" | "del", id: string): Promise<number> {
  const body = {
    verb,
    mode: "ipam",
    network: "bench",
    containerId: id,
    ifName: "eth0",
    netns: "/var/run/netns/none",
    podNamespace: "default",
    podName: id,
    podUid: "",
    mtu: 0,
    hostRouteTable: 0,
  };
  const started = performance.now();
  const conn = await Deno.connect({ transport: "unix", path: socket });
  try {
    await conn.write(new TextEncoder().encode(JSON.stringify(body) + "\n"));
    const reply = JSON.parse(await new Response(conn.readable).text());
    if (!reply.ok) throw new Error(`${verb} ${id}: ${JSON.stringify(reply)}`);
  } catch (err) {
    try {
      conn.close();
    } catch { /* the reply's end closed it */ }
    throw err;
  }
  return performance.now() - started;
}

/** The deno process of `coild` (a child of `ip netns exec`). */
async function coildPid(coild: TestCoild): Promise<number> {
  const children = await Deno.readTextFile(`/proc/${coild.process.pid}/task/${coild.process.pid}/children`);
  const pid = Number(children.trim().split(" ")[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : coild.process.pid;
}

function scrapeEverySecond(netns: string, url: string): Disposable {
  const timer = setInterval(() => {
    new Deno.Command("ip", { args: ["netns", "exec", netns, "curl", "-sS", "-o", "/dev/null", url] }).output()
      .catch(() => {});
  }, 1000);
  return { [Symbol.dispose]: () => clearInterval(timer) };
}
