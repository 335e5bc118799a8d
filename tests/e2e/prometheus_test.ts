// A real Prometheus scrapes Coil's metrics: `up == 1` and the Coil series with the values the ADDs
// imply, `promtool check metrics` on a scrape, and `promtool check rules` on the sample alerting rules.
// First over the metrics endpoint and a real NodeIpam in this process; then a real coild.

import assert from "node:assert/strict";
import { serveHttp } from "../../daemon/http_server.ts";
import { createCoilMetrics, instrumentCniService } from "../../daemon/metrics.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { createNodeIpam } from "../../ipam/node_ipam.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { addPod, createPod, startNode, type TestPod } from "../daemon/_lifecycle_fixture.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns } from "../helpers/netns.ts";
import { startPrometheus } from "../helpers/prometheus.ts";
import { promtoolCheckMetrics } from "../helpers/promtool.ts";

await removeLeftoverNetns();

const RULES = new URL("../../scripts/prometheus/coil-rules.yml", import.meta.url).pathname;
const one = (value: number) => (r: { value: number }[]) => r.length === 1 && r[0].value === value;

Deno.test("promtool check rules accepts scripts/prometheus/coil-rules.yml", async () => {
  const out = await new Deno.Command("promtool", { args: ["check", "rules", RULES] }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.match(text, /SUCCESS: \d+ rules found/);
});

Deno.test("promtool test rules: the export alert fires when the table is out of sync, not when it aggregates", async () => {
  const tests = new URL("./coil_rules_test.yml", import.meta.url).pathname;
  const out = await new Deno.Command("promtool", { args: ["test", "rules", tests] }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.match(text, /SUCCESS/);
});

Deno.test("Prometheus scrapes the metrics endpoint over a real NodeIpam", async () => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const prefix = etcd.newPrefix();
  await new PoolStore(client, prefix).createPool(
    parsePool("default", { subnets: ["10.132.0.0/24", "fd00:132::/120"], blockSizeBits: 4 }),
  );
  const metrics = createCoilMetrics({ version: "0.0.0-test" });
  const ipam = await createNodeIpam({
    store: createEtcdStore(client, prefix),
    node: "prom-node",
    log: metrics.ipamEvent,
  });
  metrics.attach({
    ipam,
    pods: () => ipam.allocations().length,
    exportedRoutes: () => ipam.ownedBlocks().length,
  });
  const service = instrumentCniService(async (req) => {
    if (req.verb !== "add") return { ok: false, code: 4, msg: "only ADD here" };
    await ipam.allocate(req);
    return { ok: true };
  }, metrics);
  const server = serveHttp({
    address: { hostname: "127.0.0.1", port: 0 },
    metrics: metrics.render,
    ready: () => Promise.resolve({ ok: true }),
  });
  try {
    for (let i = 0; i < 3; i++) {
      const reply = await service({
        verb: "add",
        mode: "ipam",
        mtu: 0,
        hostRouteTable: 0,
        network: "net",
        containerId: `prom-${i}`,
        ifName: "eth0",
        netns: "/nowhere",
        podNamespace: "default",
        podName: `p${i}`,
        podUid: "",
      });
      assert.equal(reply.ok, true, JSON.stringify(reply));
    }
    await service({ verb: "status", network: "net" } as Parameters<typeof service>[0]);
    await ipam.settled();
    const scrape = await (await fetch(`http://127.0.0.1:${server.addr.port}/metrics`)).text();
    const check = await promtoolCheckMetrics(scrape);
    assert.equal(check.code, 0, check.output);

    await using prometheus = await startPrometheus([`127.0.0.1:${server.addr.port}`]);
    await prometheus.waitFor('up{job="coild"}', one(1));
    await prometheus.waitFor('coil_cni_requests_total{verb="add",code="0"}', one(3));
    await prometheus.waitFor('coil_cni_requests_total{verb="status",code="4"}', one(1));
    await prometheus.waitFor('coil_cni_request_duration_seconds_count{verb="add"}', one(3));
    for (const family of ["4", "6"]) {
      const blocks = ipam.ownedBlocks().filter((b) => String(b.block.family) === family).length;
      await prometheus.waitFor(`coil_addresses_in_use{pool="default",family="${family}"}`, one(3));
      await prometheus.waitFor(`coil_blocks_owned{pool="default",family="${family}"}`, one(blocks));
      // /28 blocks: IPv4 keeps 14 usable (first and broadcast reserved), IPv6 15.
      const usable = family === "4" ? 14 : 15;
      await prometheus.waitFor(
        `coil_addresses_free{pool="default",family="${family}"}`,
        one(blocks * usable - 3),
      );
    }
    await prometheus.waitFor('sum(coil_block_claims_total{pool="default"})', one(ipam.ownedBlocks().length));
    await prometheus.waitFor("coil_pods", one(3));
    await prometheus.waitFor("process_resident_memory_bytes > 1e7", (r) => r.length === 1);
    await prometheus.waitFor("time() - process_start_time_seconds < 3600", (r) => r.length === 1);
  } finally {
    await server.close();
    await ipam.close();
    client.close();
  }
});

Deno.test({
  name: "Prometheus scrapes a real coild: up, the Coil series after three ADDs, and the process series",
  async fn() {
    await using etcd = await startEtcd();
    const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
    const pods: TestPod[] = [];
    try {
      // coild and Prometheus share the node netns, whose loopback only they see.
      const port = 9384;
      await using node = await startNode({
        etcd,
        client,
        subnets: ["10.133.0.0/24"],
        args: ["--metrics-address", `127.0.0.1:${port}`],
      });
      for (let i = 0; i < 3; i++) {
        const pod = await createPod(`prom-pod-${i}`);
        pods.push(pod);
        await addPod(node, pod);
      }
      const scrape = await node.ns.exec(["curl", "-sS", `http://127.0.0.1:${port}/metrics`]);
      const check = await promtoolCheckMetrics(scrape);
      assert.equal(check.code, 0, check.output);
      assert.equal(await node.ns.exec(["curl", "-sS", `http://127.0.0.1:${port}/readyz`]), "ok\n");

      await using prometheus = await startPrometheus([`127.0.0.1:${port}`], node.ns);
      await prometheus.waitFor('up{job="coild"}', one(1));
      await prometheus.waitFor('coil_cni_requests_total{verb="add",code="0"}', one(3));
      await prometheus.waitFor("coil_pods", one(3));
      await prometheus.waitFor('coil_addresses_in_use{pool="default",family="4"}', one(3));
      const blocks = await prometheus.query('coil_blocks_owned{pool="default",family="4"}');
      assert.ok(blocks.length === 1 && blocks[0].value >= 1, JSON.stringify(blocks));
      await prometheus.waitFor(
        "coil_export_table_routes == coil_export_table_routes_expected",
        (r) => r.length === 1,
      );
      await prometheus.waitFor("coil_etcd_request_duration_seconds_count > 0", (r) => r.length === 1);
      await prometheus.waitFor("coil_etcd_request_errors_total", one(0));
      // coild runs with scripts/coil's permissions, which do not reach /proc: the process series must come
      // from libc reads, not be left out with a warning per scrape.
      await prometheus.waitFor("process_resident_memory_bytes > 10e6", (r) => r.length === 1);
      await prometheus.waitFor("process_open_fds > 3", (r) => r.length === 1);
      assert.doesNotMatch(node.coild.log(), /metric source failed/);
    } finally {
      for (const pod of pods) await pod[Symbol.asyncDispose]();
      client.close();
    }
  },
});
