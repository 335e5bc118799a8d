// The seed's architecture, live: `scripts/lab` with coild on every node, CNI pods, etcd and BIRD 2.
// Pods reach each other across nodes over IPv4 and IPv6, the router holds one route per run of claimed
// blocks (etcd's blocks aggregated, as each node's table 119 says), an emptied block splits its
// aggregate and is never covered again, a block moving between nodes keeps every pod reachable, and a
// coild restart is invisible to BGP and to the pods.

import assert from "node:assert/strict";
import { aggregate } from "../../ipam/aggregate.ts";
import { formatCidr, formatIp, parseCidr } from "../../ipam/cidr.ts";
import { exportedBlocks, learnedRoutes, routerRoutesByNode } from "../../scripts/lab.d/bgp_state.ts";
import { birdRoutes } from "../../scripts/lab.d/bird.ts";
import { addressHolder, heldBlocks } from "../../scripts/lab.d/coil.ts";
import { restartCoild } from "../../scripts/lab.d/coild.ts";
import type { LabPlan, NodePlan } from "../../scripts/lab.d/plan.ts";
import { pingAll } from "../../scripts/lab.d/ping.ts";
import { addPods, deletePods, morePods } from "../../scripts/lab.d/pods.ts";
import { poll, routes, run } from "../../scripts/lab.d/run.ts";
import { type LabState, loadState, type PodState } from "../../scripts/lab.d/state.ts";
import { blockHolding } from "../../scripts/lab.d/status.ts";
import { LAB, lab, labName, withLab } from "./lab_fixture.ts";

/** BGP converges in seconds; the machine is shared, so allow much more. */
const CONVERGE_MS = 60_000;

/**
 * One node's blocks as each party sees them, sorted: etcd's blocks and their aggregate (what the node
 * must export), its table 119, and the router.
 */
interface BlockViews {
  blocks: string[];
  etcd: string[];
  exported: string[];
  atRouter: string[];
}

async function blockViews(plan: LabPlan): Promise<Map<string, BlockViews>> {
  const atRouter = await routerRoutesByNode(plan);
  const views = new Map<string, BlockViews>();
  for (const node of plan.nodes) {
    const blocks = (await heldBlocks(plan, node.name)).map((b) => b.block).sort();
    views.set(node.name, {
      blocks,
      etcd: aggregate(blocks.map((b) => parseCidr(b))).map(formatCidr).sort(),
      exported: (await exportedBlocks(plan, node)).sort(),
      atRouter: (atRouter.get(node.name) ?? []).sort(),
    });
  }
  return views;
}

// Waits until, for every node, etcd (aggregated), its table 119 and the router name the same prefixes,
// and every other node learned them; returns the views. The timeout error shows the last disagreement.
function waitBlocksAgree(plan: LabPlan): Promise<Map<string, BlockViews>> {
  return poll("etcd, table 119 and the router agreeing on every block", CONVERGE_MS, async () => {
    const views = await blockViews(plan);
    for (const [name, view] of views) {
      assert.deepEqual(view.exported, view.etcd, `${name}: table 119 differs from etcd`);
      assert.deepEqual(view.atRouter, view.etcd, `${name}: the router's routes differ from etcd`);
      for (const other of plan.nodes.filter((n) => n.name !== name)) {
        const learned = (await learnedRoutes(plan, other.netns)).map((r) => r.dst);
        const missing = view.etcd.filter((block) => !learned.includes(block));
        assert.deepEqual(missing, [], `${other.name} did not learn ${name}'s blocks`);
      }
    }
    return views;
  });
}

function nodeNamed(plan: LabPlan, name: string): NodePlan {
  return plan.nodes.find((n) => n.name === name)!;
}

async function currentState(plan: LabPlan): Promise<LabState> {
  const loaded = await loadState(plan.options.name);
  assert.ok(loaded, "lab.json is missing");
  return loaded.state;
}

async function assertAllPingsSucceed(pods: PodState[]): Promise<void> {
  const failed = (await pingAll(pods)).filter((r) => !r.ok);
  assert.deepEqual(failed, [], "some pings failed");
}

Deno.test("main() demo brings up dual-stack coild pods that reach each other across nodes", async (t) => {
  await withLab(["demo"], async (plan, state, output) => {
    const pods = state.pods;

    await t.step("it runs scripts/setup, pings every pod and says how to tear down", () => {
      assert.match(output, /^==> Installing what is missing \(scripts\/setup\)\nsetup: /m);
      // Per node one default pod (IPv4 + IPv6) and one dmz pod (IPv4): the default pod pings the 3
      // addresses on the other node, the dmz pod the 2 IPv4 ones; 5 per node, 10 in all.
      assert.match(output, /^10\/10 pings succeeded$/m);
      const down = `sudo scripts/lab down --name ${plan.options.name}`;
      assert.ok(output.trimEnd().endsWith(`Tear it down with: ${down}`), output);
    });

    await t.step("each pod's address comes from its namespace's pool, as etcd records it", async () => {
      assert.equal(pods.length, 4);
      for (const pod of pods) {
        const families = pod.addresses.map((a) => a.includes(":") ? 6 : 4);
        // The dmz pool is IPv4 only; default is dual stack.
        assert.deepEqual(families, pod.namespace === "dmz" ? [4] : [4, 6], `${pod.name}: ${pod.addresses}`);
        for (const address of pod.addresses) {
          const { block, ...holder } = await addressHolder(plan, address);
          assert.deepEqual(holder, {
            allocated: true,
            pool: pod.namespace,
            blockOwner: pod.node,
            podNamespace: pod.namespace,
            podName: pod.name,
          });
          assert.equal(
            blockHolding(address, [block ?? "0.0.0.0/32"]),
            block,
            `${address} is outside ${block}`,
          );
        }
      }
      const dmz = pods.find((p) => p.namespace === "dmz")!;
      assert.equal(blockHolding(dmz.addresses[0], ["10.200.0.0/24"]), "10.200.0.0/24");
    });

    await t.step("every block reaches the router and the other node, never back to its owner", async () => {
      const views = await waitBlocksAgree(plan);
      for (const pod of pods) {
        const own = views.get(pod.node)!.etcd;
        const node = nodeNamed(plan, pod.node);
        const learnedByOwner = (await learnedRoutes(plan, node.netns)).map((r) => r.dst);
        for (const address of pod.addresses) {
          const block = blockHolding(address, own);
          assert.notEqual(block, "-", `${address} of ${pod.name} is in no block of ${pod.node}`);
          assert.ok(!learnedByOwner.includes(block), `${pod.node} learned its own ${block}`);
        }
      }
    });

    await t.step("IPv6 pings cross nodes too", async () => {
      const results = await pingAll(pods);
      const v6 = results.filter((r) => r.address.includes(":"));
      assert.equal(v6.length, 2, "each default pod pings the other node's default pod over IPv6");
      assert.deepEqual(results.filter((r) => !r.ok), []);
    });

    await t.step("status and ping report the lab as a newcomer reads it", async () => {
      const name = plan.options.name;
      const status = await lab(["status", "--name", name]);
      const dmz = pods.find((p) => p.namespace === "dmz" && p.node === "node2")!;
      assert.match(
        status,
        new RegExp(`dmz/${dmz.name}\\s+node2\\s+${dmz.addresses[0].replaceAll(".", "\\.")}\\s`),
      );
      assert.match(status, /node2_v6\s+Established/);
      const ping = await lab(["ping", "--name", name]);
      assert.match(ping, /^pod-node1-1\s+\.\s+\.\s+ok\s+ok$/m);
      assert.match(ping, /^10\/10 pings succeeded$/m);
    });
  });
});

Deno.test("main() add-pods makes the router hold one route per run of blocks, not one per block", async (t) => {
  await withLab(["up", "--pods", "1"], async (plan) => {
    const [node1, node2] = plan.nodes;

    await t.step(
      "200 more pods on node1 make 7 or 8 blocks in one run, announced as the fewest prefixes (3 or 1)",
      async () => {
        const output = await lab(["add-pods", "node1", "200", "--name", plan.options.name]);
        assert.match(output, /the router holds \d+ route\(s\) for 202 pods in \d+ blocks/);
        assert.match(output, /node1: 201 pods in [78] block\(s\), exported as [1-3] prefix\(es\)/);
        const state = await currentState(plan);
        assert.equal(state.pods.filter((p) => p.node === "node1").length, 201);
        const views = await waitBlocksAgree(plan);
        const { blocks, atRouter } = views.get("node1")!;
        assert.ok(blocks.length === 7 || blocks.length === 8, `node1 has ${blocks.length} blocks: ${blocks}`);
        // One aligned run: as few prefixes as the block count has one bits (7 = 4+2+1 → 3, 8 → 1).
        const fewest = blocks.length.toString(2).replaceAll("0", "").length;
        assert.equal(atRouter.length, fewest, `node1 announces ${atRouter} for ${blocks}`);
        assert.equal(views.get("node2")!.atRouter.length, 1);
        const used = (await heldBlocks(plan, "node1")).reduce((sum, b) => sum + b.addressesUsed, 0);
        assert.equal(used, 201, "etcd holds one address per node1 pod");
      },
    );

    await t.step("node2 learns node1's prefixes via the router and reaches all 201 pods", async () => {
      for (const prefix of (await waitBlocksAgree(plan)).get("node1")!.atRouter) {
        const found = await routes(node2.netns, 4, "main", [prefix]);
        assert.equal(found.length, 1, `node2 has no route to ${prefix}`);
        assert.equal(found[0].gateway, node2.uplink.router4);
      }
      await assertAllPingsSucceed((await currentState(plan)).pods);
    });

    await t.step("deleting every pod of a full block releases it: no route covers it any more", async () => {
      const state = await currentState(plan);
      const held = await heldBlocks(plan, "node1");
      const full = held.reduce((a, b) => a.addressesUsed >= b.addressesUsed ? a : b);
      const victims = state.pods.filter((p) =>
        p.node === "node1" && blockHolding(p.addresses[0], [full.block]) !== "-"
      );
      assert.equal(victims.length, full.addressesUsed);
      // The last DEL empties the block; the pool's other blocks keep a quarter block free, so it goes.
      await deletePods(plan, state, victims);
      const views = await poll(`node1 releasing ${full.block}`, CONVERGE_MS, async () => {
        const now = await waitBlocksAgree(plan);
        return now.get("node1")!.blocks.includes(full.block) ? undefined : now;
      });
      const freedAddress = victims[0].addresses[0];
      assert.equal(
        blockHolding(freedAddress, views.get("node1")!.atRouter),
        "-",
        "the router still covers it",
      );
      assert.equal(blockHolding(freedAddress, await exportedBlocks(plan, node1)), "-", "table 119 covers it");
      const atNode2 = (await learnedRoutes(plan, node2.netns)).map((r) => r.dst);
      assert.equal(blockHolding(freedAddress, atNode2), "-", "node2 still routes it");
      const freed = await addressHolder(plan, freedAddress);
      assert.equal(freed.allocated, false);
      assert.equal(freed.blockOwner, undefined, "the released block has no owner in etcd");
      assert.ok(views.get("node1")!.atRouter.length >= 1, "node1 keeps the block its other pods use");
      await assertAllPingsSucceed((await currentState(plan)).pods);
    });
  });
});

Deno.test("a block moving between nodes stays reachable: its new owner announces it more specifically", async (t) => {
  await withLab(["up", "--pods", "1"], async (plan) => {
    // The dmz pool is a /24 of eight /27 blocks: once it is full, a block node1 releases is the only
    // one node2 can claim.
    const dmzBlocks = async (node: string) =>
      (await heldBlocks(plan, node)).filter((b) => b.pool === "dmz").map((b) => b.block);
    /** One pod per block (per node), so that pings cover every block without pinging all pods. */
    const samplePods = async () => {
      const state = await currentState(plan);
      const views = await waitBlocksAgree(plan);
      const seen = new Set<string>();
      return state.pods.filter((pod) => {
        const block = blockHolding(pod.addresses[0], views.get(pod.node)!.blocks);
        if (seen.has(block)) return false;
        seen.add(block);
        return true;
      });
    };
    const addDmz = async (node: string, count: number) => {
      const state = await currentState(plan);
      await addPods(plan, state, morePods(plan, state, node, count, "dmz"));
    };
    let moved = "";

    await t.step("node1 takes two dmz blocks, node2 fills the rest of the pool", async () => {
      await addDmz("node1", 60);
      for (
        let i = 0;
        i < 8 && (await dmzBlocks("node1")).length + (await dmzBlocks("node2")).length < 8;
        i++
      ) {
        await addDmz("node2", 30);
      }
      assert.equal(
        (await dmzBlocks("node1")).length + (await dmzBlocks("node2")).length,
        8,
        "the dmz pool is full",
      );
      await assertAllPingsSucceed(await samplePods());
    });

    await t.step("node1 empties a block: released, and its aggregate split at the router", async () => {
      const state = await currentState(plan);
      // A block with pods: node1 may still hold an empty spare that its next sweep gives back.
      const podsIn = (block: string) =>
        state.pods.filter((p) => p.node === "node1" && blockHolding(p.addresses[0], [block]) !== "-");
      const block = (await dmzBlocks("node1")).find((b) => podsIn(b).length > 0);
      assert.ok(block, "node1 has a dmz block with pods");
      const victims = podsIn(block);
      await deletePods(plan, state, victims);
      await poll(
        `node1 releasing ${block}`,
        CONVERGE_MS,
        async () => (await dmzBlocks("node1")).includes(block) ? undefined : true,
      );
      const views = await waitBlocksAgree(plan);
      assert.equal(blockHolding(victims[0].addresses[0], views.get("node1")!.atRouter), "-");
      moved = block;
      await assertAllPingsSucceed(await samplePods());
    });

    await t.step(
      "node2 needs a block: it claims the released one, and every pod stays reachable",
      async () => {
        for (let i = 0; i < 4 && !(await dmzBlocks("node2")).includes(moved); i++) await addDmz("node2", 15);
        assert.ok((await dmzBlocks("node2")).includes(moved), `node2 did not claim ${moved}`);
        const views = await waitBlocksAgree(plan);
        const address = formatIp({ family: 4, value: parseCidr(moved).base + 1n });
        assert.notEqual(blockHolding(address, views.get("node2")!.atRouter), "-", "node2 announces it");
        assert.equal(blockHolding(address, views.get("node1")!.atRouter), "-", "node1 no longer does");
        // The router's own forwarding decision, by longest-prefix match over both nodes' routes.
        const [route] = await routes(plan.router.netns, 4, "main", ["match", address]);
        assert.ok(route, `the router has no route for ${address}`);
        const node2 = nodeNamed(plan, "node2");
        const get = await run("ip", ["-n", plan.router.netns, "-j", "route", "get", address]);
        assert.equal(
          JSON.parse(get.stdout)[0].gateway,
          node2.uplink.node4,
          `the router sends ${address} elsewhere`,
        );
        await assertAllPingsSucceed(await samplePods());
      },
    );
  });
});

Deno.test("restartCoild() keeps the node's routes at the router and its pods reachable", async (t) => {
  await withLab(["up", "--pods", "2"], async (plan) => {
    const node1 = nodeNamed(plan, "node1");
    const before = await waitBlocksAgree(plan);
    // node1's exported prefixes.
    const ownBlocks = before.get("node1")!.etcd;
    const birdBefore = (await birdRoutes(plan.router.birdSocket)).filter((r) => ownBlocks.includes(r.prefix));

    await t.step("the router never loses node1's blocks while coild stops and starts", async () => {
      const gaps: string[] = [];
      let samples = 0;
      let restarting = true;
      const watch = (async () => {
        while (restarting) {
          const atRouter = (await learnedRoutes(plan, plan.router.netns)).map((r) => r.dst);
          samples++;
          const missing = ownBlocks.filter((block) => !atRouter.includes(block));
          if (missing.length > 0) gaps.push(missing.join(","));
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      })();
      try {
        await restartCoild(plan, node1);
      } finally {
        restarting = false;
        await watch;
      }
      assert.ok(samples > 0);
      assert.deepEqual(gaps, [], `the router lost node1's blocks in ${gaps.length} of ${samples} samples`);
      // BIRD stamps a route when it is (re)announced: unchanged stamps mean no withdraw went out.
      const birdAfter = (await birdRoutes(plan.router.birdSocket)).filter((r) =>
        ownBlocks.includes(r.prefix)
      );
      assert.deepEqual(birdAfter, birdBefore);
      assert.deepEqual(await waitBlocksAgree(plan), before);
    });

    await t.step("pods on both nodes still reach each other", async () => {
      await assertAllPingsSucceed((await currentState(plan)).pods);
    });

    await t.step(
      "the new coild deletes a pod from before the restart and adds one in the same block",
      async () => {
        const state = await currentState(plan);
        const old = state.pods.find((p) => p.node === "node1" && p.namespace === "default")!;
        await deletePods(plan, state, [old]);
        assert.deepEqual(await routes(node1.netns, 4, "main", [`${old.addresses[0]}/32`]), []);
        assert.equal((await addressHolder(plan, old.addresses[0])).allocated, false);
        const [fresh] = await addPods(plan, state, morePods(plan, state, "node1", 1, "default"));
        const block = blockHolding(fresh.addresses[0], ownBlocks);
        assert.notEqual(block, "-", `${fresh.addresses[0]} is outside node1's blocks ${ownBlocks}`);
        assert.deepEqual(await waitBlocksAgree(plan), before, "no block was claimed or released");
        await assertAllPingsSucceed(state.pods);
      },
    );
  });
});

Deno.test("main() tells a newcomer what is wrong instead of failing obscurely", async (t) => {
  const name = labName();
  await t.step("status of a lab that is not up says how to bring it up", async () => {
    const out = await run(LAB, ["status", "--name", name], { check: false });
    assert.equal(out.code, 1);
    assert.match(
      out.stderr,
      new RegExp(`Lab "${name}" is not up \\(no state\\): run sudo scripts/lab up --name ${name}`),
    );
  });
  await t.step("an unknown command prints the usage and exits 2", async () => {
    const out = await run(LAB, ["start"], { check: false });
    assert.equal(out.code, 2);
    assert.match(out.stderr, /Command "start" is unknown or misused/);
    assert.match(out.stderr, /^ {2}demo {2,}/m);
  });
  await t.step("--help lists every command and exits 0", async () => {
    const out = await run(LAB, ["--help"]);
    for (const command of ["demo", "up", "status", "ping", "add-pods", "del-pods", "down"]) {
      assert.match(out.stdout, new RegExp(`^ {2}${command}\\b`, "m"));
    }
  });
  await t.step("add-pods on an unknown node names the nodes there are", async () => {
    await withLab(["up", "--pods", "0"], async (plan) => {
      const out = await run(LAB, ["add-pods", "node9", "--name", plan.options.name], { check: false });
      assert.equal(out.code, 1);
      assert.match(out.stderr, /Node "node9" is not in lab "t[0-9a-f]+": use node1-node2/);
    });
  });
});
