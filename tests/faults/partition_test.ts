// Fault campaign: one node's coild cut off from etcd (iptables in its netns; etcd reached over a veth)
// for a few seconds up to a minute, while pods churn on it and on two nodes that keep etcd; then a
// one-way cut (etcd's replies dropped, requests delivered). On the cut-off node ADD answers 11 within
// the etcd call deadline, DEL completes or answers 11 and succeeds when retried, main-mode pods keep
// answering pings; after the heal it serves again within 5 s with its node key, blocks and table 119
// as before, and no block of it ever passes to another node. Every call and etcd sample goes to the
// history checker (_history.ts). Sizes: COIL_FAULTS_PARTITION_CUTS (seconds, comma-separated; the long
// version adds 60), COIL_FAULTS_PARTITION_ONEWAY_CUTS, COIL_FAULTS_PARTITION_ONEWAY_MS; replay:
// COIL_FAULTS_SEED.

import assert from "node:assert/strict";
import { DEFAULT_ETCD_TIMEOUT_MS } from "../../ipam/admin/etcd_flags.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { assertHistory, type Call, checkHistory, History, type HistoryReport } from "./_history.ts";
import { readIpamState, surplusEmptyBlocks } from "./_ipam_state.ts";
import { CoildNode } from "./_node.ts";
import { campaignSeed, envCount } from "./_params.ts";
import { createEtcdLink, type EtcdLink } from "./_partition.ts";
import { Cluster, type Probes } from "./_partition_cluster.ts";
import { seededRandom } from "./_random.ts";
import { reachable } from "./_runtime.ts";

const CUTS_S = envSeconds("COIL_FAULTS_PARTITION_CUTS", [1, 10]);
const ONEWAY_MS = envCount("COIL_FAULTS_PARTITION_ONEWAY_MS", 10_000);
const ONEWAY_CUTS = envCount("COIL_FAULTS_PARTITION_ONEWAY_CUTS", 2);
/** coild's etcd call deadline (--etcd-timeout's default): an ADD in a cut must answer 11 by then. */
const ETCD_TIMEOUT_MS = DEFAULT_ETCD_TIMEOUT_MS;
/** What an answer may take beyond that deadline: the plugin's exec and coild's own work. */
const ANSWER_SLACK_MS = 2500;
/**
 * The bound every answer in a cut is held to: two deadlines, as a request that finds a spare-block
 * claim in flight waits for it and, when it fails, claims for itself (BlockKeeper.claim()).
 */
const ANSWER_BOUND_MS = 2 * ETCD_TIMEOUT_MS + ANSWER_SLACK_MS;
/** The plugin's own deadline, far above the bound: an answer must come from coild, not from it. */
const CNI_TIMEOUT_MS = 30_000;
/** After the heal the cut-off node must serve an ADD within this. */
const SERVE_WITHIN_MS = 5000;
/** How often a fresh pod is added on the cut-off node during a cut. */
const PROBE_EVERY_MS = 500;
/** Churn on every node before and after each cut. */
const CHURN_MS = 1500;
/** Concurrent CNI calls per node; more on the cut-off node, whose calls each wait for the deadline. */
const WORKERS = [6, 2, 2];
const COILD_ARGS = ["--sweep-interval", "1", "--sweep-grace", "5"];

interface Figures {
  trials: string[];
  faults: number;
  addsInCut: number;
  adds11: number;
  dels11: number;
  delsOkInCut: number;
  slowestMs: number;
  serveMs: number[];
  leaseMs: number[];
  pings: number;
  /** Calls in a cut answered later than one etcd deadline (plus ANSWER_SLACK_MS). */
  beyondOneDeadline: number;
  /** ADDs answered 11 whose address write etcd had committed all the same (seen in a sample). */
  committedUnknown: number;
}

Deno.test("a node cut off from etcd answers 11, keeps its pods reachable, and serves again after the heal", async (t) => {
  const random = seededRandom(campaignSeed("partition"));
  console.log(
    `partition: seed ${random.seed} (replay with COIL_FAULTS_SEED=${random.seed}), cuts of ${
      CUTS_S.join(", ")
    } s and ${ONEWAY_CUTS} one-way cuts of ${ONEWAY_MS} ms`,
  );
  const started = Date.now();
  await using link = await createEtcdLink();
  await using etcd = await startEtcd({ extraClientHosts: [link.hostAddress] });
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix });
  try {
    // 32 blocks of /27 for three nodes: the others claim and release around the cut one's, and the cut
    // one has room in its blocks, so that its ADDs in a one-way cut write addresses rather than claim.
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.69.0.0/22"], blockSizeBits: 5 }),
    );
    await using cut = await CoildNode.create({
      etcd,
      prefix,
      args: COILD_ARGS,
      netns: link.netns,
      etcdEndpoint: etcd.extraEndpoints[0],
    });
    await using b = await CoildNode.create({ etcd, prefix, args: COILD_ARGS });
    await using c = await CoildNode.create({ etcd, prefix, args: COILD_ARGS });
    const history = new History();
    await using cluster = await Cluster.create({
      client,
      prefix,
      history,
      random,
      nodes: [cut, b, c],
      workers: WORKERS,
      cniTimeoutMs: CNI_TIMEOUT_MS,
    });
    await using _watch = cluster.watch();
    const figures: Figures = {
      trials: [],
      faults: 0,
      addsInCut: 0,
      adds11: 0,
      dels11: 0,
      delsOkInCut: 0,
      slowestMs: 0,
      serveMs: [],
      leaseMs: [],
      pings: 0,
      committedUnknown: 0,
      beyondOneDeadline: 0,
    };

    for (const seconds of CUTS_S) {
      const ok = await t.step(`cut of ${seconds} s both ways`, async () => {
        await partitionTrial(cluster, link, "both", seconds * 1000, figures);
      });
      if (!ok) break;
    }
    for (let i = 1; i <= ONEWAY_CUTS; i++) {
      const ok = await t.step(
        `one-way cut ${i} of ${ONEWAY_MS} ms: writes committed unknown to coild are settled`,
        async () => {
          await partitionTrial(cluster, link, "replies", ONEWAY_MS, figures);
        },
      );
      if (!ok) break;
    }

    await t.step("after DEL of every pod, the whole history holds no violation", async () => {
      await cluster.deleteAll();
      const state = await readIpamState(client, prefix);
      history.final({
        keys: state.addresses,
        veths: [...await cut.taggedVeths(), ...await b.taggedVeths(), ...await c.taggedVeths()],
      });
      console.log(figureLines(figures, checkHistory(history), cluster, started).join("\n"));
      assertHistory(history, "partition");
      assert.deepEqual(cluster.stats().problems, [], "churn failures other than 11");
      assert.deepEqual(cluster.blockThefts, [], "blocks of the cut-off node went to another node");
      assert.deepEqual(cluster.doubled, [], "an attachment held two addresses in etcd");
      assert.deepEqual(surplusEmptyBlocks(state, cut.name), [], "surplus empty blocks of the cut-off node");
    });
  } finally {
    client.close();
  }
});

/**
 * One cut of the first node for `ms`: churn everywhere, pings of its main-mode pods meanwhile, then
 * the heal, the time until it serves an ADD, and its node key, blocks and table 119 against before.
 */
async function partitionTrial(
  cluster: Cluster,
  link: EtcdLink,
  mode: "both" | "replies",
  ms: number,
  figures: Figures,
): Promise<void> {
  const node = cluster.nodes[0];
  const churn = cluster.churn();
  const healed = Promise.withResolvers<void>();
  let probes: Probes | undefined;
  try {
    await sleep(CHURN_MS);
    const keyBefore = await cluster.nodeRecord(node.name);
    assert.ok(keyBefore, `Node key of ${node.name} missing before the cut\n${node.logTail()}`);
    const cutAt = History.now();
    await link.cutOff(mode);
    figures.faults++;
    // A request sent just before the rules lands within milliseconds; after that etcd is frozen for it.
    await sleep(200);
    const before = await cluster.snapshot(node);
    // In a one-way cut the node's own writes (a block release among them) may commit.
    if (mode === "both") cluster.guard(node.name, before.blocks);
    // ADDs of fresh pods on top of the churn, whose calls on this node mostly wait for the deadline.
    probes = cluster.probeEvery(node, PROBE_EVERY_MS, healed.promise);
    const pinged = await pingThrough(cluster, node, cutAt + ms);
    figures.pings += pinged;
    probes.stop();
    churn.stop();
    const atHeal = await cluster.tableOf(node);
    await link.heal();
    healed.resolve();
    const healAt = History.now();
    const serveMs = await cluster.probeUntilServed(node, healAt, 3 * ETCD_TIMEOUT_MS);
    figures.serveMs.push(serveMs);
    cluster.guard(node.name, []);
    await churn.done();
    await probes.done();
    if (mode === "both") {
      assert.deepEqual(atHeal, before.table, `table 119 of ${node.name} changed during the cut`);
    }
    const leaseMs = await cluster.waitNodeRecordHeld(node, keyBefore.pid, healAt);
    figures.leaseMs.push(leaseMs);
    const lapsed = (await cluster.nodeRecord(node.name))?.lease !== keyBefore.lease;
    if (mode === "both") await cluster.assertBlocksAsBefore(node, before, healAt);
    await cluster.assertTableMatchesBlocks(node);

    // Calls that started in the cut; those that ended after the heal may have succeeded.
    const calls = cluster.history.calls.filter((c) =>
      c.node === node.name && c.start >= cutAt + 50 && c.start < healAt &&
      (c.verb === "ADD" || c.verb === "DEL")
    );
    const adds = calls.filter((c) => c.verb === "ADD");
    const dels = calls.filter((c) => c.verb === "DEL");
    figures.addsInCut += adds.length;
    const adds11 = adds.filter(is11);
    figures.adds11 += adds11.length;
    figures.dels11 += dels.filter(is11).length;
    figures.delsOkInCut += dels.filter((c) => c.result.status === "ok").length;
    const unknown = committedUnknown(cluster.history, adds.filter((c) => c.result.status !== "ok"));
    figures.committedUnknown += unknown;
    const slowest = Math.max(0, ...calls.map((c) => c.end - c.start));
    figures.slowestMs = Math.max(figures.slowestMs, slowest);
    figures.trials.push(
      `${mode === "both" ? "cut" : "one-way cut"} ${ms / 1000} s: ${adds.length} ADDs (${adds11.length} ` +
        `answered 11), ${dels.length} DELs (${dels.filter(is11).length} answered 11), slowest ` +
        `${(slowest / 1000).toFixed(2)} s, served ${
          (serveMs / 1000).toFixed(2)
        } s after the heal, node key ` +
        `${lapsed ? "lapsed and re-held" : "kept"} (${(leaseMs / 1000).toFixed(2)} s), ${unknown} ADDs ` +
        "answered 11 whose write committed",
    );
    console.log(`partition: ${figures.trials.at(-1)}`);
    // No ADD gets an answer from etcd in a cut: each answers 11, or succeeds once the cut has healed.
    const wrong = adds.filter((c) => !is11(c) && (c.end < healAt || c.result.status !== "ok"));
    assert.deepEqual(
      wrong.map(describe),
      [],
      "ADDs in the cut that neither answered 11 nor waited for the heal",
    );
    const beyond = calls.filter((c) => c.end - c.start > ETCD_TIMEOUT_MS + ANSWER_SLACK_MS);
    figures.beyondOneDeadline += beyond.length;
    const late = calls.filter((c) => c.end - c.start > ANSWER_BOUND_MS);
    assert.deepEqual(
      late.map(describe),
      [],
      `calls in the cut answered after the call deadline; coild's own durations:\n${
        late.map((c) => coildDurations(node.log(), c.attachment.containerId).join(", ")).join("\n")
      }`,
    );
    assert.ok(serveMs <= SERVE_WITHIN_MS, `${node.name} served again only ${serveMs} ms after the heal`);
    assert.ok(
      leaseMs <= SERVE_WITHIN_MS,
      `${node.name} held its node key again only ${leaseMs} ms after the heal`,
    );
  } finally {
    probes?.stop();
    churn.stop();
    await link.heal();
    healed.resolve();
    await churn.done();
    await probes?.done();
  }
  await sleep(CHURN_MS);
  await cluster.drain();
}

/** The campaign's figures, one per line, as docs/reliability.md reports them. */
function figureLines(f: Figures, report: HistoryReport, cluster: Cluster, started: number): string[] {
  const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const rule = (r: "a" | "b" | "c") => report.violations.filter((v) => v.rule === r).length;
  const s = cluster.stats();
  return [
    `partition: ${f.trials.length} trials, ${f.faults} faults injected:`,
    ...f.trials.map((t) => `  ${t}`),
    `partition: CNI calls ${report.calls} (${report.addsOk} ADD ok, ${report.delsOk} DEL ok); churn ${s.calls} ` +
    `(${s.retries} answered 11, ${s.problems.length} other failures)`,
    `partition: on the cut-off node, calls started in a cut: ${f.addsInCut} ADDs (${f.adds11} answered 11, ` +
    `the others succeeded after the heal), DELs ${f.delsOkInCut} ok and ${f.dels11} answered 11 (each retried ` +
    `until it succeeded); slowest answer ${seconds(f.slowestMs)} (bound ${seconds(ANSWER_BOUND_MS)}); ` +
    `${f.beyondOneDeadline} answers later than one etcd deadline (+${seconds(ANSWER_SLACK_MS)})`,
    `partition: served again after the heal in ${f.serveMs.map(seconds).join(", ")}; node key held again ` +
    `after ${
      f.leaseMs.map(seconds).join(", ")
    }; ${f.pings} pings of main-mode pods during cuts, all answered`,
    `partition: ADDs answered 11 whose write etcd committed (settled) ${f.committedUnknown}; attachments ` +
    `with two addresses ${cluster.doubled.length}; blocks passed to another node ${cluster.blockThefts.length}`,
    `partition: duplicates ${rule("a")}, lost ${rule("b")}, leaked ${rule("c")}; ` +
    `${((Date.now() - started) / 1000).toFixed(1)} s`,
  ];
}

/**
 * How many of `failed` (ADDs that did not succeed) wrote their address all the same: an etcd sample
 * taken after the ADD started, and before a DEL of the attachment succeeded, holds a key for it.
 */
function committedUnknown(history: History, failed: Call[]): number {
  const same = (a: Call["attachment"], b: Call["attachment"]) =>
    a.network === b.network && a.containerId === b.containerId && a.ifName === b.ifName;
  return failed.filter((add) => {
    const del = history.calls.find((c) =>
      c.verb === "DEL" && c.result.status === "ok" && c.start >= add.end && same(c.attachment, add.attachment)
    );
    return history.samples.some((s) =>
      s.start >= add.start && s.end <= (del?.start ?? Infinity) &&
      s.keys.some((k) => same(k, add.attachment))
    );
  }).length;
}

function is11(c: Call): boolean {
  return c.result.status !== "ok" && c.result.code === 11;
}

function describe(c: Call): string {
  const r = c.result;
  return `${c.verb} ${c.attachment.containerId} ${(c.end - c.start).toFixed(0)} ms: ${
    r.status === "ok" ? "ok" : `${r.code} ${r.msg}`
  }`;
}

/** Pings the node's main-mode pods until `until` (History.now()); @returns how many pings were answered. */
async function pingThrough(cluster: Cluster, node: CoildNode, until: number): Promise<number> {
  let answered = 0;
  do {
    for (const pod of cluster.mainPodsOf(node)) {
      assert.ok(
        await reachable(node.netns, pod.ip, 1),
        `${pod.id} at ${pod.ip} does not answer a ping in the cut`,
      );
      answered++;
    }
    await sleep(Math.min(500, Math.max(0, until - History.now())));
  } while (History.now() < until);
  return answered;
}

/** How long coild took (its log's durationMs) for each request of `containerId`, as `verb ms result`. */
function coildDurations(log: string, containerId: string): string[] {
  return log.split("\n").flatMap((line) => {
    if (!line.includes(`"containerId":"${containerId}"`) || !line.includes('"msg":"request"')) return [];
    const entry = JSON.parse(line) as { time: string; verb: string; durationMs: number; result: string };
    return [`${containerId} ${entry.verb} at ${entry.time}: ${entry.durationMs} ms ${entry.result}`];
  });
}

/** Seconds from `name` (comma-separated positive integers), else `fallback`. */
function envSeconds(name: string, fallback: number[]): number[] {
  const text = Deno.env.get(name);
  if (text === undefined || text === "") return fallback;
  if (!/^[1-9][0-9]{0,4}(,[1-9][0-9]{0,4})*$/.test(text)) {
    throw new Error(`Invalid ${name} "${text}": expected seconds, comma-separated (e.g. 1,10,60)`);
  }
  return text.split(",").map(Number);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
