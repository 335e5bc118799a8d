// Routes in the fabric with aggregated export: the 2-node BIRD lab (scripts/lab) gets N pods per node
// through CNI ADD, and the router's table (routes BIRD learned over BGP) is counted once BGP converged,
// next to the baseline of one route per block (Coil v1/v2 and Calico), counted from etcd's blocks.

import { heldBlocks } from "../../scripts/lab.d/coil.ts";
import { learnedRoutes, waitConverged } from "../../scripts/lab.d/bgp_state.ts";
import { planLab } from "../../scripts/lab.d/plan.ts";
import { addPods, morePods } from "../../scripts/lab.d/pods.ts";
import { loadState } from "../../scripts/lab.d/state.ts";
import type { BenchContext, Benchmark } from "./_bench.ts";
import { birdInstalled, lab } from "./_lab.ts";

export const benchmark: Benchmark = {
  name: "aggregation",
  description: "router routes for N pods on 2 nodes: aggregated export vs one route per block (BIRD lab)",
  run,
};

async function run(ctx: BenchContext): Promise<void> {
  if (!await birdInstalled()) {
    ctx.info("skipped: BIRD 2 is not installed (scripts/setup installs bird2)");
    return;
  }
  // Pods per node after each step: the lab grows through these totals.
  const steps = ctx.quick ? [10, 40] : [30, 100, 250];
  const name = `agg${crypto.randomUUID().replaceAll("-", "").slice(0, 6)}`;
  const plan = planLab({ name, nodes: 2, pods: 0, dualStack: true, coil: true });
  ctx.info(`bringing up lab "${name}" (router, 2 nodes, dual stack, BIRD, etcd, coild)`);
  try {
    await lab(["up", "--name", name, "--nodes", "2", "--pods", "0", "--dual-stack"]);
    let perNode = 0;
    ctx.info("pods per node | blocks (both nodes, both families) | router routes | per node");
    for (const target of steps) {
      for (const node of plan.nodes) {
        const loaded = await loadState(name);
        if (!loaded) throw new Error(`Lab "${name}" has no state`);
        await addPods(
          plan,
          loaded.state,
          morePods(plan, loaded.state, node.name, target - perNode, "default"),
        );
      }
      perNode = target;
      await waitConverged(plan);
      const routes = (await learnedRoutes(plan, plan.router.netns)).length;
      const blocks = (await Promise.all(plan.nodes.map((n) => heldBlocks(plan, n.name)))).map((b) =>
        b.length
      );
      const total = blocks.reduce((a, b) => a + b, 0);
      ctx.info(
        `${String(target).padStart(13)} | ${String(total).padStart(34)} | ${String(routes).padStart(13)} | ` +
          `blocks ${blocks.join(" + ")}`,
      );
      ctx.report({
        name: `router routes for ${target} pods on each of 2 nodes (IPv4 + IPv6)`,
        value: routes,
        unit: "count",
        baseline: { name: "one route per block", value: total },
        note: `${total} blocks held; aggregated into ${routes} prefixes`,
      });
    }
  } finally {
    await lab(["down", "--name", name]).catch((err) => ctx.info(`lab down failed: ${err.message}`));
  }
}
