// Fault campaign: pauses, not crashes (issue 11). (1) The etcd leader of a 3-member cluster SIGSTOPped
// during ADD/DEL churn: every call is answered (ok or 11) before the plugin's deadline, the others elect
// a leader and coild serves again. (2) coild SIGSTOPped in the middle of a burst of ADDs: the runtime's
// calls time out (the plugin's own deadline, or the runtime SIGKILLs the plugin) and are retried as
// kubelet does; on SIGCONT coild meets requests whose callers are gone, and its node lease may have
// lapsed. Both under the history checker (_history.ts), then etcd against the runtime, GC, table 119,
// the node name. Sizes: COIL_FAULTS_PAUSE_ETCD_TRIALS, COIL_FAULTS_PAUSE_COILD_TRIALS,
// COIL_FAULTS_PAUSE_MS, COIL_FAULTS_PAUSE_WORKERS; replay: COIL_FAULTS_SEED.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { aggregate } from "../../ipam/aggregate.ts";
import { formatCidr, parseCidr } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { parseNodeRecord } from "../../ipam/records.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { ChurnRuntime } from "./_churn.ts";
import { EtcdCluster } from "./_etcd_cluster.ts";
import { pluginWithExecTimeout } from "./_exec_timeout.ts";
import { assertHistory, type Call, describeCall, History } from "./_history.ts";
import {
  compare,
  disagreementList,
  exportedPrefixes,
  holdersOf,
  readIpamState,
  surplusEmptyBlocks,
} from "./_ipam_state.ts";
import { CoildNode } from "./_node.ts";
import { campaignSeed, envCount } from "./_params.ts";
import { type Random, seededRandom } from "./_random.ts";
import { cniGc, type Network } from "./_runtime.ts";
import { sampleEtcd, startSampler } from "./_sampler.ts";

const ETCD_TRIALS = envCount("COIL_FAULTS_PAUSE_ETCD_TRIALS", 1);
const COILD_TRIALS = envCount("COIL_FAULTS_PAUSE_COILD_TRIALS", 1);
const PAUSE_MS = envCount("COIL_FAULTS_PAUSE_MS", 10_000);
/** Concurrent CNI calls of each runtime. */
const WORKERS = envCount("COIL_FAULTS_PAUSE_WORKERS", 4);
/** Successful calls before the pause, and after the resume, in each trial. */
const OPS_BEFORE = 30;
const OPS_AFTER = 60;
/**
 * The plugin's deadline (COIL_CNI_TIMEOUT_MS) with etcd paused: coild must answer within it, since each
 * etcd call it makes has a 5 s deadline before it is tried on another member.
 */
const ETCD_PAUSE_PLUGIN_DEADLINE_MS = 20_000;
/** With coild paused: one network's plugin gives up by itself, the other's is killed by the runtime. */
const PLUGIN_DEADLINE_MS = 3000;
const RUNTIME_EXEC_TIMEOUT_MS = 4000;
/** What a call may take beyond its deadline: the plugin's own start and exit on a loaded machine. */
const EXEC_SLACK_MS = 3000;
/** Bounded waits for convergence (sweep, export, node name), not timings. */
const CONVERGE_MS = 30_000;
const SAMPLE_EVERY_MS = 250;

/** Disagreements of etcd with the runtimes, summed over the trials' checks. */
interface Tally {
  duplicates: number;
  lost: number;
  /** Keys of no live pod, and addresses in no owned block. */
  leaked: number;
}

/** One pause, as the figures report it; times in ms, relative to the pause. */
interface PauseFigures {
  /** When the others elected a new leader (etcd pause only). */
  electedMs?: number;
  /** End of the first successful ADD that started after the pause. */
  servedAfterPauseMs?: number;
  /** End of the first successful ADD that started after the resume, from the resume. */
  servedAfterResumeMs?: number;
  /** Whether coild's node lease lapsed (coild pause only). */
  leaseLapsed?: boolean;
}

Deno.test("pause: the etcd leader SIGSTOPped during churn leaves every call answered and every address once", async (t) => {
  const random = seededRandom(campaignSeed("pause_etcd"));
  console.log(
    `pause etcd: seed ${random.seed} (replay with COIL_FAULTS_SEED=${random.seed}), ${ETCD_TRIALS} trials, ` +
      `leader paused ${PAUSE_MS} ms, ${WORKERS} concurrent callers`,
  );
  const started = Date.now();
  await using cluster = await EtcdCluster.start(3);
  const prefix = cluster.first.newPrefix();
  const client = await connectEtcd({ endpoints: cluster.endpoints(), prefix });
  try {
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.69.0.0/16"], blockSizeBits: 4 }),
    );
    await using node = await CoildNode.create({
      etcd: cluster.first,
      prefix,
      args: [
        "--etcd-endpoints",
        cluster.unixEndpoints().join(","),
        "--sweep-interval",
        "1",
        "--sweep-grace",
        "5",
      ],
    });
    const history = new History();
    const net: Network = {
      name: "pause-etcd",
      socket: node.socket,
      history,
      node: node.name,
      env: { COIL_CNI_TIMEOUT_MS: String(ETCD_PAUSE_PLUGIN_DEADLINE_MS) },
    };
    await using runtime = await ChurnRuntime.create({
      net,
      random,
      mainShare: 0.15,
      maxMain: 6,
      low: 10,
      high: 40,
      readdChance: 0.5,
      idPrefix: "pe",
    });
    const pauses: PauseFigures[] = [];
    const tally: Tally = { duplicates: 0, lost: 0, leaked: 0 };
    for (let trial = 1; trial <= ETCD_TRIALS; trial++) {
      const ok = await t.step(`trial ${trial}: the leader paused, then resumed`, async () => {
        let figures: PauseFigures = {};
        {
          await using _sampler = startSampler(history, client, prefix, SAMPLE_EVERY_MS);
          figures = await churnAround([runtime], async () => {
            const leader = await cluster.leader();
            assert.ok(leader !== undefined, "the cluster has no leader before the pause");
            await cluster.pause(leader);
            const pausedAt = History.now();
            let electedMs: number | undefined;
            try {
              while (History.now() - pausedAt < PAUSE_MS) {
                if (electedMs === undefined) {
                  const now = await cluster.leader();
                  if (now !== undefined && now !== leader) electedMs = History.now() - pausedAt;
                }
                await sleep(100);
              }
            } finally {
              cluster.resume(leader);
            }
            assert.ok(electedMs !== undefined, `no new leader while m${leader} was paused`);
            console.log(`pause etcd, trial ${trial}: leader m${leader} paused ${PAUSE_MS} ms`);
            return { pausedAt, resumedAt: History.now(), electedMs };
          }, history);
          await runtime.drain();
        }
        for (let i = 0; i < cluster.size; i++) await cluster.waitHealthy(i);
        await sampleEtcd(history, client, prefix);
        await verifyNode(client, prefix, node, [{ net, runtime }], tally);
        pauses.push(figures);
      });
      if (!ok) break;
    }
    await t.step(
      "after DEL of every pod, the whole history holds no duplicate, lost or leftover address",
      async () => {
        await runtime.deleteAll();
        await finalCheck(client, prefix, node, history, "pause etcd");
      },
    );
    report("pause etcd", history, [runtime], pauses, tally, started, [net]);
    assert.deepEqual(runtime.stats.problems, [], node.logTail());
  } finally {
    client.close();
  }
});

Deno.test("pause: coild SIGSTOPped in a burst of ADDs serves again, with nothing held twice or leaked", async (t) => {
  const random = seededRandom(campaignSeed("pause_coild"));
  console.log(
    `pause coild: seed ${random.seed} (replay with COIL_FAULTS_SEED=${random.seed}), ` +
      `${COILD_TRIALS} trials, ` +
      `coild paused ${PAUSE_MS} ms, 2 runtimes of ${WORKERS} concurrent callers`,
  );
  const started = Date.now();
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix });
  try {
    // /29 blocks: the burst claims blocks, and the calls in flight at the pause include claims.
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.70.0.0/16"], blockSizeBits: 3 }),
    );
    // The default node lease TTL (10 s): a pause of 10 s may outlast it.
    await using node = await CoildNode.create({
      etcd,
      prefix,
      args: ["--sweep-interval", "1", "--sweep-grace", "5"],
    });
    await using killing = await pluginWithExecTimeout(RUNTIME_EXEC_TIMEOUT_MS);
    const history = new History();
    // One network whose plugin gives up by itself, one whose plugin the runtime kills first.
    const byDeadline: Network = {
      name: "pause-deadline",
      socket: node.socket,
      history,
      node: node.name,
      env: { COIL_CNI_TIMEOUT_MS: String(PLUGIN_DEADLINE_MS) },
    };
    const byKill: Network = {
      name: "pause-killed",
      socket: node.socket,
      history,
      node: node.name,
      env: { COIL_CNI_TIMEOUT_MS: "120000" },
      plugin: killing.path,
    };
    const churnOf = (net: Network, r: Random, idPrefix: string) =>
      ChurnRuntime.create({
        net,
        random: r,
        mainShare: 0.15,
        maxMain: 4,
        low: 30,
        high: 60,
        readdChance: 0.5,
        idPrefix,
      });
    await using deadlineRuntime = await churnOf(byDeadline, random, "pd");
    await using killRuntime = await churnOf(byKill, seededRandom(random.seed ^ 0x5bd1e995), "pk");
    const runtimes = [deadlineRuntime, killRuntime];
    const pairs = [{ net: byDeadline, runtime: deadlineRuntime }, { net: byKill, runtime: killRuntime }];
    const pauses: PauseFigures[] = [];
    const tally: Tally = { duplicates: 0, lost: 0, leaked: 0 };
    for (let trial = 1; trial <= COILD_TRIALS; trial++) {
      const ok = await t.step(`trial ${trial}: coild paused in a burst of ADDs, then resumed`, async () => {
        const nodeKeyBefore = await nodeHolderPid(client, prefix, node.name);
        assert.equal(nodeKeyBefore, node.daemonPid(), "coild does not hold its node name before the pause");
        const lapsesBefore = countLines(node.log(), "node lease lost");
        let blocksAtPause: string[] = [];
        let figures: PauseFigures = {};
        {
          await using _sampler = startSampler(history, client, prefix, SAMPLE_EVERY_MS);
          figures = await churnAround(runtimes, async () => {
            await node.pause();
            const pausedAt = History.now();
            try {
              await sleep(1000); // the writes coild sent before it stopped have landed
              blocksAtPause = await ownedBlocks(client, prefix, node.name);
              await sleep(PAUSE_MS - 1000);
              // Nothing automatic takes a paused node's blocks, even once its lease lapsed.
              assert.deepEqual(await ownedBlocks(client, prefix, node.name), blocksAtPause);
            } finally {
              await node.resume();
            }
            return { pausedAt, resumedAt: History.now() };
          }, history);
          for (const r of runtimes) await r.drain();
        }
        await sampleEtcd(history, client, prefix);
        // The name is ours again (taken back if the lease lapsed) and the blocks are those of the pause,
        // but for those coild itself released since (the churn's DELs empty some).
        await converge(
          "coild holds its node name again",
          node,
          async () => await nodeHolderPid(client, prefix, node.name) === node.daemonPid(),
        );
        figures.leaseLapsed = countLines(node.log(), "node lease lost") > lapsesBefore;
        // coild re-reads its blocks on taking its name back, while it serves the requests of the pause:
        // none was taken meanwhile, and none it released itself may count as lost.
        const lostReports = [
          ...logEvents(node.log(), "blocks of this node were released while it was away"),
          ...logEvents(node.log(), "block lost"),
        ];
        assert.deepEqual(lostReports, [], "blocks reported lost after the pause");
        const owned = await ownedBlocks(client, prefix, node.name);
        const released = releasedBlocks(node.log());
        const gone = blocksAtPause.filter((b) => !owned.includes(b) && !released.has(b));
        assert.deepEqual(gone, [], `blocks lost across the pause\n${node.logTail()}`);
        await verifyNode(client, prefix, node, pairs, tally);
        pauses.push(figures);
      });
      if (!ok) break;
    }
    await t.step(
      "after DEL of every pod, the whole history holds no duplicate, lost or leftover address",
      async () => {
        for (const r of runtimes) await r.deleteAll();
        await finalCheck(client, prefix, node, history, "pause coild");
      },
    );
    report("pause coild", history, runtimes, pauses, tally, started, [byDeadline, byKill]);
    for (const r of runtimes) assert.deepEqual(r.stats.problems, [], node.logTail());
  } finally {
    client.close();
  }
});

/**
 * Runs the runtimes' churn: OPS_BEFORE successful calls, then `fault` (which pauses and resumes
 * something and returns when), then at least OPS_AFTER more successful calls. @returns the fault's
 * figures, with the time to serve measured from the history.
 */
async function churnAround(
  runtimes: ChurnRuntime[],
  fault: () => Promise<{ pausedAt: number; resumedAt: number; electedMs?: number }>,
  history: History,
): Promise<PauseFigures> {
  const ok = () => runtimes.reduce((n, r) => n + r.stats.ok, 0);
  const base = ok();
  let after = Infinity;
  let failed = false;
  const chaos = (async () => {
    try {
      while (ok() - base < OPS_BEFORE) await sleep(5);
      const times = await fault();
      after = ok();
      return times;
    } catch (err) {
      failed = true;
      throw err;
    }
  })();
  await Promise.all(runtimes.map((r) => r.run(WORKERS, () => failed || ok() - after >= OPS_AFTER)));
  const { pausedAt, resumedAt, electedMs } = await chaos;
  const firstOkAdd = (from: number) => {
    const ends = history.calls.filter((c) => c.verb === "ADD" && c.result.status === "ok" && c.start >= from)
      .map((c) => c.end);
    return ends.length === 0 ? undefined : Math.min(...ends) - from;
  };
  return { electedMs, servedAfterPauseMs: firstOkAdd(pausedAt), servedAfterResumeMs: firstOkAdd(resumedAt) };
}

/**
 * After a trial, with every owed DEL made: etcd agrees with the runtimes, GC releases nothing, the sweep
 * leaves at most a spare block, table 119 holds the owned blocks, the host veths are the live pods',
 * coild holds its node name, and every call ended within its deadline.
 */
async function verifyNode(
  client: Etcd3,
  prefix: string,
  node: CoildNode,
  pairs: { net: Network; runtime: ChurnRuntime }[],
  tally: Tally,
): Promise<void> {
  const holders = pairs.flatMap(({ runtime }) => holdersOf(runtime.live()));
  const assertAgrees = async (when: string) => {
    const d = compare(await readIpamState(client, prefix), holders);
    const all = disagreementList(d);
    tally.duplicates += d.duplicates.length;
    tally.lost += d.lost.length;
    tally.leaked += d.leaked.length + d.orphans.length;
    assert.deepEqual(
      all,
      [],
      `etcd and the runtimes disagree ${when}:\n${all.join("\n")}\n${storyOf(all.join(" "), pairs, node)}`,
    );
  };
  await converge(
    "coild runs and holds its node name",
    node,
    async () => await nodeHolderPid(client, prefix, node.name) === node.daemonPid(),
  );
  await assertAgrees("after the churn");
  for (const { net, runtime } of pairs) {
    const gc = await cniGc(net, runtime.live().map((p) => p.pod));
    assert.equal(gc.kind, "ok", `GC of ${net.name} failed: ${gc.msg}\n${node.logTail()}`);
  }
  await assertAgrees("after GC");
  const mains = pairs.flatMap(({ runtime }) => runtime.liveMain().map((p) => p.pod.containerId)).sort();
  assert.deepEqual(await node.taggedContainerIds(), mains, `host veths differ from the live main-mode pods`);
  await converge(
    "the sweep releases the surplus empty blocks",
    node,
    async () => surplusEmptyBlocks(await readIpamState(client, prefix), node.name).length === 0,
  );
  await converge("table 119 holds exactly the owned blocks, aggregated", node, async () => {
    const owned = (await ownedBlocks(client, prefix, node.name)).map((b) => parseCidr(b.replace("_", "/")));
    return JSON.stringify(aggregate(owned).map(formatCidr).sort()) ===
      JSON.stringify(await exportedPrefixes(node.netns));
  });
  const late = pairs.flatMap(({ net }) =>
    (net.history?.calls ?? []).filter((c) =>
      c.attachment.network === net.name && c.end - c.start > deadlineOf(net)
    )
  );
  assert.deepEqual(late.map(describeCall), [], "calls that outlasted their deadline");
}

/**
 * The calls and coild's log lines of every container ID and address named in `text`, for a failure's
 * message: what the runtime did with those pods and what coild did with their requests.
 */
function storyOf(text: string, pairs: { net: Network }[], node: CoildNode): string {
  const calls = pairs.flatMap(({ net }) => net.history?.calls ?? []);
  const ids = new Set(
    calls.map((c) => c.attachment.containerId).filter((id) => id !== "" && text.includes(id)),
  );
  // Log lines naming an address say `10.69.0.5/28` or `…/10.69.0.5"` (keys): match the address whole.
  const addresses = [...new Set(text.match(/\b\d+\.\d+\.\d+\.\d+\b/g) ?? [])].map((ip) => `${ip}[/"]`);
  const named = new RegExp([...ids, ...addresses].join("|") || "$^");
  const lines = [
    ...[...new Set(calls)].filter((c) => ids.has(c.attachment.containerId)).map(describeCall),
    ...node.log().split("\n").filter((l) => named.test(l)),
  ];
  return lines.length > 0 ? lines.join("\n") : node.logTail();
}

/** After the last DELs: no address key, no tagged veth, and the history holds no violation. */
async function finalCheck(
  client: Etcd3,
  prefix: string,
  node: CoildNode,
  history: History,
  campaign: string,
) {
  // A bounded wait: what is left then fails the history check (rule c), which names its calls.
  const deadline = Date.now() + CONVERGE_MS;
  while ((await readIpamState(client, prefix)).addresses.length > 0 && Date.now() < deadline) {
    await sleep(200);
  }
  history.final({ keys: (await readIpamState(client, prefix)).addresses, veths: await node.taggedVeths() });
  assertHistory(history, campaign);
}

/** How long a call of `net` may take: its plugin's deadline or the runtime's exec timeout, plus slack. */
function deadlineOf(net: Network): number {
  const plugin = Number(net.env?.COIL_CNI_TIMEOUT_MS ?? 120_000);
  return Math.min(plugin, net.plugin ? RUNTIME_EXEC_TIMEOUT_MS : Infinity) + EXEC_SLACK_MS;
}

/** Prints the campaign's figures in one line. */
function report(
  campaign: string,
  history: History,
  runtimes: ChurnRuntime[],
  pauses: PauseFigures[],
  tally: Tally,
  started: number,
  nets: Network[],
): void {
  const calls = history.calls.filter((c) => c.verb !== "VANISH");
  const adds = calls.filter((c) => c.verb === "ADD");
  const code11 = (c: Call) => c.result.status !== "ok" && c.result.code === 11;
  const noAnswer = (c: Call) => c.result.status === "unknown";
  const answered = calls.filter((c) => !noAnswer(c));
  const slowest = answered.reduce((worst, c) => (c.end - c.start > worst.end - worst.start ? c : worst));
  const sum = (f: (r: ChurnRuntime) => number) => runtimes.reduce((n, r) => n + f(r), 0);
  const ms = (values: (number | undefined)[]) =>
    values.map((v) => (v === undefined ? "-" : `${Math.round(v)}`)).join("/");
  console.log(
    `${campaign}: ${pauses.length} trials (${pauses.length} pauses of ${PAUSE_MS} ms), ` +
      `${calls.length} CNI calls ` +
      `(${sum((r) => r.stats.addsOk)} ADD ok, ${sum((r) => r.stats.delsOk)} DEL ok); ADDs answered 11 ` +
      `${adds.filter(code11).length} of ${adds.length} (no answer: plugin deadline ${
        sum((r) => r.stats.retriesInFlight)
      }, killed by the runtime ${sum((r) => r.stats.killed)}); failed ADDs DEL'd ${
        sum((r) => r.stats.failedAdds)
      }, ` +
      `re-added ${sum((r) => r.stats.readds)}; other failures ${
        sum((r) => r.stats.problems.length)
      }; slowest ` +
      `answer ${Math.round(slowest.end - slowest.start)} ms (${slowest.verb}; deadlines ${
        nets.map((n) => `${n.name} ${deadlineOf(n) - EXEC_SLACK_MS} ms`).join(", ")
      }); new leader after (ms) ${ms(pauses.map((p) => p.electedMs))}; first ADD served after the pause ` +
      `${ms(pauses.map((p) => p.servedAfterPauseMs))} ms, after the resume ${
        ms(pauses.map((p) => p.servedAfterResumeMs))
      } ms; node lease lapsed ${pauses.filter((p) => p.leaseLapsed).length} of ${pauses.length}; ` +
      `etcd against the runtimes: duplicates ${tally.duplicates}, lost ${tally.lost}, ` +
      `leaked ${tally.leaked}; ` +
      `${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
}

/** The blocks `node` owns in etcd, as block ids (`10.70.0.8_29`), sorted. */
async function ownedBlocks(client: Etcd3, prefix: string, node: string): Promise<string[]> {
  return (await readIpamState(client, prefix)).blocks.filter((b) => b.node === node).map((b) => b.block)
    .sort();
}

/** The pid in the node key's record, or undefined when the key is missing. */
async function nodeHolderPid(client: Etcd3, prefix: string, node: string): Promise<number | undefined> {
  const key = keysFor(prefix).node(node);
  const text = await client.get(key).string();
  return text === null ? undefined : parseNodeRecord(key, text).holder?.pid;
}

/** The block ids coild logged as released (`block released` events). */
function releasedBlocks(log: string): Set<string> {
  const ids = new Set<string>();
  for (const line of log.split("\n")) {
    if (!line.includes('"block released"')) continue;
    try {
      const block = (JSON.parse(line) as { block?: unknown }).block;
      if (typeof block === "string") ids.add(block.replace("/", "_"));
    } catch { /* a run marker */ }
  }
  return ids;
}

/** The JSON log lines of coild whose `msg` is `msg`. */
function logEvents(log: string, msg: string): Record<string, unknown>[] {
  return log.split("\n").filter((l) => l.includes(msg)).flatMap((l) => {
    try {
      const event = JSON.parse(l) as Record<string, unknown>;
      return event.msg === msg ? [event] : [];
    } catch {
      return []; // a run marker
    }
  });
}

function countLines(log: string, text: string): number {
  return log.split("\n").filter((l) => l.includes(text)).length;
}

async function converge(what: string, node: CoildNode, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + CONVERGE_MS;
  while (!await check()) {
    if (Date.now() > deadline) assert.fail(`Not within ${CONVERGE_MS} ms: ${what}\n${node.logTail()}`);
    await sleep(200);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
