// The lab's BGP part with real BIRD 2, etcd and namespaces: `scripts/lab up --no-coil` writes block
// routes into table 119 as coild will, and the blocks must reach the router and the other nodes, once,
// never come back to their owner, and disappear when withdrawn.

import assert from "node:assert/strict";
import { learnedRoutes } from "../../scripts/lab.d/bgp_state.ts";
import { birdc, renderNodeConfig, renderRouterConfig } from "../../scripts/lab.d/bird.ts";
import { startEtcd } from "../../scripts/lab.d/etcd.ts";
import { type LabOptions, type LabPlan, planLab } from "../../scripts/lab.d/plan.ts";
import { isAlive, netnsPids } from "../../scripts/lab.d/processes.ts";
import { ip, poll, routes, run } from "../../scripts/lab.d/run.ts";
import { addBlockRoute, deleteBlockRoute } from "../../scripts/lab.d/static_pods.ts";
import { createTopology, listLabNetns } from "../../scripts/lab.d/topology.ts";
import { lab, labName, withLab } from "./lab_fixture.ts";

const CONVERGE_MS = 30_000;

function upArgs(options: Omit<LabOptions, "name" | "coil">): string[] {
  const args = ["up", "--no-coil", "--nodes", String(options.nodes), "--pods", String(options.pods)];
  return options.dualStack ? [...args, "--dual-stack"] : args;
}

async function learnedAt(plan: LabPlan, netns: string): Promise<string[]> {
  return (await learnedRoutes(plan, netns)).map((r) => r.dst).sort();
}

function waitUntil(what: string, check: () => Promise<boolean>): Promise<true> {
  return poll(what, CONVERGE_MS, async () => await check() ? true : undefined);
}

Deno.test("renderNodeConfig() and renderRouterConfig() fill the samples into configs BIRD accepts", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-bird-" });
  try {
    for (const dualStack of [false, true]) {
      await t.step(dualStack ? "dual stack" : "IPv4 only", async () => {
        const plan = planLab({ name: labName(), nodes: 3, pods: 0, dualStack, coil: false }, dir);
        const configs = [await renderRouterConfig(plan), await renderNodeConfig(plan, plan.nodes[2])];
        for (const [i, config] of configs.entries()) {
          assert.doesNotMatch(config, /^[^#\n]*__[A-Z0-9_]+__/m, "a placeholder was left unfilled");
          assert.doesNotMatch(config, /^\s*# (>>>|<<<) /m, "a section marker was left in");
          assert.equal(config.includes("ipv6 table bgp6") || config.includes("COIL_POOLS6"), dualStack);
          const file = `${dir}/bird-${i}.conf`;
          await Deno.writeTextFile(file, config);
          // bird -p parses the config and exits: BIRD itself judges the syntax.
          const out = await run("bird", ["-p", "-c", file], { check: false });
          assert.equal(out.code, 0, `bird rejected config ${i}: ${out.stderr}\n${config}`);
        }
        assert.match(
          configs[0],
          /protocol bgp node3 from coil_node4 \{\n\s+neighbor 10\.255\.3\.1 as 64603;/,
        );
        assert.match(configs[1], /local 10\.255\.3\.1 as 64603;\n\s+neighbor 10\.255\.3\.0 as 64600;/);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("up() --no-coil spreads every block over BGP, once, and never back to its owner", async (t) => {
  await withLab(upArgs({ nodes: 3, pods: 1, dualStack: false }), async (plan) => {
    const [node1, node2, node3] = plan.nodes;
    const allBlocks = plan.nodes.flatMap((n) => n.staticBlocks).sort();

    await t.step("the router learns exactly one route per block", async () => {
      assert.deepEqual(await learnedAt(plan, plan.router.netns), allBlocks);
      const count = await birdc(plan.router.birdSocket, ["show", "route", "count"]);
      assert.match(count, /\b3 of 3 routes for 3 networks in table master4/);
    });

    await t.step("node2's main table gets node1's block via the router", async () => {
      const found = await routes(node2.netns, 4, "main", [node1.staticBlocks[0]]);
      assert.equal(found.length, 1);
      assert.equal(found[0].gateway, node2.uplink.router4);
      assert.deepEqual(
        await learnedAt(plan, node2.netns),
        [...node1.staticBlocks, ...node3.staticBlocks].sort(),
      );
    });

    await t.step("node1's main table does not get its own block back", async () => {
      assert.deepEqual(await routes(node1.netns, 4, "main", [node1.staticBlocks[0]]), []);
      assert.deepEqual(
        await learnedAt(plan, node1.netns),
        [...node2.staticBlocks, ...node3.staticBlocks].sort(),
      );
    });

    await t.step("a table 119 route without proto 30 is not advertised", async () => {
      await ip(node1.netns, [
        "route",
        "add",
        "10.100.99.0/27",
        "dev",
        "lo",
        "proto",
        "static",
        "table",
        "119",
      ]);
      // A proto 30 marker added after it: once the marker has arrived, BIRD has scanned past the other.
      await addBlockRoute(node1.netns, "10.100.1.32/27");
      await waitUntil(
        "the marker block reaching node2",
        async () => (await learnedAt(plan, node2.netns)).includes("10.100.1.32/27"),
      );
      assert.ok(!(await learnedAt(plan, plan.router.netns)).includes("10.100.99.0/27"));
      assert.ok(!(await learnedAt(plan, node2.netns)).includes("10.100.99.0/27"));
    });

    await t.step(
      "withdrawing a block in table 119 removes it from the router and the other nodes",
      async () => {
        await deleteBlockRoute(node1.netns, node1.staticBlocks[0]);
        await waitUntil("the withdrawn block leaving node2, node3 and the router", async () => {
          for (const netns of [node2.netns, node3.netns, plan.router.netns]) {
            if ((await learnedAt(plan, netns)).includes(node1.staticBlocks[0])) return false;
          }
          return true;
        });
        assert.ok((await learnedAt(plan, node3.netns)).includes("10.100.1.32/27"), "the other block stays");
        await addBlockRoute(node1.netns, node1.staticBlocks[0]);
        await waitUntil(
          "the re-added block reaching node3",
          async () => (await learnedAt(plan, node3.netns)).includes(node1.staticBlocks[0]),
        );
      },
    );

    await t.step("ping reaches every pod on the other nodes through the router", async () => {
      const out = await lab(["ping", "--name", plan.options.name]);
      assert.match(out, /^6\/6 pings succeeded$/m);
    });

    await t.step("status lists each pod with its block and the router's routes", async () => {
      const out = await lab(["status", "--name", plan.options.name]);
      assert.match(out, /default\/pod-node2-1\s+node2\s+10\.100\.2\.1\s+10\.100\.2\.0\/27/);
      assert.match(out, /node3\s+Established/);
      assert.match(out, /10\.100\.3\.0\/27\s+unicast \[node3 /);
    });

    await t.step("up on an existing lab first takes it down", async () => {
      await lab(["up", "--no-coil", "--name", plan.options.name, "--nodes", "2", "--pods", "0"]);
      const names = await listLabNetns(plan.options.name);
      assert.deepEqual(names, [plan.mgmt.netns, node1.netns, node2.netns, plan.router.netns].sort());
    });
  });
});

Deno.test("up() --no-coil --dual-stack spreads IPv6 blocks over the IPv6 sessions", async (t) => {
  await withLab(upArgs({ nodes: 2, pods: 1, dualStack: true }), async (plan) => {
    const [node1, node2] = plan.nodes;
    await t.step("node2 learns node1's IPv6 block via the router's link address", async () => {
      const found = await routes(node2.netns, 6, "main", [node1.staticBlocks[1]]);
      assert.equal(found.length, 1);
      assert.equal(found[0].gateway, node2.uplink.router6);
      assert.deepEqual(await routes(node1.netns, 6, "main", [node1.staticBlocks[1]]), []);
    });
    await t.step("ping works over both families", async () => {
      const out = await lab(["ping", "--name", plan.options.name]);
      assert.match(out, /^4\/4 pings succeeded$/m);
    });
  });
});

Deno.test("down() removes a half-built lab and is idempotent", async () => {
  const name = labName();
  const plan = planLab({ name, nodes: 2, pods: 0, dualStack: false, coil: false });
  try {
    // The start of an `up` that stopped after etcd: namespaces, links and a running process.
    await Deno.mkdir(plan.stateDir, { recursive: true });
    await createTopology(plan);
    await startEtcd(plan);
    const pids = await netnsPids(plan.mgmt.netns);
    assert.equal(pids.length, 1);
    await lab(["down", "--name", name]);
    assert.deepEqual(await listLabNetns(name), []);
    assert.equal(await isAlive(pids[0]), false);
    await assert.rejects(Deno.stat(plan.stateDir), Deno.errors.NotFound);
    const again = await lab(["down", "--name", name]);
    assert.match(again, /stopped 0 process\(es\), deleted 0 namespace\(s\)/);
  } finally {
    await lab(["down", "--name", name]);
  }
});
