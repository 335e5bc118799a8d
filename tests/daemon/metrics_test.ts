// coild's metrics: the exposition format (escaping, histogram buckets, checked by promtool), the
// process_* figures from /proc, and the Coil gauges and counters over a real NodeIpam and etcd.

import assert from "node:assert/strict";
import { createCoilMetrics, instrumentCniService } from "../../daemon/metrics.ts";
import { createRegistry, escapeLabelValue, formatValue } from "../../daemon/metrics_registry.ts";
import { readProcessStats } from "../../daemon/process_metrics.ts";
import { aggregate } from "../../ipam/aggregate.ts";
import type { AllocationRequest } from "../../ipam/allocation.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { createNodeIpam } from "../../ipam/node_ipam.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { promtoolCheckMetrics } from "../helpers/promtool.ts";

/** The value of the one sample whose line starts with `series` (name and labels, as written). */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("createRegistry() escapes HELP and label values as the text format wants", async () => {
  const registry = createRegistry();
  const c = registry.counter({
    name: "t_things_total",
    help: 'Things with \\ and\na "quote".',
    labels: ["k"],
  });
  c.inc({ k: 'a\\b"c\nd' });
  c.inc({ k: 'a\\b"c\nd' }, 2);
  c.inc({ k: "plain" });
  const text = registry.render();
  assert.equal(
    text,
    '# HELP t_things_total Things with \\\\ and\\na "quote".\n# TYPE t_things_total counter\n' +
      't_things_total{k="a\\\\b\\"c\\nd"} 3\nt_things_total{k="plain"} 1\n',
  );
  const check = await promtoolCheckMetrics(text);
  assert.equal(check.code, 0, check.output);
  assert.equal(escapeLabelValue("x"), "x");
});

Deno.test("createRegistry() writes cumulative buckets, +Inf, sum and count", async () => {
  const registry = createRegistry();
  const h = registry.histogram({
    name: "t_duration_seconds",
    help: "Durations.",
    labels: ["verb"],
    buckets: [0.01, 0.1, 1],
  });
  for (const v of [0.005, 0.01, 0.05, 0.5, 2, 3]) h.observe({ verb: "add" }, v);
  h.observe({ verb: "del" }, 0.2);
  const text = registry.render();
  const series = (le: string) => sample(text, `t_duration_seconds_bucket{verb="add",le="${le}"}`);
  // 0.01 falls into the 0.01 bucket: le means "less than or equal".
  assert.deepEqual(["0.01", "0.1", "1", "+Inf"].map(series), [2, 3, 4, 6]);
  assert.equal(sample(text, 't_duration_seconds_sum{verb="add"}'), 0.005 + 0.01 + 0.05 + 0.5 + 2 + 3);
  assert.equal(sample(text, 't_duration_seconds_count{verb="add"}'), 6);
  assert.equal(sample(text, 't_duration_seconds_bucket{verb="del",le="0.1"}'), 0);
  assert.equal(sample(text, 't_duration_seconds_bucket{verb="del",le="1"}'), 1);
  const check = await promtoolCheckMetrics(text);
  assert.equal(check.code, 0, check.output);
});

Deno.test("createRegistry() rejects what would make an invalid exposition", async (t) => {
  const registry = createRegistry();
  const c = registry.counter({ name: "t_a_total", help: "A.", labels: ["x"] });
  const cases: [string, () => unknown, RegExp][] = [
    [
      "a metric name with a dash",
      () => registry.counter({ name: "t-b", help: "B." }),
      /Invalid metric name "t-b"/,
    ],
    ["a reserved label name", () => registry.counter({ name: "t_c", help: "C.", labels: ["__x"] }), /"__x"/],
    [
      "le on a histogram",
      () => registry.histogram({ name: "t_h", help: "H.", labels: ["le"], buckets: [1] }),
      /"le"/,
    ],
    [
      "unsorted buckets",
      () => registry.histogram({ name: "t_h2", help: "H.", buckets: [1, 0.5] }),
      /increasing/,
    ],
    ["a second family of one name", () => registry.counter({ name: "t_a_total", help: "A." }), /already/],
    ["a missing label", () => c.inc({}), /Invalid labels \{\} for metric "t_a_total": it has \{x\}/],
    ["an unknown label", () => c.inc({ x: "1", y: "2" }), /Invalid labels/],
    ["a negative increment", () => c.inc({ x: "1" }, -1), /only goes up/],
  ];
  for (const [name, fn, message] of cases) {
    await t.step(name, () => assert.throws(fn, message));
  }
});

Deno.test("createRegistry() leaves out a family whose collector throws, and says so", () => {
  const errors: string[] = [];
  const registry = createRegistry((name, err) => errors.push(`${name}: ${(err as Error).message}`));
  registry.collected({
    name: "t_broken",
    type: "gauge",
    help: "Broken.",
    collect: () => {
      throw new Error("netlink dump failed");
    },
  });
  registry.collected({ name: "t_good", type: "gauge", help: "Good.", collect: () => [{ value: 7 }] });
  const text = registry.render();
  assert.ok(!text.includes("t_broken"), text);
  assert.equal(sample(text, "t_good"), 7);
  assert.ok(errors.includes("t_broken: netlink dump failed"), errors.join("\n"));
});

Deno.test("formatValue() spells infinities and NaN as the format does", () => {
  assert.deepEqual([Infinity, -Infinity, NaN, 0, 1.5, 1e21].map(formatValue), [
    "+Inf",
    "-Inf",
    "NaN",
    "0",
    "1.5",
    "1e+21",
  ]);
});

Deno.test("readProcessStats() reads this process from /proc", async (t) => {
  await t.step("the real /proc", () => {
    const stats = readProcessStats();
    const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"))![1]);
    assert.ok(Math.abs(stats.residentBytes - rssKb * 1024) < 16 * 1024 * 1024, `rss ${stats.residentBytes}`);
    assert.ok(stats.virtualBytes >= stats.residentBytes);
    // ps(1) computes the elapsed time from the same start time; its figure is in whole seconds.
    const ps = new Deno.Command("ps", { args: ["-o", "etimes=", "-p", String(Deno.pid)] }).outputSync();
    const elapsed = Number(new TextDecoder().decode(ps.stdout).trim());
    assert.ok(Math.abs(Date.now() / 1000 - elapsed - stats.startTime) < 2.5, `start ${stats.startTime}`);
    const wall = Date.now() / 1000 - stats.startTime;
    const ceiling = wall * navigator.hardwareConcurrency + 0.1;
    assert.ok(
      stats.cpuSeconds > 0 && stats.cpuSeconds <= ceiling,
      `cpu ${stats.cpuSeconds} s, wall ${wall} s`,
    );
    assert.ok(stats.openFds >= 3 && stats.openFds <= stats.maxFds);
  });
  await t.step("a command name with spaces and parentheses", async () => {
    const proc = await Deno.makeTempDir({ prefix: "coil-t-proc-" });
    try {
      await Deno.mkdir(`${proc}/self/fd`, { recursive: true });
      await Deno.symlink("/dev/null", `${proc}/self/fd/0`);
      await Deno.symlink("/dev/null", `${proc}/self/fd/3`);
      // Fields 1..24 of proc(5): utime 250, stime 50 ticks; starttime 1234 ticks.
      const rest = "S 1 1 1 0 -1 4194560 0 0 0 0 250 50 0 0 20 0 1 0 1234 999 77";
      await Deno.writeTextFile(`${proc}/self/stat`, `42 (a) b (c)) ${rest}\n`);
      await Deno.writeTextFile(
        `${proc}/self/status`,
        "Name:\tx\nFDSize:\t4\nVmSize:\t  2048 kB\nVmRSS:\t  1024 kB\n",
      );
      await Deno.writeTextFile(`${proc}/stat`, "cpu  1 2 3\nbtime 1700000000\n");
      await Deno.writeTextFile(
        `${proc}/self/limits`,
        "Limit                     Soft Limit           Hard Limit           Units     \n" +
          "Max open files            1024                 4096                 files     \n",
      );
      assert.deepEqual(readProcessStats(proc), {
        cpuSeconds: 3,
        residentBytes: 1024 * 1024,
        virtualBytes: 2048 * 1024,
        openFds: 2,
        maxFds: 1024,
        startTime: 1700000000 + 12.34,
      });
      await Deno.writeTextFile(`${proc}/self/status`, "Name:\tx\n");
      assert.throws(() => readProcessStats(proc), /Cannot read process metrics from ".*": residentBytes/);
    } finally {
      await Deno.remove(proc, { recursive: true });
    }
  });
});

Deno.test("createCoilMetrics() reports a real NodeIpam's blocks and addresses", async () => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const prefix = etcd.newPrefix();
  // /30 blocks: 4 addresses, of which the first and the broadcast are reserved, so 2 usable.
  await new PoolStore(client, prefix).createPool(
    parsePool("default", { subnets: ["10.130.0.0/24"], blockSizeBits: 2 }),
  );
  const metrics = createCoilMetrics({ version: "9.9.9" });
  const ipam = await createNodeIpam({
    store: createEtcdStore(client, prefix),
    node: "metrics-node",
    log: metrics.ipamEvent,
  });
  try {
    metrics.attach({ ipam, pods: () => 5, exportedRoutes: () => ipam.ownedBlocks().length });
    const request = (i: number): AllocationRequest => ({
      network: "net",
      containerId: `c${i}`,
      ifName: "eth0",
      podNamespace: "ns",
      podName: `p${i}`,
      podUid: "",
      netns: "/nowhere",
    });
    for (let i = 0; i < 3; i++) await ipam.allocate(request(i));
    await ipam.settled();
    const blocks = ipam.ownedBlocks().length;
    assert.ok(blocks >= 2, `3 addresses need 2 blocks of 2, got ${blocks}`);
    let text = metrics.render();
    const pool = '{pool="default",family="4"}';
    assert.equal(sample(text, `coil_blocks_owned${pool}`), blocks);
    assert.equal(sample(text, `coil_addresses_in_use${pool}`), 3);
    assert.equal(sample(text, `coil_addresses_free${pool}`), blocks * 2 - 3);
    assert.equal(sample(text, 'coil_block_claims_total{pool="default"}'), blocks);
    assert.equal(sample(text, "coil_export_table_routes"), blocks);
    // Blocks of one node claimed next to each other aggregate: the table should hold fewer routes.
    const expected = aggregate(ipam.ownedBlocks().map((b) => b.block), ipam.poolSubnets()).length;
    assert.ok(expected < blocks, `${blocks} adjacent blocks aggregate into ${expected} prefixes`);
    assert.equal(sample(text, "coil_export_table_routes_expected"), expected);
    assert.equal(sample(text, "coil_pods"), 5);
    assert.equal(sample(text, `coil_build_info{version="9.9.9",deno="${Deno.version.deno}"}`), 1);

    for (let i = 0; i < 3; i++) await ipam.release("net", `c${i}`, "eth0");
    await ipam.releaseEmptyBlocks();
    await ipam.settled();
    text = metrics.render();
    const released = blocks - ipam.ownedBlocks().length;
    assert.ok(released >= 1, "empty blocks beyond the spare go back");
    assert.equal(sample(text, 'coil_block_releases_total{pool="default"}'), released);
    assert.equal(sample(text, `coil_addresses_in_use${pool}`), 0);
    const check = await promtoolCheckMetrics(text);
    assert.equal(check.code, 0, check.output);
  } finally {
    await ipam.close();
    client.close();
  }
});

Deno.test("instrumentCniService() counts each reply by verb and code, and times it", async () => {
  const metrics = createCoilMetrics({ version: "0" });
  const service = instrumentCniService(async (req) => {
    await new Promise((r) => setTimeout(r, req.verb === "add" ? 30 : 0));
    return req.verb === "add" ? { ok: true } : { ok: false, code: 11, msg: "etcd is unreachable" };
  }, metrics);
  const add = { verb: "add" } as Parameters<typeof service>[0];
  const del = { verb: "del" } as Parameters<typeof service>[0];
  assert.deepEqual(await service(add), { ok: true });
  await service(del);
  await service(del);
  const text = metrics.render();
  assert.equal(sample(text, 'coil_cni_requests_total{verb="add",code="0"}'), 1);
  assert.equal(sample(text, 'coil_cni_requests_total{verb="del",code="11"}'), 2);
  assert.equal(sample(text, 'coil_cni_request_duration_seconds_bucket{verb="add",le="0.025"}'), 0);
  assert.equal(sample(text, 'coil_cni_request_duration_seconds_bucket{verb="add",le="+Inf"}'), 1);
  assert.ok(sample(text, 'coil_cni_request_duration_seconds_sum{verb="add"}')! >= 0.03);
});

Deno.test("createCoilMetrics() counts etcd attempts, export syncs and sweeps", async () => {
  const metrics = createCoilMetrics({ version: "0" });
  let text = metrics.render();
  assert.equal(sample(text, "coil_sweep_suspects"), undefined, "no sweep yet: no value rather than 0");
  assert.equal(sample(text, "coil_etcd_request_errors_total"), 0, "a counter without labels starts at 0");
  assert.equal(sample(text, "coil_etcd_request_duration_seconds_count"), 0);
  assert.equal(sample(text, "coil_pods"), undefined, "no sources attached yet");
  metrics.etcdRequest(0.002, true);
  metrics.etcdRequest(2, false);
  metrics.exportSync({ added: 3, removed: 1 });
  metrics.exportSync(undefined);
  metrics.sweep({ suspects: 2, released: [{} as never, {} as never], blocksReleased: 1 });
  text = metrics.render();
  assert.equal(sample(text, "coil_etcd_request_duration_seconds_count"), 2);
  assert.equal(sample(text, 'coil_etcd_request_duration_seconds_bucket{le="0.0025"}'), 1);
  assert.equal(sample(text, "coil_etcd_request_errors_total"), 1);
  assert.equal(sample(text, 'coil_export_syncs_total{result="ok"}'), 1);
  assert.equal(sample(text, 'coil_export_syncs_total{result="error"}'), 1);
  assert.equal(sample(text, 'coil_export_route_changes_total{op="add"}'), 3);
  assert.equal(sample(text, 'coil_export_route_changes_total{op="del"}'), 1);
  assert.equal(sample(text, "coil_sweeps_total"), 1);
  assert.equal(sample(text, "coil_sweep_released_allocations_total"), 2);
  assert.equal(sample(text, "coil_sweep_released_blocks_total"), 1);
  assert.equal(sample(text, "coil_sweep_suspects"), 2);
  assert.ok(Math.abs(sample(text, "coil_sweep_last_run_timestamp_seconds")! - Date.now() / 1000) < 5);
  assert.ok(sample(text, "process_resident_memory_bytes")! > 10e6);
  // V8's view, which tells heap growth from native growth in the resident size.
  const heapTotal = sample(text, "deno_heap_size_total_bytes")!;
  assert.ok(heapTotal > 1e6 && sample(text, "deno_heap_size_used_bytes")! <= heapTotal);
  assert.ok(sample(text, "deno_external_memory_bytes")! >= 0);
  const check = await promtoolCheckMetrics(text);
  assert.equal(check.code, 0, check.output);
});
