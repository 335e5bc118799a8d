// Many nodes claiming their first block at once: N NodeIpam instances (each with its own etcd client,
// as N nodes would have) on one real etcd each allocate one address concurrently. Reports the wall time,
// per-node latency and claim txns re-run after a lost race, checks that no block ended up with two
// owners, and puts it next to one node claiming alone.

import type { Etcd3 } from "etcd3";
import { formatCidr, formatIp } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { keysFor } from "../../ipam/keys.ts";
import { createNodeIpam, type NodeIpam } from "../../ipam/node_ipam.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { type BenchContext, type Benchmark, iterations } from "./_bench.ts";
import { median, rotate, summarize } from "./_stats.ts";

export const benchmark: Benchmark = {
  name: "block-claim",
  description: "N simulated nodes claiming their first block at once on one etcd (N = 1 … 200)",
  run,
};

const POOL = "10.128.0.0/16";
const BLOCK_SIZE_BITS = 5;

/** One run with `nodes` nodes. */
interface Outcome {
  nodes: number;
  wallMs: number;
  perNodeMs: number[];
  retries: number;
  /** Blocks held by two nodes (in memory or etcd disagreeing), plus addresses handed out twice. */
  duplicates: number;
  /** Blocks whose etcd owner is not the node that believes it owns them, or owned only in memory. */
  mismatches: number;
  blocks: number;
}

async function claimOnce(etcd: TestEtcd, admin: Etcd3, nodes: number): Promise<Outcome> {
  const prefix = etcd.newPrefix();
  await new PoolStore(admin, prefix).createPool(
    parsePool("default", { subnets: [POOL], blockSizeBits: BLOCK_SIZE_BITS }),
  );
  const clients: Etcd3[] = [];
  const ipams: NodeIpam[] = [];
  try {
    for (let i = 0; i < nodes; i++) {
      clients.push(await connectEtcd({ endpoints: [etcd.endpoint], prefix, callTimeoutMs: 30_000 }));
    }
    ipams.push(
      ...await Promise.all(
        clients.map((client, i) =>
          createNodeIpam({ store: createEtcdStore(client, prefix), node: `node-${i}` })
        ),
      ),
    );
    // Every client connects before the clock starts: the figure is the claim, not the gRPC handshake.
    await Promise.all(clients.map((c) => c.get("warm-up").exists()));
    const perNodeMs: number[] = [];
    const started = performance.now();
    const allocations = await Promise.all(ipams.map(async (ipam, i) => {
      const t0 = performance.now();
      const allocation = await ipam.allocate({
        network: "bench",
        containerId: `c-${i}`,
        ifName: "eth0",
        podNamespace: "default",
        podName: `p-${i}`,
        podUid: "",
        netns: "",
      });
      perNodeMs.push(performance.now() - t0);
      return allocation;
    }));
    const wallMs = performance.now() - started;
    await Promise.all(ipams.map((ipam) => ipam.settled()));
    const retries = ipams.reduce((sum, ipam) => sum + ipam.claimRetries(), 0);

    // Ownership as the nodes believe it and as etcd records it must agree, with one owner per block.
    const believed = new Map<string, string[]>();
    ipams.forEach((ipam, i) => {
      for (const { block } of ipam.ownedBlocks()) {
        const id = formatCidr(block);
        believed.set(id, [...(believed.get(id) ?? []), `node-${i}`]);
      }
    });
    const keys = keysFor(prefix);
    const stored = await admin.getAll().prefix(keys.blocks()).strings();
    let duplicates = [...believed.values()].filter((owners) => owners.length > 1).length;
    let mismatches = 0;
    for (const [key, value] of Object.entries(stored)) {
      const id = key.slice(keys.blocksOfPool("default").length).replace("_", "/");
      const owner = JSON.parse(value).node;
      if ((believed.get(id) ?? [])[0] !== owner) mismatches++;
    }
    mismatches += [...believed.keys()].filter((id) =>
      !(keys.blocksOfPool("default") + id.replace("/", "_") in stored)
    ).length;
    const addresses = allocations.map((a) => formatIp(a.addresses[0].address));
    duplicates += addresses.length - new Set(addresses).size;
    return { nodes, wallMs, perNodeMs, retries, duplicates, mismatches, blocks: Object.keys(stored).length };
  } finally {
    await Promise.all(ipams.map((ipam) => ipam.close()));
    for (const client of clients) client.close();
  }
}

async function run(ctx: BenchContext): Promise<void> {
  const sizes = ctx.quick ? [1, 20] : [1, 10, 50, 200];
  const rounds = iterations(ctx, 3, 1);
  const singles = iterations(ctx, 20, 3);
  await using etcd = await startEtcd();
  const admin = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  try {
    await claimOnce(etcd, admin, 1); // warm-up: etcd's first txns and the module's first run
    const outcomes = new Map<number, Outcome[]>(sizes.map((n) => [n, []]));
    for (let r = 0; r < rounds; r++) {
      for (const n of rotate(sizes, r)) outcomes.get(n)!.push(await claimOnce(etcd, admin, n));
    }
    // One node alone: the per-claim latency, many times for a stable median.
    for (let i = outcomes.get(1)!.length; i < singles; i++) {
      outcomes.get(1)!.push(await claimOnce(etcd, admin, 1));
    }

    ctx.info(`${rounds} rounds per size (1 node: ${singles}), sizes interleaved; pool ${POOL} in /27 blocks`);
    ctx.info(
      "the nodes share this process's one JS thread: per-node latency includes the others' client work",
    );
    ctx.info("nodes | wall, median | per-node p50 / p99 | retries per round | blocks | duplicates");
    for (const [n, list] of outcomes) {
      const per = summarize(list.flatMap((o) => o.perNodeMs));
      ctx.info(
        `${String(n).padStart(5)} | ${median(list.map((o) => o.wallMs)).toFixed(1).padStart(7)} ms | ` +
          `${per.median.toFixed(1)} / ${per.p99.toFixed(1)} ms | ${
            list.map((o) => o.retries).join(", ")
          } | ` +
          `${list.map((o) => o.blocks).join(", ")} | ${
            list.reduce((s, o) => s + o.duplicates + o.mismatches, 0)
          }`,
      );
    }
    const biggest = sizes[sizes.length - 1];
    const big = outcomes.get(biggest)!;
    const single = median(outcomes.get(1)!.map((o) => o.wallMs));
    const all = [...outcomes.values()].flat();
    const duplicates = all.reduce((s, o) => s + o.duplicates, 0);
    const mismatches = all.reduce((s, o) => s + o.mismatches, 0);
    ctx.report({
      name: `${biggest} nodes claim their first block at once: wall time, median`,
      value: median(big.map((o) => o.wallMs)) / 1000,
      unit: "s",
      baseline: { name: "1 node alone", value: single / 1000 },
      target: { text: "zero duplicate blocks", pass: duplicates === 0 && mismatches === 0 },
      note: `over all ${all.length} runs: ${duplicates} duplicates, ${mismatches} etcd/memory mismatches; ` +
        `claim retries (lost races) per ${biggest}-node round: ${big.map((o) => o.retries).join(", ")}`,
    });
    ctx.report({
      name: `${biggest} nodes: per-node allocate latency, p50`,
      value: summarize(big.flatMap((o) => o.perNodeMs)).median,
      unit: "ms",
      baseline: { name: "1 node alone", value: single },
      note: `p99 ${summarize(big.flatMap((o) => o.perNodeMs)).p99.toFixed(1)} ms`,
    });
  } finally {
    admin.close();
  }
}
