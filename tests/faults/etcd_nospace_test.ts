// Fault campaign: a full etcd. etcd runs with a small --quota-backend-bytes and is filled (big values
// under a prefix of their own) until it raises NOSPACE. Under the alarm: ADD answers 11 naming the alarm
// and writes nothing; DEL, GC and the sweep still release (their txns only delete, which etcd allows);
// CNI STATUS, /readyz and `coil status` say why. After delete, compaction, defragmentation and disarm,
// ADDs succeed again. Every call goes to the history checker (_history.ts), with etcd samples taken
// throughout (reads work under the alarm). Sizes: COIL_FAULTS_NOSPACE_ROUNDS, COIL_FAULTS_NOSPACE_PODS,
// COIL_FAULTS_NOSPACE_ADDS.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { runCni } from "../helpers/cni.ts";
import { runCoilCli } from "../helpers/coil_cli.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { inParallel } from "../helpers/in_parallel.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";
import {
  currentRevision,
  fillUntilNoSpace,
  freeSpaceAndDisarm,
  noSpaceRaised,
} from "../helpers/etcd_space.ts";
import { assertHistory, History } from "./_history.ts";
import { assertAgrees, compare, holdersOf, readIpamState, surplusEmptyBlocks } from "./_ipam_state.ts";
import { CoildNode } from "./_node.ts";
import { envCount } from "./_params.ts";
import { sampleEtcd, startSampler } from "./_sampler.ts";
import { type CallOutcome, cniCall, cniCheck, cniGc, netconfOf, type Network, type Pod } from "./_runtime.ts";

const ROUNDS = envCount("COIL_FAULTS_NOSPACE_ROUNDS", 2);
/** Live pods when etcd fills up (every fifth in main mode, with a veth in a netns of its own). */
const PODS = envCount("COIL_FAULTS_NOSPACE_PODS", 24);
/** ADDs of new pods under the alarm, each followed by the DEL a runtime sends after a failed ADD. */
const ADDS = envCount("COIL_FAULTS_NOSPACE_ADDS", 24);
const WORKERS = 6;
/** etcd's space quota: a few dozen filler puts. */
const QUOTA_BYTES = 4 * 1024 * 1024;
/** Where coild serves /readyz, inside the node's netns. */
const METRICS_ADDRESS = "127.0.0.1:9391";
/** Bounded waits for what follows from a cache or a timer (health cache 1.5 s, sweep 1 s), not timings. */
const CONVERGE_MS = 15_000;

interface Live {
  pod: Pod;
  ip: string;
  result: Record<string, unknown>;
}

interface Figures {
  fillPuts: number[];
  addsRefused: number;
  addsOther: string[];
  delsReleased: number;
  gcReleased: number;
  blocksReleased: number;
  disarmToAddMs: number[];
  /** Slowest answers to calls that started under the alarm, in ms. */
  slowestAdd: number;
  slowestDel: number;
  /** Comparisons of etcd with the runtime's live pods, each with no duplicate, lost or leaked address. */
  comparisons: number;
}

Deno.test("a full etcd (NOSPACE): ADD answers 11 naming the alarm, DEL still releases, service resumes after disarm", async (t) => {
  console.log(`etcd nospace: ${ROUNDS} rounds, ${PODS} live pods, ${ADDS} ADDs under the alarm per round`);
  await using etcd = await startEtcd({ args: ["--quota-backend-bytes", String(QUOTA_BYTES)] });
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix });
  const podNetns: TestNetns[] = [];
  try {
    // /29 blocks: 24 pods take four or five, so the DELs under the alarm empty some.
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.71.0.0/16"], blockSizeBits: 3 }),
    );
    await using node = await CoildNode.create({
      etcd,
      prefix,
      args: ["--sweep-interval", "1", "--sweep-grace", "5", "--metrics-address", METRICS_ADDRESS],
    });
    const history = new History();
    const net: Network = { name: "nospace", socket: node.socket, history, node: node.name };
    const live: Live[] = [];
    const figures: Figures = {
      fillPuts: [],
      addsRefused: 0,
      addsOther: [],
      delsReleased: 0,
      gcReleased: 0,
      blocksReleased: 0,
      disarmToAddMs: [],
      slowestAdd: 0,
      slowestDel: 0,
      comparisons: 0,
    };
    const consistent = async () => {
      await assertConsistent(client, prefix, live, node);
      figures.comparisons++;
    };
    let podCount = 0;
    const newPod = async (): Promise<Pod> => {
      const n = podCount++;
      const containerId = `nospace${String(n).padStart(4, "0")}`;
      if (n % 5 !== 4) {
        return {
          containerId,
          ifName: "eth0",
          namespace: "nospace",
          name: containerId,
          mode: "ipam",
          netns: node.netns.path,
        };
      }
      const ns = await createNetns();
      podNetns.push(ns);
      return {
        containerId,
        ifName: "eth0",
        namespace: "nospace",
        name: containerId,
        mode: "main",
        netns: ns.path,
      };
    };
    const addNew = async (count: number) => {
      await inParallel(range(count), WORKERS, async () => {
        const pod = await newPod();
        const out = await cniCall(net, "ADD", pod);
        assert.equal(
          out.kind,
          "ok",
          `ADD of ${pod.containerId} with etcd not full: ${out.msg}\n${node.logTail()}`,
        );
        live.push({ pod, ip: out.ip!, result: out.result! });
      });
    };
    /** ADDs of new pods under the alarm, each followed by the DEL a runtime sends after a failed ADD. */
    const refusedAdds = async (count: number) => {
      await inParallel(range(count), WORKERS, async () => {
        const pod = await newPod();
        const out = await cniCall(net, "ADD", pod);
        if (out.kind !== "ok" && out.cniCode === 11 && /NOSPACE/.test(out.msg)) figures.addsRefused++;
        else figures.addsOther.push(`${pod.containerId}: ${out.kind} ${out.cniCode} ${out.msg}`);
        if (out.kind === "ok") live.push({ pod, ip: out.ip!, result: out.result! });
        else assertOk(await cniCall(net, "DEL", pod), `DEL after the refused ADD of ${pod.containerId}`);
      });
    };

    for (let round = 1; round <= ROUNDS; round++) {
      await t.step(`round ${round}: under the NOSPACE alarm`, async () => {
        await addNew(PODS - live.length);
        await waitFor(
          "the sweep to leave no surplus empty block",
          async () => surplusEmptyBlocks(await readIpamState(client, prefix), node.name).length === 0,
        );
        await consistent();
        await using _sampler = startSampler(history, client, prefix, 250);
        const fillPrefix = `/nospace-fill-${crypto.randomUUID().slice(0, 8)}/`;
        figures.fillPuts.push(await fillUntilNoSpace(client, fillPrefix));
        assert.ok(await noSpaceRaised(client), "etcd refused a put but raised no NOSPACE alarm");
        const alarmFrom = History.now();

        // ADDs write nothing: the store's revision does not move while they and their DELs run.
        const before = await currentRevision(client);
        await refusedAdds(Math.ceil(ADDS / 2));
        assert.deepEqual(figures.addsOther, [], "ADDs under the alarm that did not answer 11 naming NOSPACE");
        assert.equal(await currentRevision(client), before, "refused ADDs and their DELs wrote to etcd");

        // coild caches etcd's health for 1.5 s: STATUS and /readyz may take that long to see the alarm.
        const status = await waitFor("STATUS to answer 50 naming the alarm", async () => {
          const r = await runCni({ command: "STATUS", netconf: netconfOf(net, "main") });
          return r.json?.code === 50 && /NOSPACE/.test(String(r.json?.msg)) ? r : undefined;
        });
        const readyz = await waitFor("/readyz to name the alarm", async () => {
          const r = await readyzOf(node);
          return r.code === 503 && /NOSPACE/.test(r.body) ? r : undefined;
        });
        const cli = await runCoilCli(["status", "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix]);
        assert.equal(cli.code, 0, cli.stderr);
        assert.match(cli.stdout, /NOSPACE/);
        if (round === 1) {
          console.log(`etcd nospace: ADD -> 11 "${lastRefusal(history)}"`);
          console.log(`etcd nospace: STATUS -> 50 "${status.json?.msg}"`);
          console.log(`etcd nospace: /readyz -> 503 "${readyz.body.trim()}"`);
          console.log(
            `etcd nospace: coil status -> "${cli.stdout.split("\n").find((l) => /NOSPACE/.test(l))}"`,
          );
        }
        for (const l of live.slice(0, 3)) {
          assertOk(await cniCheck(net, l.pod, l.result), `CHECK of ${l.pod.containerId}`);
        }

        // DEL releases half of the pods while more ADDs are refused; GC releases two the runtime
        // forgot; the sweep gives back the blocks that emptied. All under the alarm.
        const blocksBefore = (await readIpamState(client, prefix)).blocks.length;
        const gone = live.splice(0, Math.floor(live.length / 2));
        const forgotten = live.splice(0, 2);
        await Promise.all([
          inParallel(gone, WORKERS / 2, async (l) => {
            assertOk(await cniCall(net, "DEL", l.pod), `DEL of ${l.pod.containerId} under the alarm`);
            figures.delsReleased++;
          }),
          refusedAdds(Math.floor(ADDS / 2)),
        ]);
        assert.deepEqual(figures.addsOther, [], "ADDs under the alarm that did not answer 11 naming NOSPACE");
        assertOk(await cniGc(net, live.map((l) => l.pod)), "GC under the alarm");
        figures.gcReleased += forgotten.length;
        await consistent();
        await waitFor(
          "the sweep to release the emptied blocks under the alarm",
          async () => surplusEmptyBlocks(await readIpamState(client, prefix), node.name).length === 0,
        );
        const blocksReleased = blocksBefore - (await readIpamState(client, prefix)).blocks.length;
        console.log(
          `etcd nospace: round ${round}: ${blocksReleased} of ${blocksBefore} blocks released under the alarm`,
        );
        assert.ok(blocksReleased > 0, "no block was released under the alarm");
        figures.blocksReleased += blocksReleased;
        assert.ok(await noSpaceRaised(client), "the alarm went away by itself");
        assert.ok(node.running, `coild stopped under the alarm:\n${node.logTail()}`);
        const nodeKey = await client.get(keysFor(prefix).node(node.name)).string();
        assert.ok(nodeKey, `coild's node key expired under the alarm:\n${node.logTail()}`);
        assert.doesNotMatch(node.log(), /node lease lost/, "coild lost its node lease under the alarm");

        // The operator's runbook, then ADD until it works, as a runtime retries.
        const disarmedAt = await freeSpaceAndDisarm(client, fillPrefix);
        for (const c of history.calls.filter((c) => c.start >= alarmFrom && c.start < disarmedAt)) {
          if (c.verb === "ADD") figures.slowestAdd = Math.max(figures.slowestAdd, c.end - c.start);
          if (c.verb === "DEL") figures.slowestDel = Math.max(figures.slowestDel, c.end - c.start);
        }
        const pod = await newPod();
        for (let tries = 1;; tries++) {
          const out = await cniCall(net, "ADD", pod);
          if (out.kind === "ok") {
            figures.disarmToAddMs.push(Math.round(performance.now() - disarmedAt));
            live.push({ pod, ip: out.ip!, result: out.result! });
            break;
          }
          assert.equal(out.cniCode, 11, out.msg);
          assert.ok(
            performance.now() - disarmedAt < CONVERGE_MS,
            `ADD still fails after the disarm: ${out.msg}`,
          );
          assertOk(await cniCall(net, "DEL", pod), "DEL after a failed ADD");
          await sleep(100);
        }
        await addNew(PODS - live.length);
        await waitFor("/readyz to answer 200 again", async () => (await readyzOf(node)).code === 200);
        await waitFor(
          "STATUS to answer 0 again",
          async () => (await runCni({ command: "STATUS", netconf: netconfOf(net, "main") })).code === 0,
        );
        const cliBack = await runCoilCli([
          "status",
          "--etcd-endpoints",
          etcd.endpoint,
          "--etcd-prefix",
          prefix,
        ]);
        assert.doesNotMatch(cliBack.stdout, /NOSPACE/);
        await consistent();
        await sampleEtcd(history, client, prefix);
      });
    }

    await t.step(
      "after DEL of every pod, the history holds no duplicate, lost or leftover address",
      async () => {
        await inParallel(live, WORKERS, async (l) => {
          for (let tries = 1;; tries++) {
            const out = await cniCall(net, "DEL", l.pod);
            if (out.kind === "ok") break;
            assert.ok(tries < 20, `DEL of ${l.pod.containerId} failed ${tries} times: ${out.msg}`);
            await sleep(100);
          }
        });
        live.length = 0;
        await waitFor(
          "the sweep to leave at most the spare block",
          async () => surplusEmptyBlocks(await readIpamState(client, prefix), node.name).length === 0,
        );
        const end = await readIpamState(client, prefix);
        history.final({ keys: end.addresses, veths: await node.taggedVeths() });
        const report = assertHistory(history, "etcd nospace");
        const d = compare(end, []);
        const okAdds = history.calls.filter((c) => c.verb === "ADD" && c.result.status === "ok");
        const slowestOk = Math.round(Math.max(...okAdds.map((c) => c.end - c.start)));
        const parts = [
          `${ROUNDS} rounds, ${report.calls} calls`,
          `filler puts to NOSPACE ${figures.fillPuts.join(", ")}`,
          `ADDs answered 11 naming NOSPACE ${figures.addsRefused} (other answers ${figures.addsOther.length})`,
          `DELs that released under the alarm ${figures.delsReleased}`,
          `GC releases ${figures.gcReleased}`,
          `blocks released under the alarm ${figures.blocksReleased}`,
          `slowest answer under the alarm: ADD ${Math.round(figures.slowestAdd)} ms, ` +
          `DEL ${Math.round(figures.slowestDel)} ms (slowest successful ADD ${slowestOk} ms)`,
          `disarm to first successful ADD ${figures.disarmToAddMs.join(", ")} ms`,
          `duplicates 0, lost 0, leaked 0 in ${figures.comparisons} comparisons of etcd with the runtime`,
          `left after the last DELs: ${d.leaked.length} address keys`,
          `history violations ${report.violations.length}`,
        ];
        console.log(`etcd nospace figures: ${parts.join("; ")}`);
      },
    );
  } finally {
    client.close();
    for (const ns of podNetns) await Promise.resolve(ns[Symbol.asyncDispose]()).catch(() => {});
  }
});

function assertOk(out: CallOutcome, what: string): void {
  assert.equal(out.kind, "ok", `${what}: ${out.cniCode} ${out.msg}`);
}

async function assertConsistent(client: Etcd3, prefix: string, live: Live[], node: CoildNode): Promise<void> {
  assertAgrees(compare(await readIpamState(client, prefix), holdersOf(live)), "", node.logTail());
}

/** The message of the last ADD the history saw refused. */
function lastRefusal(history: History): string {
  const call = history.calls.findLast((c) => c.verb === "ADD" && c.result.status !== "ok");
  return call && call.result.status !== "ok" ? call.result.msg : "";
}

/** coild's /readyz, fetched inside the node's netns where it listens. */
async function readyzOf(node: CoildNode): Promise<{ code: number; body: string }> {
  const out = await node.netns.exec([
    "curl",
    "-s",
    "-m",
    "5",
    "-w",
    "\n%{http_code}",
    `http://${METRICS_ADDRESS}/readyz`,
  ]);
  const cut = out.lastIndexOf("\n");
  return { code: Number(out.slice(cut + 1)), body: out.slice(0, cut) };
}

/** Polls `probe` every 200 ms until it gives a truthy value. @throws {Error} after CONVERGE_MS. */
async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>): Promise<T> {
  const deadline = performance.now() + CONVERGE_MS;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (performance.now() > deadline) throw new Error(`Waited ${CONVERGE_MS} ms for ${what}`);
    await sleep(200);
  }
}

function range(n: number): number[] {
  return Array.from({ length: Math.max(0, n) }, (_, i) => i);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
