// Fault campaign: coild is killed with SIGKILL at a random moment of an ADD/DEL churn and restarted,
// trial after trial, while a runtime keeps calling and retrying. After each trial etcd must agree with
// the runtime (no duplicate, lost or leaked address), GC must find nothing to release, the sweep must
// give back the surplus empty blocks, table 119 must match the owned blocks, and main-mode pods must
// still answer a ping. Every call and etcd samples taken during the churn go to the history checker
// (_history.ts). Sizes: COIL_FAULTS_SIGKILL_TRIALS, COIL_FAULTS_SIGKILL_OPS; replay: COIL_FAULTS_SEED.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { aggregate } from "../../ipam/aggregate.ts";
import { formatCidr, parseCidr } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { ChurnRuntime } from "./_churn.ts";
import { assertHistory, History } from "./_history.ts";
import {
  assertAgrees,
  compare,
  exportedPrefixes,
  holdersOf,
  readIpamState,
  surplusEmptyBlocks,
} from "./_ipam_state.ts";
import { CoildNode } from "./_node.ts";
import { campaignSeed, envCount } from "./_params.ts";
import { seededRandom } from "./_random.ts";
import { sampleEtcd, startSampler } from "./_sampler.ts";
import { cniGc, type Network, reachable } from "./_runtime.ts";

const TRIALS = envCount("COIL_FAULTS_SIGKILL_TRIALS", 20);
const OPS = envCount("COIL_FAULTS_SIGKILL_OPS", 200);
const WORKERS = envCount("COIL_FAULTS_SIGKILL_WORKERS", 6);
/** Longest pause between the kill and the restart, in ms. */
const MAX_DOWN_MS = 500;
/** How long the sweep and the route exporter get to converge after a trial (bounded waits, not timings). */
const CONVERGE_MS = 30_000;
/** How often etcd is sampled for the history checker during the churn. */
const SAMPLE_EVERY_MS = 250;

interface Figures {
  trials: number;
  duplicates: number;
  lost: number;
  leakedBeforeGc: number;
  releasedByGc: number;
  orphans: number;
  surplusBlocksAfterSweep: number;
  unreachable: number;
  strayVeths: number;
  livePeak: number;
  mainChecked: number;
}

Deno.test("coild killed with SIGKILL during ADD/DEL churn keeps every address unique, held and reachable", async (t) => {
  const random = seededRandom(campaignSeed("sigkill_churn"));
  console.log(
    `sigkill churn: seed ${random.seed} (replay with COIL_FAULTS_SEED=${random.seed}), ` +
      `${TRIALS} trials of >= ${OPS} successful calls, ${WORKERS} concurrent callers`,
  );
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix });
  try {
    // /29 blocks: a population of ~40 pods keeps claiming and releasing blocks, so kills land on those too.
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.64.0.0/16"], blockSizeBits: 3 }),
    );
    await using node = await CoildNode.create({
      etcd,
      prefix,
      args: ["--sweep-interval", "1", "--sweep-grace", "5"],
    });
    const history = new History();
    const net: Network = { name: "churn", socket: node.socket, history, node: node.name };
    await using runtime = await ChurnRuntime.create({
      net,
      random,
      mainShare: 0.15,
      maxMain: 8,
      low: 20,
      high: 60,
      readdChance: 0.5,
    });
    const figures: Figures = {
      trials: 0,
      duplicates: 0,
      lost: 0,
      leakedBeforeGc: 0,
      releasedByGc: 0,
      orphans: 0,
      surplusBlocksAfterSweep: 0,
      unreachable: 0,
      strayVeths: 0,
      livePeak: 0,
      mainChecked: 0,
    };
    const started = Date.now();
    for (let trial = 1; trial <= TRIALS; trial++) {
      const ok = await t.step(`trial ${trial}`, async () => {
        {
          await using _sampler = startSampler(history, client, prefix, SAMPLE_EVERY_MS);
          await churnWithKill(node, runtime, random);
          await runtime.drain();
        }
        await sampleEtcd(history, client, prefix);
        await verifyTrial(client, prefix, node, net, runtime, figures);
        figures.trials++;
      });
      if (!ok) break; // later trials would start from a state already known to be wrong
    }

    await t.step(
      "after the last trial, DEL of every pod leaves no address and at most a spare block",
      async () => {
        await runtime.deleteAll();
        await assertConverges("every address released and the surplus blocks swept", node, async () => {
          const state = await readIpamState(client, prefix);
          return state.addresses.length === 0 && surplusEmptyBlocks(state, node.name).length === 0;
        });
        assert.deepEqual(await coilVeths(node), [], node.logTail());
        history.final({
          keys: (await readIpamState(client, prefix)).addresses,
          veths: await node.taggedVeths(),
        });
      },
    );
    await t.step("the whole history holds no duplicate, lost or leftover address", () => {
      assertHistory(history, "sigkill churn");
    });

    const s = runtime.stats;
    const ipamEvents = ipamEventCounts(node.log());
    if (s.problems.length > 0) console.log(`sigkill churn problems:\n${s.problems.join("\n")}`);
    console.log(
      `sigkill churn: ${figures.trials} trials, ${s.calls} CNI calls (${s.addsOk} ADD ok, ${s.delsOk} DEL ok), ` +
        `${node.starts - 1} SIGKILL+restart; 11 while coild was mid-call ${s.retriesInFlight}, ` +
        `while it was down ${s.retriesDown}, other 11 ${s.retriesOther}; ADDs failed then DEL'd ` +
        `${s.failedAdds}, re-added ${s.readds}; other failures ${s.problems.length}; duplicates ` +
        `${figures.duplicates}, lost ${figures.lost}, leaked before GC ${figures.leakedBeforeGc}, released ` +
        `by GC ${figures.releasedByGc}, orphans ${figures.orphans}, surplus empty blocks after sweep ` +
        `${figures.surplusBlocksAfterSweep}, stray veths ${figures.strayVeths}, unreachable main-mode pods ` +
        `${figures.unreachable} of ${figures.mainChecked} pings; live peak ${figures.livePeak}; blocks ` +
        `claimed ${ipamEvents.get("block claimed") ?? 0}, released ${
          ipamEvents.get("block released") ?? 0
        }; ` +
        `${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    assert.deepEqual(s.problems, [], node.logTail());
  } finally {
    client.close();
  }
});

/** One trial: the churn runs until OPS more calls succeeded, and coild is killed and restarted once in it. */
async function churnWithKill(
  node: CoildNode,
  runtime: ChurnRuntime,
  random: ReturnType<typeof seededRandom>,
): Promise<void> {
  const base = runtime.stats.ok;
  const killAfter = random.between(Math.floor(OPS * 0.1), Math.floor(OPS * 0.8));
  const killDelay = random.int(40);
  const downMs = random.int(MAX_DOWN_MS + 1);
  let restarted = false;
  let failed = false;
  const chaos = (async () => {
    try {
      while (runtime.stats.ok - base < killAfter) await sleep(5);
      await sleep(killDelay);
      await node.kill();
      await sleep(downMs);
      await node.start();
      restarted = true;
    } catch (err) {
      failed = true;
      throw err;
    }
  })();
  await runtime.run(WORKERS, () => failed || (restarted && runtime.stats.ok - base >= OPS));
  await chaos;
}

async function verifyTrial(
  client: Etcd3,
  prefix: string,
  node: CoildNode,
  net: Network,
  runtime: ChurnRuntime,
  figures: Figures,
): Promise<void> {
  const live = runtime.live();
  figures.livePeak = Math.max(figures.livePeak, live.length);
  const holders = holdersOf(live);
  const before = compare(await readIpamState(client, prefix), holders);
  figures.duplicates += before.duplicates.length;
  figures.lost += before.lost.length;
  figures.leakedBeforeGc += before.leaked.length;
  figures.orphans += before.orphans.length;
  assertAgrees(before, "after the churn", node.logTail());

  const gc = await cniGc(net, live.map((p) => p.pod));
  assert.equal(gc.kind, "ok", `GC failed: ${gc.msg}\n${node.logTail()}`);
  const afterGc = await readIpamState(client, prefix);
  const after = compare(afterGc, holders);
  figures.releasedByGc += before.leaked.length - after.leaked.length;
  assertAgrees(after, "after GC", node.logTail());

  for (const p of runtime.liveMain()) {
    figures.mainChecked++;
    if (!await reachable(node.netns, p.ip)) {
      figures.unreachable++;
      assert.fail(`Main-mode pod ${p.pod.containerId} at ${p.ip} does not answer a ping\n${node.logTail()}`);
    }
  }
  const veths = await coilVeths(node);
  const expected = runtime.liveMain().map((p) => p.pod.containerId).sort();
  figures.strayVeths += veths.filter((id) => !expected.includes(id)).length;
  assert.deepEqual(veths, expected, `host veths differ from the live main-mode pods\n${node.logTail()}`);

  let surplus = surplusEmptyBlocks(afterGc, node.name).length;
  await assertConverges("the sweep releases the surplus empty blocks", node, async () => {
    surplus = surplusEmptyBlocks(await readIpamState(client, prefix), node.name).length;
    return surplus === 0;
  });
  figures.surplusBlocksAfterSweep += surplus;
  await assertConverges("table 119 holds exactly the owned blocks, aggregated", node, async () => {
    const owned = (await readIpamState(client, prefix)).blocks.filter((b) => b.node === node.name)
      .map((b) => parseCidr(b.block.replace("_", "/")));
    return JSON.stringify(aggregate(owned).map(formatCidr).sort()) ===
      JSON.stringify(await exportedPrefixes(node.netns));
  });
}

/** Container IDs in the aliases of the host veths coild made, sorted. */
function coilVeths(node: CoildNode): Promise<string[]> {
  return node.taggedContainerIds();
}

/** How often each IPAM event (the `event` field of coild's log lines) occurs in `log`. */
function ipamEventCounts(log: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of log.split("\n")) {
    let event: unknown;
    try {
      event = (JSON.parse(line) as { event?: unknown }).event;
    } catch {
      continue; // a run marker, or the last line of a coild killed mid-write
    }
    if (typeof event === "string") counts.set(event, (counts.get(event) ?? 0) + 1);
  }
  return counts;
}

async function assertConverges(what: string, node: CoildNode, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + CONVERGE_MS;
  while (!await check()) {
    if (Date.now() > deadline) assert.fail(`Not within ${CONVERGE_MS} ms: ${what}\n${node.logTail()}`);
    await sleep(200);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
