// A large cluster on one real etcd, its nodes simulated by NodeIpam instances (many per process, sharing
// a few etcd clients): 1,000 and 5,000 nodes claiming their first block at once; a pool filled to 95 %
// by claims; 100,000 addresses written through NodeIpam.allocate, then etcd's size, `coil status` run as
// an admin runs it, and a node's start-up among them against the same node alone.

import type { Etcd3 } from "etcd3";
import { readSnapshot } from "../../ipam/admin/snapshot.ts";
import { claimBlock } from "../../ipam/block_claim.ts";
import { type Cidr, formatCidr, formatIp } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { isIpamError } from "../../ipam/errors.ts";
import { keysFor } from "../../ipam/keys.ts";
import { nodeIndexKeys } from "../../ipam/node_block_index.ts";
import { createNodeIpam } from "../../ipam/node_ipam.ts";
import { parsePool, type Pool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { runCoilCli } from "../helpers/coil_cli.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { inParallel } from "../helpers/in_parallel.ts";
import { type BenchContext, type Benchmark, iterations } from "./_bench.ts";
import { median, summarize } from "./_stats.ts";

export const benchmark: Benchmark = {
  name: "cluster-scale",
  description: "5,000 simulated nodes claiming at once, a pool filled to 95 %, 100,000 addresses in etcd",
  run,
};

/** etcd clients the simulated nodes share: more only adds client-side work on 2 cores (see info). */
const CLIENTS = 8;
/**
 * A /12 in /27 blocks: 32,768 blocks, what 5,000 nodes × 110 pods need (about 5 blocks each). A pool
 * this size could be listed (block_claim.ts LIST_LIMIT), but claims probe random blocks first
 * (PROBE_ABOVE) and list only after PROBES lost races.
 */
const CLUSTER_POOL = "10.64.0.0/12";
/** A /10: 131,072 blocks, above LIST_LIMIT, so claims probe random blocks and never list. */
const PROBED_POOL = "10.0.0.0/10";
const PODS_PER_NODE = 110;
/**
 * ADD attempts per node in the claim storm, with jittered exponential backoff from 0.4 s, as kubelet
 * retries an ADD that failed with CNI error 11 (etcd "request timed out" or "too many requests").
 */
const MAX_ADD_ATTEMPTS = 8;
/** Allocations in flight across all nodes while writing the 100,000 addresses. */
const IN_FLIGHT = 64;

async function run(ctx: BenchContext): Promise<void> {
  ctx.info(`machine load before: ${await loadAverage()}`);
  await claimStorms(ctx);
  await fillPool(ctx);
  await bigCluster(ctx);
}

// --- first claims at once ---------------------------------------------------------------------------

interface StormOutcome {
  nodes: number;
  wallMs: number;
  perNodeMs: number[];
  retries: number;
  duplicates: number;
  /** Blocks etcd gives to a node that does not know it: claims whose answer was lost. */
  orphans: number;
  /** CPU seconds etcd spent during the timed part. */
  etcdCpu: number;
  /** ADDs that failed with etcd unavailable (its own request timeout) and were tried again. */
  unavailable: number;
}

/** Opens `count` etcd clients to `etcd`, warmed up (connected) before any clock starts. */
async function openClients(etcd: TestEtcd, count: number): Promise<Etcd3[]> {
  const clients: Etcd3[] = [];
  for (let i = 0; i < count; i++) {
    clients.push(await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 120_000 }));
  }
  await Promise.all(clients.map((c) => c.get("warm-up").exists()));
  return clients;
}

async function createPool(admin: Etcd3, prefix: string, subnet: string): Promise<Pool> {
  const pool = parsePool("default", { subnets: [subnet], blockSizeBits: 5 });
  await new PoolStore(admin, prefix).createPool(pool);
  return pool;
}

/** `nodes` NodeIpams on `clients`, opened a few at a time (each reads and watches the pools). */
function openNodes(clients: Etcd3[], prefix: string, nodes: number, name = (i: number) => `node-${i}`) {
  const stores = clients.map((c) => createEtcdStore(c, prefix));
  const ids = Array.from({ length: nodes }, (_, i) => i);
  return inParallel(ids, 32, (i) => createNodeIpam({ store: stores[i % stores.length], node: name(i) }));
}

function podRequest(node: number, pod: number) {
  const id = `c-${node}-${pod}`;
  return {
    network: "bench",
    containerId: id,
    ifName: "eth0",
    podNamespace: "default",
    podName: id,
    podUid: "",
    netns: "",
  };
}

async function storm(
  etcd: TestEtcd,
  admin: Etcd3,
  clients: Etcd3[],
  nodes: number,
  subnet = CLUSTER_POOL,
): Promise<StormOutcome> {
  const etcdPid = etcd.process.pid;
  const prefix = etcd.newPrefix();
  await createPool(admin, prefix, subnet);
  const ipams = await openNodes(clients, prefix, nodes);
  try {
    const perNodeMs: number[] = [];
    const started = performance.now();
    let unavailable = 0;
    const cpu0 = await cpuSeconds(etcdPid);
    const allocations = await Promise.all(ipams.map(async (ipam, i) => {
      const t0 = performance.now();
      // An overloaded etcd answers "request timed out": CNI error 11, and kubelet tries the ADD again.
      for (let attempt = 1;; attempt++) {
        try {
          const allocation = await ipam.allocate(podRequest(i, 0));
          perNodeMs.push(performance.now() - t0);
          return allocation;
        } catch (err) {
          if (!isIpamError(err, "unavailable") || attempt >= MAX_ADD_ATTEMPTS) throw err;
          unavailable++;
          await new Promise((r) => setTimeout(r, (0.5 + Math.random()) * 200 * 2 ** attempt));
        }
      }
    }));
    const wallMs = performance.now() - started;
    const etcdCpu = (await cpuSeconds(etcdPid)) - cpu0;
    await Promise.all(ipams.map((ipam) => ipam.settled()));
    const retries = ipams.reduce((sum, ipam) => sum + ipam.claimRetries(), 0);
    // One owner per block, in memory and in etcd alike, and no address handed out twice.
    const believed = ipams.flatMap((ipam, i) =>
      ipam.ownedBlocks().map((b) => `${formatCidr(b.block)} node-${i}`)
    );
    const stored = await admin.getAll().prefix(keysFor(prefix).blocks()).strings();
    const inEtcd = new Set(
      Object.entries(stored).map(([key, value]) =>
        `${key.slice(keysFor(prefix).blocksOfPool("default").length).replace("_", "/")} ${
          JSON.parse(value).node
        }`
      ),
    );
    const blocks = new Set(believed.map((b) => b.split(" ")[0]));
    const addresses = new Set(allocations.map((a) => formatIp(a.addresses[0].address)));
    // A duplicate: a block two nodes believe they own, or one etcd gives to another node (or nobody), or
    // an address handed out twice.
    const duplicates = (believed.length - blocks.size) + (allocations.length - addresses.size) +
      believed.filter((b) => !inEtcd.has(b)).length;
    // A claim whose answer was lost (etcd timed out after committing): the block is the node's in etcd
    // and in its index, unknown to it until its next start. Not a duplicate: nobody else can claim it.
    const orphans = inEtcd.size - (believed.length - believed.filter((b) => !inEtcd.has(b)).length);
    return { nodes, wallMs, perNodeMs, retries, duplicates, orphans, unavailable, etcdCpu };
  } finally {
    await Promise.all(ipams.map((ipam) => ipam.close()));
    await admin.delete().prefix(prefix);
    // The next storm starts on a compacted etcd, as a cluster's etcd compacts its history by itself.
    await compactAndDefrag(admin);
  }
}

async function claimStorms(ctx: BenchContext): Promise<void> {
  const sizes = ctx.quick ? [200] : [1000, 5000];
  const singles = iterations(ctx, 9, 3);
  await using etcd = await startEtcd();
  const admin = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const clients = await openClients(etcd, CLIENTS);
  try {
    await storm(etcd, admin, clients, 1); // warm-up
    const alone: number[] = [];
    for (let i = 0; i < singles; i++) alone.push((await storm(etcd, admin, clients, 1)).wallMs);
    ctx.info(`first claims: /27 blocks, ${CLIENTS} etcd clients shared by the nodes of this one process`);
    const figure = async (n: number, subnet: string, label: string) => {
      const o = await storm(etcd, admin, clients, n, subnet);
      const per = summarize(o.perNodeMs);
      ctx.report({
        name: `${n} nodes claim their first block at once, ${label}: wall time`,
        value: o.wallMs / 1000,
        unit: "s",
        baseline: { name: "1 node alone, median", value: median(alone) / 1000 },
        target: n === 5000
          ? { text: "≤ 5 s, 0 duplicates", pass: o.wallMs <= 5000 && o.duplicates === 0 }
          : { text: "0 duplicates", pass: o.duplicates === 0 },
        note: `lost races per claim ${(o.retries / n).toFixed(3)} (${o.retries} in all); ADDs answered ` +
          `unavailable and retried ${o.unavailable}; blocks claimed in doubt (owner unaware until restart) ` +
          `${o.orphans}; duplicates ` +
          `${o.duplicates}; per-node p50 ${per.median.toFixed(0)} ms, p99 ${
            per.p99.toFixed(0)
          } ms; etcd CPU ` +
          `${o.etcdCpu.toFixed(1)} s of ${(o.wallMs / 1000).toFixed(1)} s; load ${await loadAverage()}`,
      });
      return o;
    };
    for (const n of sizes) await figure(n, CLUSTER_POOL, `pool ${CLUSTER_POOL} (listable)`);
    const biggest = sizes[sizes.length - 1];
    await figure(biggest, PROBED_POOL, `pool ${PROBED_POOL} (probed)`);
    // What the clients add: the same storm through one client.
    const one = await storm(etcd, admin, clients.slice(0, 1), sizes[0]);
    ctx.info(
      `${sizes[0]} nodes through 1 etcd client instead of ${CLIENTS}: ${(one.wallMs / 1000).toFixed(2)} s, ` +
        `${one.duplicates} duplicates`,
    );
  } finally {
    for (const c of clients) c.close();
    admin.close();
  }
}

// --- a pool filled to 95 % ----------------------------------------------------------------------------

async function fillPool(ctx: BenchContext): Promise<void> {
  const nodes = iterations(ctx, 200, 20);
  // 2,048 blocks (256 under --quick): small enough that free blocks become rare.
  const subnet = ctx.quick ? "10.200.0.0/19" : "10.200.0.0/16";
  await using etcd = await startEtcd();
  const admin = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const clients = await openClients(etcd, CLIENTS);
  try {
    const prefix = etcd.newPrefix();
    const pool = await createPool(admin, prefix, subnet);
    const total = ctx.quick ? 256 : 2048;
    const target = Math.floor(total * 0.95);
    const stores = clients.map((c) => createEtcdStore(c, prefix));
    // Each claim: the fill when it started and the races it lost.
    const claims: { fill: number; retries: number; block: string }[] = [];
    let started = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: nodes }, async (_, i) => {
      let retries = 0;
      const owned: Cidr[] = [];
      const claimCtx = {
        store: stores[i % stores.length],
        node: `node-${i}`,
        ownedBlocks: () => owned,
        random: Math.random,
        now: () => new Date(),
        log: () => {},
        onRetry: () => retries++,
      };
      while (started < target) {
        const fill = started++ / total;
        retries = 0;
        const claimed = await claimBlock(claimCtx, pool, 4);
        owned.push(claimed.cidr);
        claims.push({ fill, retries, block: formatCidr(claimed.cidr) });
      }
    }));
    const wallMs = performance.now() - t0;
    const stored = Object.keys(await admin.getAll().prefix(keysFor(prefix).blocks()).keys()).length;
    const duplicates = claims.length - new Set(claims.map((c) => c.block)).size +
      Math.abs(stored - claims.length);
    const racesIn = (lo: number, hi: number) => {
      const some = claims.filter((c) => c.fill >= lo && c.fill < hi);
      return some.reduce((s, c) => s + c.retries, 0) / Math.max(1, some.length);
    };
    const [early, middle, late] = [racesIn(0, 0.5), racesIn(0.5, 0.8), racesIn(0.8, 1)];
    ctx.report({
      name:
        `${nodes} nodes fill a pool of ${total} blocks to 95 % (${claims.length} claims): lost races per claim at 80-95 %`,
      value: round(late, 3),
      unit: "count",
      baseline: { name: "at 0-50 % full", value: round(early, 3) },
      target: { text: "0 duplicates", pass: duplicates === 0 },
      note: `50-80 %: ${middle.toFixed(2)}; wall ${(wallMs / 1000).toFixed(1)} s ` +
        `(${(claims.length / (wallMs / 1000)).toFixed(0)} claims/s); max races for one claim ` +
        `${Math.max(...claims.map((c) => c.retries))}; duplicates ${duplicates}`,
    });
    await admin.delete().prefix(prefix);
  } finally {
    for (const c of clients) c.close();
    admin.close();
  }
}

// --- 100,000 addresses --------------------------------------------------------------------------------

/** Writes `nodes` × PODS_PER_NODE addresses through NodeIpam.allocate, IN_FLIGHT at a time. */
async function populate(clients: Etcd3[], prefix: string, nodes: number, name?: (i: number) => string) {
  const ipams = await openNodes(clients, prefix, nodes, name);
  try {
    // Pod-major order: every node's n-th pod before any node's next, as pods land across a cluster.
    const work = Array.from({ length: nodes * PODS_PER_NODE }, (_, k) => k);
    const t0 = performance.now();
    const allocated = await inParallel(work, IN_FLIGHT, async (k) => {
      const node = k % nodes;
      return (await ipams[node].allocate(podRequest(node, Math.floor(k / nodes)))).addresses.length;
    });
    await Promise.all(ipams.map((ipam) => ipam.settled()));
    return { count: allocated.length, ms: performance.now() - t0 };
  } finally {
    await Promise.all(ipams.map((ipam) => ipam.close()));
  }
}

async function bigCluster(ctx: BenchContext): Promise<void> {
  const nodes = iterations(ctx, Math.ceil(100_000 / PODS_PER_NODE), 20);
  const rounds = iterations(ctx, 5, 2);
  await using etcd = await startEtcd();
  const admin = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const clients = await openClients(etcd, CLIENTS);
  try {
    const empty = await dbSize(admin, etcd);
    const big = etcd.newPrefix();
    const alone = etcd.newPrefix();
    const bare = etcd.newPrefix();
    // The probed pool keeps the 4,500 claims from each listing every claimed block (see claimStorms).
    for (const p of [big, alone, bare]) await createPool(admin, p, PROBED_POOL);
    const written = await populate(clients, big, nodes);
    ctx.info(
      `${written.count} addresses by ${nodes} nodes through NodeIpam.allocate (${IN_FLIGHT} in flight): ` +
        `${(written.ms / 1000).toFixed(1)} s, ${(written.count / (written.ms / 1000)).toFixed(0)}/s`,
    );
    // The probe node alone: the same 110 pods in a prefix holding nothing else.
    await populate(clients, alone, 1, () => "node-0");

    const raw = await dbSize(admin, etcd);
    const keysBig = Number(await admin.getAll().prefix(big).count());
    await compactAndDefrag(admin);
    const compacted = await dbSize(admin, etcd);
    const perPod = (compacted.inUse - empty.inUse) / written.count;
    ctx.report({
      name: `etcd database after ${written.count} addresses, compacted and defragmented, MiB`,
      value: round(compacted.inUse / 2 ** 20, 2),
      unit: "count",
      baseline: { name: "empty etcd", value: round(empty.inUse / 2 ** 20, 2) },
      note: `before compaction ${(raw.size / 2 ** 20).toFixed(1)} MiB (data dir ` +
        `${(raw.dataDir / 2 ** 20).toFixed(1)} MiB with the WAL); ${
          (keysBig / written.count).toFixed(3)
        } keys ` +
        `per pod (${keysBig} keys); ${perPod.toFixed(0)} bytes per pod → 5,000 nodes × 110 pods ≈ ` +
        `${(perPod * 550_000 / 2 ** 20).toFixed(0)} MiB compacted (etcd's default quota: 2 GiB)`,
    });

    // `coil status` as an admin runs it, on 100,000 addresses and on an empty prefix, interleaved.
    const statusMs = { big: [] as number[], bare: [] as number[], snapshot: [] as number[] };
    for (let r = 0; r < rounds; r++) {
      statusMs.big.push(await timeStatus(etcd, big));
      statusMs.bare.push(await timeStatus(etcd, bare));
      // Where the time goes: the snapshot read alone, in this process (no start, no connect).
      const t0 = performance.now();
      await readSnapshot(admin, big);
      statusMs.snapshot.push(performance.now() - t0);
    }
    ctx.report({
      name: `coil status with ${written.count} addresses (${nodes} nodes), median`,
      value: median(statusMs.big) / 1000,
      unit: "s",
      baseline: { name: "coil status, empty pool", value: median(statusMs.bare) / 1000 },
      target: { text: "≤ 2 s", pass: median(statusMs.big) <= 2000 },
      note: `${rounds} runs each, interleaved: ${statusMs.big.map((v) => v.toFixed(0)).join(", ")} ms; of ` +
        `which readSnapshot() (a count-only range per block, 120 per txn) ` +
        `${median(statusMs.snapshot).toFixed(0)} ms`,
    });

    // A coild's start-up (createNodeIpam: pools, then load) for node-0 and its 110 addresses.
    const indexKeys = nodeIndexKeys(big);
    const blockKeys = Number(await admin.getAll().prefix(keysFor(big).blocks()).count());
    const startMs = { indexed: [] as number[], scan: [] as number[], alone: [] as number[] };
    const timeStart = async (prefix: string, expected: number) => {
      const t0 = performance.now();
      const ipam = await createNodeIpam({ store: createEtcdStore(clients[0], prefix), node: "node-0" });
      const ms = performance.now() - t0;
      const found = ipam.allocations().length;
      await ipam.close();
      if (found !== expected) throw new Error(`node-0 loaded ${found} allocations, expected ${expected}`);
      return ms;
    };
    for (let r = 0; r < rounds + 2; r++) {
      startMs.alone.push(await timeStart(alone, PODS_PER_NODE));
      startMs.indexed.push(await timeStart(big, PODS_PER_NODE));
      // As after an upgrade: no index yet, so one scan of every block key (what every start did before).
      await admin.delete().key(indexKeys.complete("node-0"));
      startMs.scan.push(await timeStart(big, PODS_PER_NODE));
    }
    ctx.report({
      name: `coild start-up (createNodeIpam + load) of a node with 110 pods among ${written.count}, median`,
      value: median(startMs.indexed),
      unit: "ms",
      baseline: { name: "the same node alone", value: median(startMs.alone) },
      target: {
        text: "reads only its own blocks (≤ 1.5× alone)",
        pass: median(startMs.indexed) <= 1.5 * median(startMs.alone),
      },
      note: `without the index (one scan of all ${blockKeys} block keys, as every start did before): ` +
        `${median(startMs.scan).toFixed(1)} ms; load ${await loadAverage()}`,
    });
    await Promise.all([big, alone, bare].map((p) => admin.delete().prefix(p)));
  } finally {
    for (const c of clients) c.close();
    admin.close();
  }
}

async function timeStatus(etcd: TestEtcd, prefix: string): Promise<number> {
  const t0 = performance.now();
  const out = await runCoilCli(["status", "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix]);
  const ms = performance.now() - t0;
  if (out.code !== 0) throw new Error(`coil status failed (exit ${out.code}): ${out.stderr}`);
  return ms;
}

// --- etcd and machine figures -------------------------------------------------------------------------

async function dbSize(admin: Etcd3, etcd: TestEtcd) {
  const status = await admin.maintenance.status();
  return {
    size: Number(status.dbSize),
    inUse: Number(status.dbSizeInUse),
    dataDir: await duBytes(etcd.dataDir),
  };
}

async function compactAndDefrag(admin: Etcd3): Promise<void> {
  const revision = (await admin.maintenance.status()).header.revision;
  await admin.kv.compact({ revision, physical: true });
  await admin.maintenance.defragment();
}

async function duBytes(path: string): Promise<number> {
  const out = await new Deno.Command("du", { args: ["-sb", path], stdout: "piped" }).output();
  return Number(new TextDecoder().decode(out.stdout).split("\t")[0]);
}

/** User + system CPU seconds of a process so far (/proc/PID/stat, in clock ticks of 1/100 s). */
async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function round(value: number, digits: number): number {
  return Number(value.toFixed(digits));
}

async function loadAverage(): Promise<string> {
  return (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
}
