// BGP propagation in the lab (scripts/lab: real BIRD 2, router and 2 nodes running coild): from the
// start of the ADD that makes node1 claim a new block (synchronously, or as the background spare) to
// that block's route in node2's main table; next to a route written into node1's table 119 by hand,
// which measures BIRD and BGP alone.

import type { AddRequest } from "../../cni/api.ts";
import { callCoild } from "../../cni/client.ts";
import { linkByName } from "../../netlink/link.ts";
import { closeNetns, openNetns } from "../../netlink/netns.ts";
import { routeAdd, routeDel, routeDump } from "../../netlink/route.ts";
import { NetlinkSocket } from "../../netlink/socket.ts";
import { RTPROT_BIRD } from "../../scripts/lab.d/bgp_state.ts";
import { EXPORT_TABLE_ID, planLab, PROTOCOL_ID } from "../../scripts/lab.d/plan.ts";
import { type BenchContext, type Benchmark, iterations } from "./_bench.ts";
import { birdInstalled, lab } from "./_lab.ts";
import { median, summarize } from "./_stats.ts";

export const benchmark: Benchmark = {
  name: "bgp-propagation",
  description: "ADD claiming a new block → route in the other node's main table (2-node BIRD lab)",
  run,
};

const MAIN_TABLE = 254;
/** The pause after each ADD: a block first seen in table 119 within it is that ADD's (claims take ms). */
const CLAIM_LOOK_MS = 30;
const LEARN_TIMEOUT_MS = 30_000;
/** Sent ADDs stop here even without enough samples (a /27 pool block takes ~32 ADDs). */
const MAX_ADDS = 2000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A netlink socket inside a lab namespace; dispose closes it. */
function socketIn(netns: string): NetlinkSocket {
  const fd = openNetns(`/var/run/netns/${netns}`);
  try {
    return new NetlinkSocket({ netnsFd: fd });
  } finally {
    closeNetns(fd);
  }
}

async function run(ctx: BenchContext): Promise<void> {
  if (!await birdInstalled()) {
    ctx.info("skipped: BIRD 2 is not installed (scripts/setup installs bird2)");
    return;
  }
  const want = iterations(ctx, 20, 3);
  const name = `bench${crypto.randomUUID().replaceAll("-", "").slice(0, 6)}`;
  const plan = planLab({ name, nodes: 2, pods: 0, dualStack: false, coil: true });
  const [node1, node2] = plan.nodes;
  ctx.info(`bringing up lab "${name}" (router, 2 nodes, BIRD, etcd, coild)`);
  try {
    await lab(["up", "--name", name, "--nodes", "2", "--pods", "0"]);
    using exporting = socketIn(node1.netns);
    using learning = socketIn(node2.netns);
    const exported = () =>
      routeDump(exporting, { family: 4, table: EXPORT_TABLE_ID, protocol: PROTOCOL_ID }).map((r) => r.dst);
    const learned = () =>
      routeDump(learning, { family: 4, table: MAIN_TABLE, protocol: RTPROT_BIRD }).map((r) => r.dst);
    // Both tables are dumped about every millisecond from before the first ADD on, recording when each
    // route was first seen: node2's learning is timed on its own, not only after node1 was looked at.
    const seenExported = new Map<string, number>(exported().map((dst) => [dst, 0]));
    const seenLearned = new Map<string, number>(learned().map((dst) => [dst, 0]));
    let polling = true;
    let polls = 0;
    const pollingSince = performance.now();
    const poller = (async () => {
      while (polling) {
        const now = performance.now();
        polls++;
        for (const dst of exported()) if (!seenExported.has(dst)) seenExported.set(dst, now);
        const present = new Set(learned());
        for (const dst of present) if (!seenLearned.has(dst)) seenLearned.set(dst, now);
        // A withdrawn route is forgotten, so that it can be timed again.
        for (const dst of seenLearned.keys()) if (!present.has(dst)) seenLearned.delete(dst);
        await sleep(1);
      }
    })();
    const waitFor = async (what: string, check: () => boolean) => {
      const deadline = performance.now() + LEARN_TIMEOUT_MS;
      while (!check()) {
        if (performance.now() > deadline) {
          throw new Error(`${what} did not happen within ${LEARN_TIMEOUT_MS} ms`);
        }
        await sleep(1);
      }
    };
    const lo = linkByName(exporting, "lo")!.index;

    const coil: { total: number; toReply: number; toExport: number; toLearned: number }[] = [];
    const byHand: number[] = [];
    const measured = new Set(seenExported.keys());
    // BIRD and BGP alone: a /32 of the lab's dmz pool range (the router accepts it) in table 119 by hand.
    const handRoute = async (k: number) => {
      const route = { dst: `10.200.0.${k + 1}/32`, oif: lo, table: EXPORT_TABLE_ID, protocol: PROTOCOL_ID };
      measured.add(route.dst); // not a block of coild's
      const started = performance.now();
      routeAdd(exporting, route);
      await waitFor(`node2 learning ${route.dst}`, () => seenLearned.has(route.dst));
      byHand.push(seenLearned.get(route.dst)! - started);
      try {
        routeDel(exporting, route);
      } catch { /* coild's exporter removed it already: table 119 is its own */ }
      await waitFor(`node2 forgetting ${route.dst}`, () => !seenLearned.has(route.dst));
    };

    try {
      for (let i = 0; coil.length < want && i < MAX_ADDS; i++) {
        const start = performance.now();
        const request: AddRequest = {
          verb: "add",
          mode: "ipam",
          network: "bench",
          containerId: `bgp-${i}`,
          ifName: "eth0",
          netns: "",
          podNamespace: "default",
          podName: `bgp-${i}`,
          podUid: "",
          mtu: 0,
          hostRouteTable: 0,
        };
        await callCoild(node1.coildSocket, request, 30_000);
        const replied = performance.now();
        // The next ADD waits, so that a block first seen now belongs to this one.
        await sleep(CLAIM_LOOK_MS);
        const fresh = [...seenExported.keys()].filter((dst) => !measured.has(dst));
        for (const dst of fresh) {
          measured.add(dst);
          await waitFor(`node2 learning ${dst}`, () => seenLearned.has(dst));
          const exportedAt = seenExported.get(dst)!;
          const learnedAt = seenLearned.get(dst)!;
          coil.push({
            total: learnedAt - start,
            toReply: replied - start,
            toExport: exportedAt - start,
            toLearned: learnedAt - exportedAt,
          });
        }
        // Interleaved: one hand-written route after each measured block, while no claim is in flight.
        if (fresh.length) await handRoute(byHand.length);
      }
    } finally {
      polling = false;
      await poller;
    }
    const pollPeriod = (performance.now() - pollingSince) / polls;
    if (coil.length < want) throw new Error(`Only ${coil.length} new blocks after ${MAX_ADDS} ADDs`);
    const total = summarize(coil.map((c) => c.total));
    ctx.info(
      `${coil.length} blocks claimed on node1 (the first by an ADD itself, the rest as spares an ADD started)`,
    );
    ctx.report({
      name: "ADD → new block's route in node2's main table, median",
      value: total.median,
      unit: "ms",
      baseline: { name: "route written into table 119 by hand", value: median(byHand) },
      note: `ADD's reply ${median(coil.map((c) => c.toReply)).toFixed(1)} ms, ` +
        `ADD start → table 119 on node1 ${median(coil.map((c) => c.toExport)).toFixed(1)} ms, ` +
        `table 119 → node2 main ${median(coil.map((c) => c.toLearned)).toFixed(1)} ms (medians); ` +
        `p90 ${total.p90.toFixed(0)} ms, max ${total.max.toFixed(0)} ms; ` +
        `resolution: both tables dumped every ${pollPeriod.toFixed(1)} ms on average`,
    });
  } finally {
    await lab(["down", "--name", name]).catch((err) => ctx.info(`lab down failed: ${err.message}`));
  }
}
