// Main-plugin mode end to end: the coil binary run as a runtime runs it (its own process, inside the
// node's netns) against a real coild and etcd, with pods in throw-away namespaces. Each step checks the
// kernel (`ip -j`), the traffic (ping, IPv4 and IPv6) and the etcd keys.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { Etcd3 } from "etcd3";
import { aggregate } from "../../ipam/aggregate.ts";
import { formatCidr, parseCidr } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { type CniOutcome, runCni } from "../helpers/cni.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";
import {
  createPod,
  NETWORK,
  startNode as startLifecycleNode,
  type TestNode as Node,
  type TestPod as Pod,
} from "./_lifecycle_fixture.ts";
import { inParallel } from "../helpers/in_parallel.ts";

await removeLeftoverNetns();

const VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/** CHECK exists from 0.4.0 on. */
const CHECK_VERSIONS = VERSIONS.filter((v) => v !== "0.3.1");
const SUBNETS = ["10.100.0.0/16", "fd00:100::/112"];
const PROTOCOL = "30";

let etcd: TestEtcd;
let client: Etcd3;

/** A node with pool `default` over SUBNETS; `uplinkMtu` adds a veth uplink as its default route. */
function startNode(
  options: { coildArgs?: string[]; uplinkMtu?: number; uplinkFamily?: 4 | 6 } = {},
): Promise<Node> {
  const { uplinkMtu, uplinkFamily = 4 } = options;
  return startLifecycleNode({
    etcd,
    client,
    subnets: SUBNETS,
    args: options.coildArgs,
    setup: uplinkMtu === undefined ? undefined : async (ns) => {
      await ns.exec([
        "ip",
        "link",
        "add",
        "up0",
        "mtu",
        String(uplinkMtu),
        "type",
        "veth",
        "peer",
        "name",
        "up1",
      ]);
      await ns.exec(["ip", "link", "set", "up0", "up"]);
      await ns.exec(["ip", "link", "set", "up1", "up"]);
      await ns.exec(["ip", `-${uplinkFamily}`, "route", "add", "default", "dev", "up0"]);
    },
  });
}

function expectedVeth(pod: Pod): string {
  return "veth" + createHash("sha1").update(`${pod.namespace}.${pod.name}`).digest("hex").slice(0, 11);
}

function cni(
  node: Node,
  command: "ADD" | "DEL" | "CHECK",
  pod: Pod,
  version: string,
  extra: Record<string, unknown> = {},
  netns: string = pod.path,
): Promise<CniOutcome> {
  return runCni({
    command,
    netconf: { cniVersion: version, name: NETWORK, type: "coil", socket: node.coild.socket, ...extra },
    containerId: pod.containerId,
    netns,
    ifName: "eth0",
    args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};` +
      `K8S_POD_INFRA_CONTAINER_ID=${pod.containerId}`,
    inNetns: node.ns.name,
  });
}

/** ADD that must succeed; returns the result. */
async function add(node: Node, pod: Pod, version: string, extra: Record<string, unknown> = {}) {
  const out = await cni(node, "ADD", pod, version, extra);
  assert.equal(out.code, 0, `ADD ${pod.name} (${version}): ${out.stdout}${out.stderr}\n${node.coild.log()}`);
  assert.ok(out.json, `ADD printed no JSON: ${out.stdout}`);
  return out.json as unknown as AddJson;
}

function expectOk(out: CniOutcome, what: string): void {
  assert.equal(out.code, 0, `${what}: ${out.stdout}${out.stderr}`);
  assert.equal(out.stdout.trim(), "", `${what} prints nothing on success`);
}

interface AddJson {
  cniVersion: string;
  interfaces: { name: string; mac: string; mtu?: number; sandbox?: string }[];
  ips: { address: string; gateway?: string; interface?: number; version?: string }[];
  routes: { dst: string; gw?: string }[];
}

/** The pod's addresses from an ADD result, without the prefix length: [IPv4, IPv6]. */
function podIps(result: AddJson): [string, string] {
  const [v4, v6] = result.ips.map((ip) => ip.address.split("/")[0]);
  return [v4, v6];
}

/** Pings until one reply comes back (at most 10 s). @throws naming the source and destination. */
async function ping(from: TestNetns, to: string): Promise<void> {
  try {
    await from.exec(["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", "10", to]);
  } catch (err) {
    throw new Error(`Ping from ${from.name} to ${to} failed: ${(err as Error).message}`);
  }
}

async function ipJson<T>(ns: TestNetns, args: string[]): Promise<T[]> {
  try {
    return await ns.ipJson<T[]>(args);
  } catch (err) {
    // A table that never held a route of the family does not exist yet: it is empty.
    if (/FIB table does not exist/.test((err as Error).message)) return [];
    throw err;
  }
}

interface IpRoute {
  dst: string;
  dev?: string;
  protocol?: string;
  type?: string;
}

/** Destinations in `table` (both families), host routes written with their length, sorted. */
async function tableDsts(ns: TestNetns, table: number | string, filter: string[] = []): Promise<string[]> {
  const dsts: string[] = [];
  for (const family of [4, 6]) {
    for (
      const r of await ipJson<IpRoute>(ns, [`-${family}`, "route", "show", "table", String(table), ...filter])
    ) {
      dsts.push(r.dst.includes("/") ? r.dst : `${r.dst}/${family === 4 ? 32 : 128}`);
    }
  }
  return dsts.sort();
}

/** The blocks etcd says `node` owns, as CIDRs, sorted. */
async function ownedBlocks(node: Node): Promise<string[]> {
  const entries = await client.getAll().prefix(node.keys.blocks()).strings();
  return Object.entries(entries)
    .filter(([, value]) => JSON.parse(value).node === node.ns.name)
    .map(([key]) => key.slice(key.lastIndexOf("/") + 1).replace("_", "/"))
    .sort();
}

async function addressKeys(node: Node): Promise<Record<string, string>> {
  return await client.getAll().prefix(node.keys.addresses()).strings();
}

/**
 * Waits (at most 30 s) until table 119 lists exactly the blocks etcd gives the node, then asserts it:
 * the background claim of a spare block may still be running when a CNI call returns.
 */
async function assertExportMatchesEtcd(node: Node): Promise<void> {
  let table: string[] = [], blocks: string[] = [], exported: string[] = [];
  for (const deadline = Date.now() + 30_000; Date.now() < deadline;) {
    [table, blocks] = await Promise.all([tableDsts(node.ns, 119), ownedBlocks(node)]);
    // The node's blocks, aggregated (ipam/aggregate.ts has its own exhaustive tests).
    exported = aggregate(blocks.map((b) => parseCidr(b))).map(formatCidr).sort();
    if (JSON.stringify(table) === JSON.stringify(exported)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(blocks.length > 0, "the node owns blocks");
  assert.deepEqual(
    table,
    exported,
    `table 119 holds the node's blocks in etcd, aggregated\n${node.coild.log()}`,
  );
  const routes = [
    ...await ipJson<IpRoute>(node.ns, ["-4", "route", "show", "table", "119"]),
    ...await ipJson<IpRoute>(node.ns, ["-6", "route", "show", "table", "119"]),
  ];
  for (const r of routes) assert.deepEqual([r.dev, r.protocol, r.type], ["lo", PROTOCOL, undefined], r.dst);
}

interface IpLink {
  ifname: string;
  address: string;
  mtu: number;
  operstate: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string };
}

interface IpRule {
  priority: number;
  src?: string;
  table: string;
  protocol?: string;
}

async function rules(ns: TestNetns): Promise<IpRule[]> {
  return [...await ipJson<IpRule>(ns, ["-4", "rule"]), ...await ipJson<IpRule>(ns, ["-6", "rule"])];
}

/** The node's veths once those that a DEL left to the background deletion are gone (at most 30 s). */
async function veths(ns: TestNetns): Promise<string[]> {
  for (const deadline = Date.now() + 30_000;;) {
    const links = await ipJson<IpLink>(ns, ["link", "show", "type", "veth"]);
    const detached = links.some((l) => l.ifalias?.startsWith("coil:/detached:"));
    if (!detached || Date.now() > deadline) return links.map((l) => l.ifname).sort();
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Checks the kernel state of one pod after ADD against its result; returns the host veth. */
async function assertPodWired(node: Node, pod: Pod, result: AddJson, version: string, mtu = 1500) {
  assert.equal(result.cniVersion, version);
  const [hostIf, podIf] = result.interfaces;
  assert.equal(result.interfaces.length, 2);
  const [hostLink] = await ipJson<IpLink>(node.ns, ["link", "show", "dev", expectedVeth(pod)]);
  assert.deepEqual(
    { name: hostIf.name, mac: hostIf.mac, sandbox: hostIf.sandbox },
    { name: expectedVeth(pod), mac: hostLink.address, sandbox: undefined },
  );
  assert.equal(hostLink.ifalias, `coil:${NETWORK}:${pod.containerId}:eth0`);
  assert.equal(hostLink.mtu, mtu);
  const [podLink] = await ipJson<IpLink>(pod.ns, ["link", "show", "dev", "eth0"]);
  assert.deepEqual(
    { name: podIf.name, mac: podIf.mac, sandbox: podIf.sandbox },
    { name: "eth0", mac: podLink.address, sandbox: pod.path },
  );
  assert.equal(podLink.mtu, mtu);
  assert.equal(result.ips.length, 2);
  const [v4, v6] = result.ips;
  assert.match(v4.address, /^10\.100\.\d+\.\d+\/32$/);
  assert.match(v6.address, /^fd00:100::[0-9a-f]+\/128$/);
  assert.deepEqual([v4.gateway, v4.interface, v6.gateway, v6.interface], ["169.254.1.1", 1, "fe80::1", 1]);
  if (version.startsWith("0.")) assert.deepEqual([v4.version, v6.version], ["4", "6"]);
  assert.deepEqual(result.routes, [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }, { dst: "::/0", gw: "fe80::1" }]);
  const [ip4, ip6] = podIps(result);
  const podAddrs = (await ipJson<{ addr_info: { local: string; prefixlen: number }[] }>(
    pod.ns,
    ["addr", "show", "dev", "eth0", "scope", "global"],
  ))[0].addr_info.filter((a) => a.local).map((a) => `${a.local}/${a.prefixlen}`);
  assert.deepEqual(podAddrs.sort(), [`${ip4}/32`, `${ip6}/128`].sort());
  const podDefaults = [
    ...await ipJson<{ gateway: string; dev: string }>(pod.ns, ["-4", "route", "show", "default"]),
    ...await ipJson<{ gateway: string; dev: string }>(pod.ns, ["-6", "route", "show", "default"]),
  ].map((r) => `${r.gateway} ${r.dev}`);
  assert.deepEqual(podDefaults, ["169.254.1.1 eth0", "fe80::1 eth0"]);
  return hostLink;
}

Deno.test("main-plugin mode against a real coild, etcd and kernel", async (t) => {
  etcd = await startEtcd();
  client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    await t.step(
      "runCni() ADD, CHECK and DEL wire 50 dual-stack pods that reach each other and the node",
      async () => {
        await using node = await startNode();
        const rulesBefore = await rules(node.ns);
        const pods: Pod[] = [];
        try {
          for (let i = 0; i < 50; i++) pods.push(await createPod(`web-${i}`, i % 2 ? "default" : "team-a"));
          const version = (i: number) => VERSIONS[i % VERSIONS.length];
          const results: AddJson[] = new Array(pods.length);
          await inParallel(pods, 8, async (pod, i) => {
            results[i] = await add(node, pod, version(i));
          });
          for (const [i, pod] of pods.entries()) await assertPodWired(node, pod, results[i], version(i));
          const all = results.flatMap(podIps);
          assert.equal(new Set(all).size, 100, "every pod has its own addresses");
          // Host routes: one per pod address, in main, to the pod's veth.
          const hostRoutes = await tableDsts(node.ns, "main", ["proto", PROTOCOL]);
          assert.deepEqual(hostRoutes, all.map((ip) => ip.includes(":") ? `${ip}/128` : `${ip}/32`).sort());
          await assertExportMatchesEtcd(node);

          await inParallel(pods, 6, async (pod, i) => {
            const [peer4, peer6] = podIps(results[(i + 1) % pods.length]);
            await ping(pod.ns, "169.254.1.1");
            await ping(pod.ns, "fe80::1%eth0");
            await ping(pod.ns, peer4);
            await ping(pod.ns, peer6);
            const [own4, own6] = podIps(results[i]);
            await ping(node.ns, own4);
            await ping(node.ns, own6);
          });

          await inParallel(pods.filter((_, i) => version(i) !== "0.3.1"), 8, async (pod) => {
            const i = pods.indexOf(pod);
            expectOk(await cni(node, "CHECK", pod, version(i), { prevResult: results[i] }), "CHECK");
          });
          await inParallel(pods, 8, async (pod, i) => {
            expectOk(await cni(node, "DEL", pod, version(i)), `DEL ${pod.name}`);
          });
          assert.deepEqual(await veths(node.ns), [], "no veth is left on the node");
          for (const pod of pods) assert.deepEqual(await veths(pod.ns), [], `no veth is left in ${pod.name}`);
          assert.deepEqual(
            await tableDsts(node.ns, "main", ["proto", PROTOCOL]),
            [],
            "no host route is left",
          );
          assert.deepEqual(await rules(node.ns), rulesBefore, "no ip rule is left");
          assert.deepEqual(await addressKeys(node), {}, "no address key is left in etcd");
          await assertExportMatchesEtcd(node);
        } finally {
          for (const pod of pods) await pod.remove();
        }
      },
    );

    await t.step("runCni() CHECK fails naming the missing piece after a hand edit", async (t) => {
      await using node = await startNode();
      for (const version of CHECK_VERSIONS) {
        await t.step(version, async () => {
          await using pod = await createPod();
          const result = await add(node, pod, version);
          const [ip4, ip6] = podIps(result);
          const check = () => cni(node, "CHECK", pod, version, { prevResult: result });
          expectOk(await check(), "CHECK of a healthy pod");

          const expectFailure = async (pattern: RegExp) => {
            const out = await check();
            assert.notEqual(out.code, 0, `CHECK must fail: ${out.stdout}`);
            const error = out.json as unknown as { code: number; msg: string };
            assert.equal(error.code, 102, out.stdout);
            assert.match(error.msg, pattern);
          };
          await pod.ns.exec(["ip", "addr", "del", `${ip4}/32`, "dev", "eth0"]);
          await expectFailure(new RegExp(`pod address ${ip4.replaceAll(".", "\\.")} .*missing`));
          // A repeated ADD repairs the pod (same addresses, a fresh veth).
          assert.deepEqual(podIps(await add(node, pod, version)), [ip4, ip6]);
          expectOk(await check(), "CHECK after a repeated ADD");

          await pod.ns.exec(["ip", "-6", "addr", "del", `${ip6}/128`, "dev", "eth0"]);
          await expectFailure(new RegExp(`pod address ${ip6} .*missing`));
          await add(node, pod, version);

          await node.ns.exec(["ip", "route", "del", `${ip4}/32`]);
          await expectFailure(new RegExp(`host route ${ip4.replaceAll(".", "\\.")}/32 .*missing`));
          await add(node, pod, version);
          await node.ns.exec(["ip", "-6", "route", "del", `${ip6}/128`]);
          await expectFailure(new RegExp(`host route ${ip6}/128 .*missing`));
          await add(node, pod, version);

          await node.ns.exec(["ip", "link", "set", expectedVeth(pod), "down"]);
          await expectFailure(new RegExp(`host veth "${expectedVeth(pod)}" is down`));
          await add(node, pod, version);

          await pod.ns.exec(["ip", "route", "del", "default"]);
          await expectFailure(/pod default route via 169\.254\.1\.1 is missing/);
          await add(node, pod, version);
          expectOk(await check(), "CHECK after the last repair");
          expectOk(await cni(node, "DEL", pod, version), "DEL");
        });
      }
    });

    await t.step("runCni() DEL succeeds twice, without a netns, and after the netns is gone", async (t) => {
      await using node = await startNode();
      for (const version of VERSIONS) {
        await t.step(version, async () => {
          await using pod = await createPod();
          const result = await add(node, pod, version);
          const [ip4, ip6] = podIps(result);
          const keys = Object.keys(await addressKeys(node));
          assert.equal(keys.length, 2);
          assert.ok(
            keys.some((k) => k.endsWith(`/${ip4}`)) && keys.some((k) => k.endsWith(`/${ip6}`)),
            keys.join(),
          );
          expectOk(await cni(node, "DEL", pod, version), "DEL");
          expectOk(await cni(node, "DEL", pod, version), "second DEL");
          assert.deepEqual(await addressKeys(node), {});
          assert.deepEqual(await veths(node.ns), []);

          // The runtime lost the netns path: DEL comes without CNI_NETNS.
          await add(node, pod, version);
          expectOk(await cni(node, "DEL", pod, version, {}, ""), "DEL without a netns");
          assert.deepEqual(await addressKeys(node), {});
          assert.deepEqual(await veths(node.ns), []);

          // The sandbox died first: the netns (and so the veth pair) is gone when DEL comes.
          await add(node, pod, version);
          assert.equal(Object.keys(await addressKeys(node)).length, 2);
          await pod.remove();
          expectOk(await cni(node, "DEL", pod, version), "DEL after the netns is gone");
          expectOk(await cni(node, "DEL", pod, version), "second DEL after the netns is gone");
          assert.deepEqual(await addressKeys(node), {}, "DEL released the addresses");
          assert.deepEqual(await veths(node.ns), []);
          assert.deepEqual(await tableDsts(node.ns, "main", ["proto", PROTOCOL]), []);
        });
      }
    });

    await t.step("runCni() ADD fails clearly when the netns is gone and keeps no address", async (t) => {
      await using node = await startNode();
      for (const version of VERSIONS) {
        await t.step(version, async () => {
          const pod = await createPod();
          await pod.remove();
          const out = await cni(node, "ADD", pod, version);
          assert.notEqual(out.code, 0);
          const error = out.json as unknown as { code: number; msg: string };
          assert.deepEqual(error.code, 5, out.stdout);
          assert.equal(error.msg, `Pod network namespace "${pod.path}" does not exist`);
          assert.deepEqual(await addressKeys(node), {}, "the address went back");
          assert.deepEqual(await veths(node.ns), []);
          expectOk(await cni(node, "DEL", pod, version), "DEL after the failed ADD");
        });
      }
    });

    await t.step("runCni() ADD replaces a leftover host veth that has the pod's name", async (t) => {
      await using node = await startNode();
      for (const version of VERSIONS) {
        await t.step(version, async () => {
          await using pod = await createPod();
          const name = expectedVeth(pod);
          await node.ns.exec(["ip", "link", "add", name, "type", "veth", "peer", "name", "leftover0"]);
          await node.ns.exec(["ip", "addr", "add", "10.100.255.1/32", "dev", name]);
          const result = await add(node, pod, version);
          await assertPodWired(node, pod, result, version);
          assert.deepEqual(await veths(node.ns), [name], "the leftover pair is gone");
          await ping(pod.ns, "169.254.1.1");
          await ping(pod.ns, "fe80::1%eth0");
          expectOk(await cni(node, "DEL", pod, version), "DEL");
          assert.deepEqual(await veths(node.ns), []);
        });
      }
    });

    await t.step(
      "runCni() ADD gives the pod the netconf mtu, else the default route's device MTU",
      async (t) => {
        for (const family of [4, 6] as const) {
          await t.step(`IPv${family} default route via a device with MTU 1400`, async () => {
            await using node = await startNode({ uplinkMtu: 1400, uplinkFamily: family });
            await using pod = await createPod();
            const result = await add(node, pod, "1.1.0");
            await assertPodWired(node, pod, result, "1.1.0", 1400);
            assert.deepEqual(result.interfaces.map((i) => i.mtu), [1400, 1400]);
            await ping(pod.ns, "169.254.1.1");
            expectOk(await cni(node, "DEL", pod, "1.1.0"), "DEL");

            // The uplink's MTU changes: the next pod follows it.
            await node.ns.exec(["ip", "link", "set", "up0", "mtu", "1380"]);
            await using pod3 = await createPod();
            const result3 = await add(node, pod3, "1.1.0");
            assert.deepEqual(result3.interfaces.map((i) => i.mtu), [1380, 1380]);
            expectOk(await cni(node, "DEL", pod3, "1.1.0"), "DEL");

            await using pod2 = await createPod();
            const result2 = await add(node, pod2, "1.1.0", { mtu: 1300 });
            await assertPodWired(node, pod2, result2, "1.1.0", 1300);
            assert.deepEqual(result2.interfaces.map((i) => i.mtu), [1300, 1300]);
            expectOk(await cni(node, "DEL", pod2, "1.1.0", { mtu: 1300 }), "DEL");
          });
        }
        await t.step("no default route: 1500", async () => {
          await using node = await startNode();
          await using pod = await createPod();
          const result = await add(node, pod, "1.0.0");
          await assertPodWired(node, pod, result, "1.0.0", 1500);
          expectOk(await cni(node, "DEL", pod, "1.0.0"), "DEL");
        });
      },
    );

    await t.step(
      "runCni() with hostRouteTable 116 routes pods through table 116 and an ip rule",
      async (t) => {
        const cases = [
          { label: "netconf hostRouteTable", table: 116, coildArgs: [], extra: { hostRouteTable: 116 } },
          { label: "coild --pod-table-id", table: 117, coildArgs: ["--pod-table-id", "117"], extra: {} },
        ];
        for (const { label, table, coildArgs, extra } of cases) {
          await t.step(label, async () => {
            await using node = await startNode({ coildArgs });
            const rulesBefore = await rules(node.ns);
            await using a = await createPod();
            await using b = await createPod();
            const ra = await add(node, a, "1.1.0", extra);
            const rb = await add(node, b, "1.1.0", extra);
            const ours = (await rules(node.ns)).filter((r) =>
              !rulesBefore.some((x) => JSON.stringify(x) === JSON.stringify(r))
            );
            assert.deepEqual(ours.map((r) => [r.priority, r.src, r.table]), [[2000, "all", String(table)], [
              2000,
              "all",
              String(table),
            ]]);
            const ips = [...podIps(ra), ...podIps(rb)];
            assert.deepEqual(
              await tableDsts(node.ns, table),
              ips.map((ip) => ip.includes(":") ? `${ip}/128` : `${ip}/32`).sort(),
            );
            assert.deepEqual(
              await tableDsts(node.ns, "main", ["proto", PROTOCOL]),
              [],
              "no host route in main",
            );
            for (const [from, to] of [[a, rb], [b, ra]] as const) {
              const [ip4, ip6] = podIps(to);
              await ping(from.ns, ip4);
              await ping(from.ns, ip6);
              await ping(node.ns, ip4);
              await ping(node.ns, ip6);
            }
            expectOk(await cni(node, "CHECK", a, "1.1.0", { ...extra, prevResult: ra }), "CHECK");
            await node.ns.exec(["ip", "route", "del", `${podIps(ra)[0]}/32`, "table", String(table)]);
            const broken = await cni(node, "CHECK", a, "1.1.0", { ...extra, prevResult: ra });
            assert.notEqual(broken.code, 0);
            assert.match((broken.json as { msg: string }).msg, new RegExp(`table ${table} is missing`));
            await add(node, a, "1.1.0", extra);

            expectOk(await cni(node, "DEL", a, "1.1.0", extra), "DEL of the first pod");
            assert.equal(
              (await rules(node.ns)).length,
              rulesBefore.length + 2,
              "the rules stay while a pod uses them",
            );
            await ping(node.ns, podIps(rb)[0]);
            expectOk(await cni(node, "DEL", b, "1.1.0", extra), "DEL of the last pod");
            assert.deepEqual(await rules(node.ns), rulesBefore, "DEL of the last pod removed the rules");
            assert.deepEqual(await tableDsts(node.ns, table), []);
          });
        }
      },
    );

    await t.step("coild repairs table 119 and keeps serving its pods after a restart", async () => {
      await using node = await startNode();
      const pods: Pod[] = [];
      try {
        for (let i = 0; i < 40; i++) pods.push(await createPod());
        const results: AddJson[] = [];
        for (const pod of pods) results.push(await add(node, pod, "1.1.0"));
        await assertExportMatchesEtcd(node);
        const claimed = await ownedBlocks(node);
        // Releases: most pods go, so blocks empty out and are given back.
        for (const pod of pods.splice(0, 35)) {
          expectOk(await cni(node, "DEL", pod, "1.1.0"), "DEL");
          await pod.remove();
        }
        results.splice(0, 35);
        await assertExportMatchesEtcd(node);
        const kept = await ownedBlocks(node);
        assert.ok(claimed.some((b) => !kept.includes(b)), `DELs released a block: ${claimed} → ${kept}`);

        await node.stop();
        const blocks = await ownedBlocks(node);
        const v4 = blocks.find((b) => !b.includes(":"))!;
        const v6 = blocks.find((b) => b.includes(":"))!;
        await node.ns.exec(["ip", "route", "del", v4, "table", "119"]);
        await node.ns.exec(["ip", "-6", "route", "del", v6, "table", "119"]);
        await node.ns.exec([
          "ip",
          "route",
          "add",
          "10.200.0.0/24",
          "dev",
          "lo",
          "table",
          "119",
          "proto",
          PROTOCOL,
        ]);
        await node.ns.exec(["ip", "route", "add", "blackhole", "10.201.0.0/24", "table", "119"]);
        await node.ns.exec(["ip", "-6", "route", "add", "fd00:200::/64", "dev", "lo", "table", "119"]);
        await node.start();
        await assertExportMatchesEtcd(node);

        for (const [i, pod] of pods.entries()) {
          expectOk(
            await cni(node, "CHECK", pod, "1.1.0", { prevResult: results[i] }),
            "CHECK after restart",
          );
          const [peer4, peer6] = podIps(results[(i + 1) % pods.length]);
          await ping(pod.ns, peer4);
          await ping(pod.ns, peer6);
        }
        for (const pod of pods) expectOk(await cni(node, "DEL", pod, "1.1.0"), "DEL after restart");
        assert.deepEqual(await addressKeys(node), {});
        assert.deepEqual(await veths(node.ns), []);
        await assertExportMatchesEtcd(node);
      } finally {
        for (const pod of pods) await pod.remove();
      }
    });
  } finally {
    client.close();
    await etcd.stop();
  }
});
