// Fault campaign: coild against a 3-member etcd cluster. One member (the leader) is killed during an
// ADD load: no duplicate, and ADDs fail with 11 only in a short window that the runtime's retries cover.
// Two members killed (quorum lost): ADD and DEL fail with 11 within a bound, nothing is released
// behind the runtime's back, and ADD works again once quorum returns. Every call goes to the history
// checker (_history.ts), with etcd samples during the member kill. Load: COIL_FAULTS_ETCD_ADDS.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { runCni } from "../helpers/cni.ts";
import { EtcdCluster } from "./_etcd_cluster.ts";
import { assertHistory, History } from "./_history.ts";
import { assertAgrees, compare, holdersOf, readIpamState } from "./_ipam_state.ts";
import { CoildNode } from "./_node.ts";
import { campaignSeed, envCount } from "./_params.ts";
import { seededRandom } from "./_random.ts";
import { sampleEtcd, startSampler } from "./_sampler.ts";
import { type CallOutcome, cniCall, netconfOf, type Network, type Pod } from "./_runtime.ts";

const ADDS = envCount("COIL_FAULTS_ETCD_ADDS", 150);
const WORKERS = 6;
/** An ADD that starts this long after the kill must not fail: the retry window the issue allows. */
const RETRY_WINDOW_MS = 15_000;
/** With quorum lost, ADD must fail with 11 within this. */
const QUORUM_LOSS_BOUND_MS = 15_000;
/** How long ADD may take to work again once quorum is back (a bounded wait, not a timing). */
const RECOVERY_BOUND_MS = 60_000;

interface Attempt {
  command: "ADD" | "DEL";
  containerId: string;
  start: number;
  end: number;
  outcome: CallOutcome;
}

Deno.test("coild over a 3-member etcd cluster rides out a member kill and reports quorum loss as 11", async (t) => {
  const random = seededRandom(campaignSeed("etcd_cluster"));
  console.log(
    `etcd cluster: seed ${random.seed} (replay with COIL_FAULTS_SEED=${random.seed}), ${ADDS} ADDs`,
  );
  await using cluster = await EtcdCluster.start(3);
  const prefix = cluster.first.newPrefix();
  const client = await connectEtcd({ endpoints: cluster.endpoints(), prefix });
  try {
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.65.0.0/16"], blockSizeBits: 4 }),
    );
    await using node = await CoildNode.create({
      etcd: cluster.first,
      prefix,
      args: ["--etcd-endpoints", cluster.unixEndpoints().join(","), "--sweep-interval", "0"],
    });
    const history = new History();
    const net: Network = { name: "quorum", socket: node.socket, history, node: node.name };
    const live: { pod: Pod; ip: string }[] = [];
    const attempts: Attempt[] = [];
    const call = async (command: "ADD" | "DEL", pod: Pod) => {
      const start = Date.now();
      const outcome = await cniCall(net, command, pod);
      attempts.push({ command, containerId: pod.containerId, start, end: Date.now(), outcome });
      return outcome;
    };
    const ipamNetns = node.netns.path; // exists for the whole test; the sweep is off anyway

    await t.step(
      "killing the leader during an ADD load gives no duplicate and a short 11 window",
      async () => {
        // Quorum holds throughout this step, so the samples' reads do not hang.
        await using _sampler = startSampler(history, client, prefix, 250);
        let killedAt = 0;
        let victim = -1;
        let next = 0;
        const worker = async () => {
          while (next < ADDS) {
            const n = next++;
            if (n === Math.floor(ADDS / 3) && killedAt === 0) {
              victim = (await cluster.leader()) ?? 0;
              killedAt = Date.now();
              await cluster.kill(victim);
            }
            const pod = podOf(`load${n}`, ipamNetns);
            live.push({ pod, ip: await addAsRuntime(pod, call, random) });
          }
        };
        await Promise.all(Array.from({ length: WORKERS }, worker));
        const adds = attempts.filter((a) => a.command === "ADD");
        const failed = adds.filter((a) => a.outcome.kind !== "ok");
        const before = failed.filter((a) => a.start < killedAt);
        const late = failed.filter((a) => a.start > killedAt + RETRY_WINDOW_MS);
        const window = failed.length === 0 ? 0 : Math.max(...failed.map((a) => a.end)) - killedAt;
        const perPod = new Map<string, number>();
        for (const a of failed) perPod.set(a.containerId, (perPod.get(a.containerId) ?? 0) + 1);
        const elevens = failed.filter((a) => a.outcome.cniCode === 11).length;
        // ADDs that were in flight at the kill or started in the 5 s after it: what the kill cost them.
        const around = adds.filter((a) => a.end >= killedAt && a.start <= killedAt + 5000);
        const slowest = Math.max(0, ...around.map((a) => a.end - a.start));
        const typical = median(adds.filter((a) => a.end < killedAt).map((a) => a.end - a.start));
        console.log(
          `etcd cluster, leader m${victim} killed after ${Math.floor(ADDS / 3)} of ${ADDS} ADDs: ` +
            `${adds.length} ADD calls, ${failed.length} failed (${elevens} with 11, on ${perPod.size} pods, ` +
            `at most ${Math.max(0, ...perPod.values())} per pod), last failure ended ${window} ms after ` +
            `the kill; ${around.length} ADDs in flight at the kill or started within 5 s, slowest ${slowest} ` +
            `ms (median before the kill ${typical} ms)`,
        );
        assert.deepEqual(describe(before, killedAt), [], "ADDs failed before any member was killed");
        assert.deepEqual(
          describe(failed.filter((a) => a.outcome.cniCode !== 11), killedAt),
          [],
          node.logTail(),
        );
        assert.deepEqual(
          describe(late, killedAt),
          [],
          `ADDs failed later than ${RETRY_WINDOW_MS} ms after the kill`,
        );
        await assertConsistent(client, prefix, live, node);
        await cluster.restart(victim);
        await cluster.waitHealthy(victim);
      },
    );

    await t.step(
      "with quorum lost, ADD and DEL fail with 11 in bounded time and ADD works once it returns",
      async () => {
        const leader = (await cluster.leader()) ?? 0;
        const victims = [leader, (leader + 1) % 3];
        const survivor = live[0];
        for (const i of victims) await cluster.kill(i);
        const lostAt = Date.now();
        const probes = await Promise.all([
          timed(() => call("ADD", podOf("lost-add-1", ipamNetns))),
          timed(() => call("ADD", podOf("lost-add-2", ipamNetns))),
          timed(() => call("DEL", survivor.pod)),
          timed(() => runCni({ command: "STATUS", netconf: netconfOf(net, "main") })),
        ]);
        const [add1, add2, del] = probes.map((p) => p.value as CallOutcome);
        const status = probes[3].value as Awaited<ReturnType<typeof runCni>>;
        console.log(
          `etcd cluster, quorum lost (m${victims[0]} and m${victims[1]} killed): ADD -> ${add1.cniCode} in ` +
            `${probes[0].ms} ms and ${add2.cniCode} in ${probes[1].ms} ms, DEL -> ${del.cniCode} in ` +
            `${probes[2].ms} ms, STATUS -> ${status.json?.code ?? status.code} in ${probes[3].ms} ms`,
        );
        for (const [i, out] of [add1, add2, del].entries()) {
          assert.equal(out.cniCode, 11, `probe ${i}: ${out.msg}\n${node.logTail()}`);
          assert.ok(probes[i].ms <= QUORUM_LOSS_BOUND_MS, `probe ${i} took ${probes[i].ms} ms`);
        }
        assert.equal(status.json?.code, 50, `STATUS with quorum lost: ${status.stdout}`);

        for (const i of victims) await cluster.restart(i);
        const restartedAt = Date.now();
        let recovered = 0;
        let tries = 0;
        const pod = podOf("after-quorum", ipamNetns);
        while (!recovered) {
          assert.ok(
            Date.now() - restartedAt < RECOVERY_BOUND_MS,
            `ADD still fails ${RECOVERY_BOUND_MS} ms later`,
          );
          tries++;
          const out = await call("ADD", pod);
          if (out.kind === "ok") {
            recovered = Date.now();
            live.push({ pod, ip: out.ip! });
          } else {
            assert.equal(out.cniCode, 11, out.msg);
            await call("DEL", pod); // as the runtime does after a failed ADD
            await sleep(250);
          }
        }
        console.log(
          `etcd cluster, quorum back: ADD worked ${recovered - restartedAt} ms after the members restarted ` +
            `(${tries} tries; quorum was lost for ${restartedAt - lostAt} ms)`,
        );
        // The runtime owes a DEL to each ADD that failed, and the DEL that failed: until it is retried,
        // the survivor's address is still held.
        for (const id of ["lost-add-1", "lost-add-2"]) {
          const out = await call("DEL", podOf(id, ipamNetns));
          assert.equal(out.kind, "ok", out.msg);
        }
        await assertConsistent(client, prefix, live, node);
        const retried = await call("DEL", survivor.pod);
        assert.equal(retried.kind, "ok", retried.msg);
        live.splice(live.indexOf(survivor), 1);
        for (const i of victims) await cluster.waitHealthy(i);
        await assertConsistent(client, prefix, live, node);
        await sampleEtcd(history, client, prefix);
      },
    );

    await t.step(
      "after DEL of every pod, the whole history holds no duplicate, lost or leftover address",
      async () => {
        let next = 0;
        const worker = async () => {
          while (next < live.length) {
            const { pod } = live[next++];
            while ((await call("DEL", pod)).kind !== "ok") await sleep(random.between(50, 250));
          }
        };
        await Promise.all(Array.from({ length: WORKERS }, worker));
        history.final({
          keys: (await readIpamState(client, prefix)).addresses,
          veths: await node.taggedVeths(),
        });
        assertHistory(history, "etcd cluster");
      },
    );
  } finally {
    client.close();
  }
});

function podOf(containerId: string, netns: string): Pod {
  return { containerId, ifName: "eth0", namespace: "quorum", name: containerId, mode: "ipam", netns };
}

/** ADD as a runtime does it: on failure DEL (until it works) and try again, at most 50 times. */
async function addAsRuntime(
  pod: Pod,
  call: (command: "ADD" | "DEL", pod: Pod) => Promise<CallOutcome>,
  random: ReturnType<typeof seededRandom>,
): Promise<string> {
  for (let attempt = 1; attempt <= 50; attempt++) {
    const out = await call("ADD", pod);
    if (out.kind === "ok") return out.ip!;
    while ((await call("DEL", pod)).kind !== "ok") await sleep(random.between(50, 250));
    await sleep(random.between(50, 250));
  }
  throw new Error(`ADD of ${pod.containerId} failed 50 times`);
}

async function assertConsistent(
  client: Etcd3,
  prefix: string,
  live: { pod: Pod; ip: string }[],
  node: CoildNode,
): Promise<void> {
  assertAgrees(compare(await readIpamState(client, prefix), holdersOf(live)), "", node.logTail());
}

/** One line per attempt, its start in ms relative to `base`. */
function describe(attempts: Attempt[], base: number): string[] {
  return attempts.map((a) =>
    `${a.command} ${a.containerId} at ${a.start - base} ms: ${a.outcome.cniCode} ${a.outcome.msg}`
  );
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? 0 : sorted[Math.floor(sorted.length / 2)];
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = Date.now();
  const value = await fn();
  return { value, ms: Date.now() - start };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
