// coild restarts (clean stop and crash): it rebuilds its state from etcd and the kernel before it opens
// its socket. Pods keep their addresses, a host route deleted by hand comes back, a tagged veth that no
// allocation holds is removed, and a new pod never gets an address a live pod holds.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";
import {
  addPod,
  addressKeys,
  cni,
  createPod,
  logEntries,
  NETWORK,
  startNode,
  type TestNode,
  type TestPod,
} from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

const SUBNETS = ["10.110.0.0/16", "fd00:110::/112"];

interface IpLink {
  ifname: string;
  ifalias?: string;
}

interface IpRoute {
  dst: string;
  dev?: string;
  protocol?: string;
}

async function links(ns: TestNetns): Promise<IpLink[]> {
  return await ns.ipJson<IpLink[]>(["link", "show"]);
}

/** The host veth coild tagged for the pod's eth0. */
async function hostVeth(node: TestNode, pod: TestPod): Promise<string> {
  const link = (await links(node.ns)).find((l) => l.ifalias === `coil:${NETWORK}:${pod.containerId}:eth0`);
  assert.ok(link, `host veth of ${pod.name} exists`);
  return link.ifname;
}

/** Routes to one address in `table` (both families work: the family follows the address). */
async function routesTo(node: TestNode, ip: string, table = "main"): Promise<IpRoute[]> {
  const family = ip.includes(":") ? "-6" : "-4";
  const length = ip.includes(":") ? 128 : 32;
  return await node.ns.ipJson<IpRoute[]>([family, "route", "show", "table", table, `${ip}/${length}`]);
}

async function ping(from: TestNetns, to: string): Promise<void> {
  await from.exec(["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", "10", to]);
}

/** A veth pair in the node, optionally tagged like coild's; returns the host end's name. */
async function addVeth(node: TestNode, alias?: string): Promise<string> {
  const name = `vt${crypto.randomUUID().slice(0, 8)}`;
  await node.ns.exec(["ip", "link", "add", name, "type", "veth", "peer", "name", `${name}p`]);
  if (alias) await node.ns.exec(["ip", "link", "set", "dev", name, "alias", alias]);
  return name;
}

Deno.test("coild restart rebuilds state from etcd and the kernel before serving", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    const stops: [string, (node: TestNode) => Promise<void>][] = [
      ["SIGTERM", (node) => node.stop()],
      ["SIGKILL", (node) => node.kill()],
    ];
    for (const [signal, stop] of stops) {
      await t.step(
        `restart after ${signal} keeps addresses, repairs host routes, removes stale veths`,
        async () => {
          await using node = await startNode({ etcd, client, subnets: SUBNETS });
          await using a = await createPod();
          await using b = await createPod();
          const ipsA = await addPod(node, a);
          const ipsB = await addPod(node, b);
          const vethA = await hostVeth(node, a);
          const before = await addressKeys(client, node);
          assert.equal(before.size, 4, "two pods, dual stack");

          await stop(node);
          // Damage while coild is down: both host routes of pod a, a stale tagged veth, a foreign veth,
          // and the export table.
          for (const ip of ipsA) {
            await node.ns.exec(["ip", ip.includes(":") ? "-6" : "-4", "route", "del", ip]);
            assert.deepEqual(await routesTo(node, ip), [], `route to ${ip} deleted by hand`);
          }
          const stale = await addVeth(node, "coil:ctr-gone-for-good:eth0");
          const foreign = await addVeth(node);
          await node.ns.exec(["ip", "route", "flush", "table", "119"]);

          await node.start();
          for (const ip of ipsA) {
            const routes = await routesTo(node, ip);
            assert.equal(routes.length, 1, `route to ${ip} repaired\n${node.coild.log()}`);
            assert.equal(routes[0].dev, vethA);
            assert.equal(routes[0].protocol, "30");
          }
          const names = (await links(node.ns)).map((l) => l.ifname);
          assert.ok(!names.includes(stale), "the stale tagged veth is removed");
          assert.ok(names.includes(foreign), "an untagged veth is not coild's business");
          const events = logEntries(node.coild).map((e) => e.msg);
          assert.ok(events.includes("stale host veth removed"));
          assert.equal(events.filter((m) => m === "host route repaired").length, 2);
          assert.ok(
            events.indexOf("host route repaired") < events.indexOf("ready"),
            "repairs happen before the socket opens",
          );
          assert.notDeepEqual(
            await node.ns.ipJson(["route", "show", "table", "119"]),
            [],
            "table 119 is synced at start",
          );

          assert.deepEqual(await addressKeys(client, node), before, "etcd still holds both pods' addresses");
          for (const pod of [a, b]) {
            const check = await cni(node, "CHECK", pod);
            assert.equal(check.code, 0, `CHECK ${pod.name} after restart: ${check.stdout}`);
          }
          await using c = await createPod();
          const ipsC = await addPod(node, c);
          for (const ip of ipsC) {
            assert.ok(![...ipsA, ...ipsB].includes(ip), `new pod got ${ip}, which a live pod holds`);
          }
          // Traffic to pod a goes through the repaired host routes.
          await ping(c.ns, ipsA[0]);
          await ping(c.ns, ipsA[1]);
        },
      );
    }

    await t.step("restart with --pod-table-id puts a missing host route back into that table", async () => {
      await using node = await startNode({ etcd, client, subnets: SUBNETS, args: ["--pod-table-id", "116"] });
      await using a = await createPod();
      const [v4] = await addPod(node, a);
      assert.equal((await routesTo(node, v4, "116")).length, 1, "ADD put the host route in table 116");
      await node.stop();
      await node.ns.exec(["ip", "route", "del", v4, "table", "116"]);
      await node.start();
      const routes = await routesTo(node, v4, "116");
      assert.equal(routes.length, 1, `route repaired in table 116\n${node.coild.log()}`);
      assert.equal(routes[0].dev, await hostVeth(node, a));
      assert.deepEqual(await routesTo(node, v4), [], "not in main");
      assert.equal((await cni(node, "CHECK", a, { hostRouteTable: 116 })).code, 0);
    });
    await t.step("SIGTERM keeps table 119, unless --clear-routes-on-shutdown", async () => {
      for (const clear of [false, true]) {
        await using node = await startNode({
          etcd,
          client,
          subnets: SUBNETS,
          args: clear ? ["--clear-routes-on-shutdown"] : [],
        });
        await using pod = await createPod();
        await addPod(node, pod);
        const exported = () => node.ns.ipJson<IpRoute[]>(["route", "show", "table", "119"]);
        assert.notDeepEqual(await exported(), [], "a block is exported while coild runs");
        await node.stop();
        if (clear) assert.deepEqual(await exported(), [], "the flag empties the table on SIGTERM");
        else assert.notDeepEqual(await exported(), [], "BIRD keeps advertising across a restart");
      }
    });
  } finally {
    client.close();
  }
});
