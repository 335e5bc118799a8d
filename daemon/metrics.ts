// coild's metrics: counters that the CNI service, the etcd client, the IPAM events, the exporter and the
// sweeper bump as things happen, and gauges read from the node's state when Prometheus scrapes.

import type { ApiReply, ApiRequest } from "../cni/api.ts";
import { aggregate } from "../ipam/aggregate.ts";
import { usableAddresses } from "../ipam/block_allocator.ts";
import { familyBits } from "../ipam/cidr.ts";
import type { NodeIpam } from "../ipam/node_ipam.ts";
import { createRegistry, type Sample } from "./metrics_registry.ts";
import { registerProcessMetrics } from "./process_metrics.ts";
import type { SyncReport } from "./nodenet/route_exporter.ts";
import type { SweepReport } from "./sweeper.ts";

/** Where scrape-time gauges come from; attached once coild has built them. */
export interface MetricSources {
  ipam: Pick<NodeIpam, "ownedBlocks" | "allocations" | "claimRetries" | "poolSubnets">;
  /** Host veths of pods (e.g. `podNetwork.hostLinks().size`). */
  pods: () => number;
  /** Routes in the export table (e.g. a dump of table 119 filtered to our protocol). */
  exportedRoutes: () => number;
}

export interface CoilMetrics {
  /** One answered CNI request; `seconds` from receipt to reply, queueing included. */
  cniRequest(verb: string, reply: ApiReply, seconds: number): void;
  /** One etcd call attempt (cockatiel's onSuccess/onFailure duration is in ms: divide by 1000). */
  etcdRequest(seconds: number, ok: boolean): void;
  /** An event of NodeIpam's `log` option: block claimed, released, lost; claim race lost. */
  ipamEvent(event: Record<string, unknown>): void;
  /** One export-table sync: its report, or undefined when it failed. */
  exportSync(report: SyncReport | undefined): void;
  /** One finished sweep. */
  sweep(report: SweepReport): void;
  /** Enables the scrape-time gauges. Until then they are absent from render(). */
  attach(sources: MetricSources): void;
  /** The exposition text of every metric. */
  render(): string;
}

/** Request latencies: a local ADD takes milliseconds, one that claims a block over etcd more. */
const CNI_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const ETCD_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** IPAM log events counted per pool, by their `event` field (ipam/node_state.ts, block_claim.ts). */
const IPAM_EVENTS: Record<string, string> = {
  "block claimed": "claims",
  "block claim lost": "racesLost",
  "block released": "releases",
  "block lost": "lost",
};

/**
 * Creates coild's metrics, with the `process_*` families and `coil_build_info`.
 * @param onError hears about a gauge whose source threw during a scrape (that gauge is left out).
 */
export function createCoilMetrics(
  build: { version: string },
  onError: (metric: string, err: unknown) => void = () => {},
): CoilMetrics {
  const registry = createRegistry(onError);
  let sources: MetricSources | undefined;
  const fromSources = (read: (s: MetricSources) => Sample[]) => () => (sources ? read(sources) : []);

  registry.collected({
    name: "coil_build_info",
    type: "gauge",
    help: "Always 1; the labels say which coild and Deno run.",
    labels: ["version", "deno"],
    collect: () => [{ labels: { version: build.version, deno: Deno.version.deno }, value: 1 }],
  });
  const requests = registry.counter({
    name: "coil_cni_requests_total",
    help: "CNI requests answered, by verb and CNI result code (0: success).",
    labels: ["verb", "code"],
  });
  const requestSeconds = registry.histogram({
    name: "coil_cni_request_duration_seconds",
    help: "Time from a CNI request's arrival at coild to its reply.",
    labels: ["verb"],
    buckets: CNI_BUCKETS,
  });
  registry.collected({
    name: "coil_pods",
    type: "gauge",
    help: "Pods whose host veth coild manages.",
    collect: fromSources((s) => [{ value: s.pods() }]),
  });
  registerAddressGauges(registry, fromSources);
  const blockEvents = Object.fromEntries(
    ([
      ["claims", "coil_block_claims_total", "Blocks claimed in etcd by this node."],
      ["racesLost", "coil_block_claim_races_lost_total", "Block claims lost to another node's claim."],
      ["releases", "coil_block_releases_total", "Empty blocks this node released."],
      ["lost", "coil_blocks_lost_total", "Blocks found owned by another party or deleted by someone else."],
    ] as const).map(([key, name, help]) => [key, registry.counter({ name, help, labels: ["pool"] })]),
  );
  registry.collected({
    name: "coil_ipam_txn_retries_total",
    type: "counter",
    help: "etcd transactions re-run after a failed compare (lost claim races and address writes).",
    collect: fromSources((s) => [{ value: s.ipam.claimRetries() }]),
  });
  const etcdSeconds = registry.histogram({
    name: "coil_etcd_request_duration_seconds",
    help: "Duration of each etcd request attempt, failed ones included.",
    buckets: ETCD_BUCKETS,
  });
  const etcdErrors = registry.counter({
    name: "coil_etcd_request_errors_total",
    help: "etcd request attempts that failed (unreachable, deadline exceeded, refused).",
  });
  registry.collected({
    name: "coil_export_table_routes",
    type: "gauge",
    help: "Routes in the export table (119 by default): the owned blocks, aggregated.",
    collect: fromSources((s) => [{ value: s.exportedRoutes() }]),
  });
  registry.collected({
    name: "coil_export_table_routes_expected",
    type: "gauge",
    help: "Routes the export table should hold: the fewest prefixes covering exactly the owned blocks.",
    // The exporter's own computation (route_exporter.ts sync()), so the two gauges differ only when the
    // table is out of sync, however the blocks aggregate.
    collect: fromSources((s) => [{
      value: aggregate(s.ipam.ownedBlocks().map((b) => b.block), s.ipam.poolSubnets()).length,
    }]),
  });
  const exportSyncs = registry.counter({
    name: "coil_export_syncs_total",
    help: "Syncs of the export table, by result (ok, error).",
    labels: ["result"],
  });
  const exportChanges = registry.counter({
    name: "coil_export_route_changes_total",
    help: "Routes the export table syncs added or deleted (op: add, del).",
    labels: ["op"],
  });
  const sweeps = registry.counter({ name: "coil_sweeps_total", help: "Leak sweeps run." });
  const sweptAddresses = registry.counter({
    name: "coil_sweep_released_allocations_total",
    help: "Allocations released by sweeps because their pod's netns had vanished.",
  });
  const sweptBlocks = registry.counter({
    name: "coil_sweep_released_blocks_total",
    help: "Empty blocks released by sweeps.",
  });
  let lastSweep: { at: number; suspects: number } | undefined;
  registry.collected({
    name: "coil_sweep_suspects",
    type: "gauge",
    help: "Allocations whose netns the last sweep found missing but still within the grace.",
    collect: () => (lastSweep ? [{ value: lastSweep.suspects }] : []),
  });
  registry.collected({
    name: "coil_sweep_last_run_timestamp_seconds",
    type: "gauge",
    help: "When the last sweep finished, in seconds since the Unix epoch.",
    collect: () => (lastSweep ? [{ value: lastSweep.at }] : []),
  });
  registerProcessMetrics(registry);

  return {
    cniRequest(verb, reply, seconds) {
      requests.inc({ verb, code: String(reply.ok ? 0 : reply.code) });
      requestSeconds.observe({ verb }, seconds);
    },
    etcdRequest(seconds, ok) {
      etcdSeconds.observe(undefined, seconds);
      if (!ok) etcdErrors.inc();
    },
    ipamEvent(event) {
      const key = IPAM_EVENTS[String(event.event)];
      if (key && typeof event.pool === "string") blockEvents[key].inc({ pool: event.pool });
    },
    exportSync(report) {
      exportSyncs.inc({ result: report ? "ok" : "error" });
      if (report?.added) exportChanges.inc({ op: "add" }, report.added);
      if (report?.removed) exportChanges.inc({ op: "del" }, report.removed);
    },
    sweep(report) {
      sweeps.inc();
      if (report.released.length) sweptAddresses.inc(undefined, report.released.length);
      if (report.blocksReleased) sweptBlocks.inc(undefined, report.blocksReleased);
      lastSweep = { at: Date.now() / 1000, suspects: report.suspects };
    },
    attach(s) {
      sources = s;
    },
    render: () => registry.render(),
  };
}

/**
 * Wraps coild's request handler so that each reply is counted and timed. The handler never throws
 * (cni_service.ts), so every request is counted once.
 */
export function instrumentCniService(
  service: (req: ApiRequest) => Promise<ApiReply>,
  metrics: Pick<CoilMetrics, "cniRequest">,
): (req: ApiRequest) => Promise<ApiReply> {
  return async (req) => {
    const started = performance.now();
    const reply = await service(req);
    metrics.cniRequest(req.verb, reply, (performance.now() - started) / 1000);
    return reply;
  };
}

type FromSources = (read: (s: MetricSources) => Sample[]) => () => Sample[];

/** Blocks owned, and addresses in use and free in them, per pool and family. */
function registerAddressGauges(registry: ReturnType<typeof createRegistry>, fromSources: FromSources) {
  const tally = (s: MetricSources) => {
    const byPool = new Map<
      string,
      { pool: string; family: string; blocks: number; usable: number; used: number }
    >();
    const entry = (pool: string, family: number) => {
      const key = `${pool}\n${family}`;
      let e = byPool.get(key);
      if (!e) byPool.set(key, e = { pool, family: String(family), blocks: 0, usable: 0, used: 0 });
      return e;
    };
    for (const { pool, block } of s.ipam.ownedBlocks()) {
      const e = entry(pool, block.family);
      e.blocks++;
      e.usable += usableAddresses(2 ** (familyBits(block.family) - block.prefix), block.family);
    }
    for (const allocation of s.ipam.allocations()) {
      for (const a of allocation.addresses) entry(allocation.pool, a.family).used++;
    }
    return [...byPool.values()];
  };
  const gauge = (name: string, help: string, value: (e: ReturnType<typeof tally>[number]) => number) =>
    registry.collected({
      name,
      type: "gauge",
      help,
      labels: ["pool", "family"],
      collect: fromSources((s) =>
        tally(s).map((e) => ({ labels: { pool: e.pool, family: e.family }, value: value(e) }))
      ),
    });
  gauge("coil_blocks_owned", "Blocks this node owns, per pool and address family (4, 6).", (e) => e.blocks);
  gauge("coil_addresses_in_use", "Pod addresses allocated on this node, per pool and family.", (e) => e.used);
  gauge(
    "coil_addresses_free",
    "Addresses pods can still get in this node's blocks, per pool and family.",
    (e) => Math.max(0, e.usable - e.used),
  );
}
