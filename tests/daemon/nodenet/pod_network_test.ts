// createPodNetwork() against the kernel (root, throw-away namespaces for the node and its pods), without
// coild or etcd: single-stack pods, the undo of a failed setup, the netns errors, CHECK's findings,
// and which veths destroy() and hostLinks() consider ours.

import assert from "node:assert/strict";
import type { AddRequest, CheckRequest } from "../../../cni/api.ts";
import { blockOf, parseIp } from "../../../ipam/cidr.ts";
import type { Allocation } from "../../../ipam/node_ipam.ts";
import { CODE, DaemonError } from "../../../daemon/errors.ts";
import { LinkDeleter } from "../../../daemon/nodenet/link_deleter.ts";
import { createPodNetwork, type PodNetwork } from "../../../daemon/nodenet/pod_network.ts";
import { aliasOf, hostVethName, isCoilAlias } from "../../../daemon/nodenet/veth_name.ts";
import { isExists } from "../../../netlink/errors.ts";
import { linkSetUp } from "../../../netlink/link.ts";
import { createNetns, openNetnsSocket, removeLeftoverNetns, type TestNetns } from "../../helpers/netns.ts";

await removeLeftoverNetns();

const PROTOCOL = 30;

function allocation(containerId: string, ips: string[]): Allocation {
  return {
    network: "net",
    containerId,
    ifName: "eth0",
    podNamespace: "default",
    podName: `pod-${containerId}`,
    podUid: "",
    netns: "",
    pool: "default",
    node: "node",
    createdAt: new Date(0).toISOString(),
    addresses: ips.map((text) => {
      const ip = parseIp(text);
      return { family: ip.family, address: ip, block: blockOf(ip, ip.family === 4 ? 27 : 123) };
    }),
  };
}

function addRequest(a: Allocation, netns: string, extra: Partial<AddRequest> = {}): AddRequest {
  const { network, containerId, ifName, podNamespace, podName, podUid } = a;
  return {
    verb: "add",
    mode: "main",
    network,
    containerId,
    ifName,
    podNamespace,
    podName,
    podUid,
    netns,
    mtu: 0,
    hostRouteTable: 0,
    ...extra,
  };
}

function checkRequest(req: AddRequest): CheckRequest {
  return { ...req, verb: "check", prevIps: [] };
}

/** A node netns (lo up) with a PodNetwork over a socket inside it. */
async function withNode(
  fn: (node: TestNetns, net: PodNetwork) => Promise<void>,
  defaultHostRouteTable = 0,
): Promise<void> {
  await using node = await createNetns();
  using s = openNetnsSocket(node);
  linkSetUp(s.sock, 1);
  await fn(node, createPodNetwork({ host: s.sock, defaultHostRouteTable, protocol: PROTOCOL }));
}

/** withNode() whose PodNetwork deletes veths in the background, as coild's does. */
async function withDeletingNode(
  fn: (node: TestNetns, net: PodNetwork, deleter: LinkDeleter) => Promise<void>,
): Promise<void> {
  await using node = await createNetns();
  using s = openNetnsSocket(node);
  linkSetUp(s.sock, 1);
  await using deleter = new LinkDeleter({ netnsFd: s.fd, slots: 2, capacity: 4 });
  await fn(
    node,
    createPodNetwork({ host: s.sock, defaultHostRouteTable: 0, protocol: PROTOCOL, deleter }),
    deleter,
  );
}

interface IpLink {
  ifname: string;
  ifindex: number;
  mtu: number;
  flags: string[];
  ifalias?: string;
}

async function hostLink(node: TestNetns, name: string): Promise<IpLink | undefined> {
  const list = await node.ipJson<IpLink[]>(["link", "show"]);
  return list.find((l) => l.ifname === name);
}

/** A pod netns with lo up; disposing it twice is fine (a test may delete it early). */
async function createPod(): Promise<TestNetns> {
  const ns = await createNetns();
  let removed = false;
  const pod: TestNetns = {
    ...ns,
    async [Symbol.asyncDispose]() {
      if (removed) return;
      removed = true;
      await ns[Symbol.asyncDispose]();
    },
  };
  try {
    await pod.exec(["ip", "link", "set", "lo", "up"]);
  } catch (err) {
    await pod[Symbol.asyncDispose]();
    throw err;
  }
  return pod;
}

async function ping(from: TestNetns, to: string): Promise<void> {
  await from.exec(["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", "10", to]);
}

async function links(ns: TestNetns): Promise<string[]> {
  const list = await ns.ipJson<{ ifname: string }[]>(["link", "show"]);
  return list.map((l) => l.ifname).filter((n) => n !== "lo").sort();
}

async function rules(ns: TestNetns): Promise<string> {
  return JSON.stringify([await ns.ipJson(["-4", "rule"]), await ns.ipJson(["-6", "rule"])]);
}

async function routesOf(ns: TestNetns, family: 4 | 6, table = "main"): Promise<string[]> {
  try {
    const routes = await ns.ipJson<{ dst: string; gateway?: string; dev?: string }[]>(
      [`-${family}`, "route", "show", "table", table],
    );
    return routes.map((r) => [r.dst, r.gateway && `via ${r.gateway}`, r.dev].filter(Boolean).join(" "));
  } catch (err) {
    if (/FIB table does not exist/.test((err as Error).message)) return [];
    throw err;
  }
}

function assertDaemonError(fn: () => unknown, code: number, message: RegExp | string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DaemonError, `expected a DaemonError, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (typeof message === "string") assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

/** setup()'s answer to "may this other attachment's veth go?": never (the service decides in coild). */
const replaceNone = () => false;

Deno.test("setup() wires IPv4-only, IPv6-only and dual-stack pods that reach the node and back", async (t) => {
  const cases = [
    { label: "IPv4 only", ips: ["10.1.0.5"] },
    { label: "IPv6 only", ips: ["fd00:1::5"] },
    { label: "dual stack", ips: ["10.1.0.6", "fd00:1::6"] },
  ];
  for (const { label, ips } of cases) {
    await t.step(label, async () => {
      await withNode(async (node, net) => {
        await using pod = await createPod();
        const a = allocation(`c-${label.replaceAll(" ", "-")}`, ips);
        const req = addRequest(a, pod.path);
        const result = net.setup(req, a, replaceNone);
        const name = hostVethName(req);
        assert.deepEqual(result.interfaces.map((i) => [i.name, i.sandbox]), [[name, undefined], [
          "eth0",
          pod.path,
        ]]);
        assert.deepEqual(
          result.ips.map((ip) => [ip.address, ip.gateway]),
          ips.map((ip) => ip.includes(":") ? [`${ip}/128`, "fe80::1"] : [`${ip}/32`, "169.254.1.1"]),
        );
        const has4 = ips.some((ip) => !ip.includes(":"));
        const has6 = ips.some((ip) => ip.includes(":"));
        assert.deepEqual(
          await routesOf(pod, 4),
          has4 ? ["default via 169.254.1.1 eth0", "169.254.1.1 eth0"] : [],
        );
        assert.deepEqual(
          (await routesOf(pod, 6)).filter((r) => r.startsWith("default")),
          has6 ? ["default via fe80::1 eth0"] : [],
        );
        for (const ip of ips) {
          await ping(pod, ip.includes(":") ? "fe80::1%eth0" : "169.254.1.1");
          await ping(node, ip);
        }
        net.check(checkRequest(req), a);
        assert.deepEqual([...net.hostLinks().keys()], [name]);
        net.destroy(req);
        assert.deepEqual(await links(node), []);
        assert.deepEqual(await links(pod), []);
        net.destroy(req);
      });
    });
  }
});

Deno.test("setup() removes its veth and ip rules again when a later step fails", async () => {
  await withNode(async (node, net) => {
    await using pod = await createPod();
    const rulesBefore = await rules(node);
    // A default route the pod already has: setup fails at its last step, adding its own.
    await pod.exec(["ip", "route", "add", "default", "dev", "lo"]);
    const a = allocation("c-fail", ["10.1.0.7", "fd00:1::7"]);
    const req = addRequest(a, pod.path, { hostRouteTable: 116 });
    assert.throws(
      () => net.setup(req, a, replaceNone),
      (err) => isExists(err) && /0\.0\.0\.0\/0/.test(err.message),
    );
    assert.deepEqual(await links(node), [], "no host veth is left");
    assert.deepEqual(await links(pod), [], "no pod interface is left");
    assert.equal(await rules(node), rulesBefore, "no ip rule is left");
    assert.deepEqual(await routesOf(node, 4, "116"), []);
    // Once the obstacle is gone, the same setup succeeds.
    await pod.exec(["ip", "route", "del", "default", "dev", "lo"]);
    net.setup(req, a, replaceNone);
    net.check(checkRequest(req), a);
    assert.notEqual(await rules(node), rulesBefore);
    net.destroy(req);
    assert.equal(await rules(node), rulesBefore);
  });
});

Deno.test("setup() fails with a clear error for a vanished netns or a path that is none", async () => {
  await withNode(async (node, net) => {
    const a = allocation("c-gone", ["10.1.0.8"]);
    const gone = `/var/run/netns/coil-t-${Deno.pid}-gone`;
    assertDaemonError(
      () => net.setup(addRequest(a, gone), a, replaceNone),
      CODE.ioFailure,
      `Pod network namespace "${gone}" does not exist`,
    );
    const file = await Deno.makeTempFile({ prefix: "coil-t-not-netns-" });
    try {
      assertDaemonError(
        () => net.setup(addRequest(a, file), a, replaceNone),
        CODE.ioFailure,
        `Pod network namespace "${file}" is not a network namespace: it is a regular file`,
      );
    } finally {
      await Deno.remove(file);
    }
    assertDaemonError(
      () => net.setup(addRequest(a, ""), a, replaceNone),
      CODE.ioFailure,
      /network namespace "" does not/,
    );
    assert.deepEqual(await links(node), []);
  });
});

Deno.test("check() names what is missing: gateway address, ip rule, the veth of this attachment", async () => {
  await withNode(async (node, net) => {
    await using pod = await createPod();
    const a = allocation("c-check", ["10.1.0.9", "fd00:1::9"]);
    const req = addRequest(a, pod.path, { hostRouteTable: 116 });
    const name = hostVethName(req);
    const check = () => net.check(checkRequest(req), a);
    const repair = () => net.setup(req, a, replaceNone);
    net.setup(req, a, replaceNone);
    check();

    await node.exec(["ip", "addr", "del", "169.254.1.1/32", "dev", name]);
    assertDaemonError(
      check,
      CODE.checkFailed,
      `CHECK failed: gateway address 169.254.1.1/32 on "${name}" is missing`,
    );
    repair();
    await node.exec(["ip", "-6", "addr", "del", "fe80::1/64", "dev", name]);
    assertDaemonError(
      check,
      CODE.checkFailed,
      `CHECK failed: gateway address fe80::1/64 on "${name}" is missing`,
    );
    repair();

    await node.exec(["ip", "-6", "rule", "del", "pref", "2000", "lookup", "116"]);
    assertDaemonError(
      check,
      CODE.checkFailed,
      'CHECK failed: IPv6 rule "lookup 116" for the host routes is missing',
    );
    repair();
    check();

    // The pod was re-created under the same name: the veth now belongs to the new sandbox.
    const newer = { ...a, containerId: "c-check-2" };
    net.setup({ ...req, containerId: "c-check-2" }, newer, () => true);
    assertDaemonError(
      check,
      CODE.checkFailed,
      new RegExp(`host veth "${name}" belongs to another attachment`),
    );
    net.destroy(req);
    assert.deepEqual(await links(node), [name], "destroy() of the old sandbox leaves the new one's veth");
    net.check(checkRequest({ ...req, containerId: "c-check-2" }), newer);
    net.destroy({ ...req, containerId: "c-check-2" });
    assertDaemonError(check, CODE.checkFailed, `CHECK failed: host veth "${name}" is missing`);
  });
});

Deno.test("check() fails when the pod's end or its whole netns is gone but the host veth is not", async () => {
  await withNode(async (node, net) => {
    await using pod = await createPod();
    const a = allocation("c-io", ["10.1.0.10"]);
    const req = addRequest(a, pod.path);
    net.setup(req, a, replaceNone);
    // Move the pod's end out (to the node) so that the pair outlives the pod's netns.
    await pod.exec(["ip", "link", "set", "eth0", "netns", node.name]);
    const check = () => net.check(checkRequest(req), a);
    assertDaemonError(check, CODE.checkFailed, 'CHECK failed: pod interface "eth0" is missing');
    await pod[Symbol.asyncDispose]();
    assertDaemonError(check, CODE.ioFailure, `Pod network namespace "${pod.path}" does not exist`);
    net.destroy(req);
    assert.deepEqual(await links(node), []);
  });
});

Deno.test("destroy() removes only the veth of its own attachment and is idempotent", async () => {
  await withNode(async (node, net) => {
    await using pod = await createPod();
    const a = allocation("c-own", ["10.1.0.11"]);
    const req = addRequest(a, pod.path);
    const name = hostVethName(req);
    net.destroy(req);
    // A veth of that name that nobody tagged (an older tool's leftover) is removed.
    await node.exec(["ip", "link", "add", name, "type", "veth", "peer", "name", "other0"]);
    net.destroy(req);
    assert.deepEqual(await links(node), []);
    // One tagged for another container is not.
    await node.exec(["ip", "link", "add", name, "type", "veth", "peer", "name", "other0"]);
    await node.exec(["ip", "link", "set", name, "alias", "coil:someone-else:eth0"]);
    net.destroy(req);
    assert.deepEqual(await links(node), ["other0", name]);
    await node.exec(["ip", "link", "del", name]);
    net.setup(req, a, replaceNone);
    net.destroy(req);
    net.destroy(req);
    assert.deepEqual(await links(node), []);
  });
});

Deno.test("destroy() with a deleter resolves once the veth is cut off and routeless, then deletes it", async () => {
  await withDeletingNode(async (node, net, deleter) => {
    await using pod = await createPod();
    const a = allocation("c-bg", ["10.1.0.20", "fd00:1::20"]);
    const req = addRequest(a, pod.path, { hostRouteTable: 116 });
    const name = hostVethName(req);
    net.setup(req, a, replaceNone);
    const before = (await hostLink(node, name))!;
    await net.destroy(req);
    // The teardown order's guarantee (teardown.ts): no host route is left when destroy() resolves,
    // whether or not the kernel has unregistered the veth yet.
    for (const family of [4, 6] as const) {
      assert.deepEqual(await routesOf(node, family, "116"), [], `IPv${family} routes in table 116`);
      assert.deepEqual((await routesOf(node, family)).filter((r) => r.endsWith(name)), []);
    }
    const after = await hostLink(node, name);
    if (after) {
      assert.equal(after.ifindex, before.ifindex);
      assert.ok(!after.flags.includes("UP"), "a veth awaiting deletion is down");
      assert.equal(after.ifalias, `coil:/detached:${before.ifindex}`);
    }
    await deleter.idle();
    assert.deepEqual(await links(node), []);
    assert.deepEqual(await links(pod), [], "the pod's end went with it");
  });
});

Deno.test("setup() of the same attachment or address while its old veth awaits deletion gets a new veth", async () => {
  await withDeletingNode(async (node, net, deleter) => {
    // More pods than slots and capacity: later destroy() calls wait for the queue, and the re-ADDs
    // below meet old veths that are still there.
    const pods: TestNetns[] = [];
    const created: TestNetns[] = [];
    const newPod = async () => {
      const pod = await createPod();
      created.push(pod);
      return pod;
    };
    try {
      for (let i = 0; i < 9; i++) pods.push(await newPod());
      const first = pods.map((pod, i) => {
        const a = allocation(`c-re-${i}`, [`10.1.0.${30 + i}`]);
        net.setup(addRequest(a, pod.path), a, replaceNone);
        return a;
      });
      const seenOld: string[] = [];
      const takers = new Map<number, Allocation>();
      await Promise.all(first.map(async (a, i) => {
        await net.destroy(addRequest(a, pods[i].path));
        const name = hostVethName(addRequest(a, ""));
        if (await hostLink(node, name)) seenOld.push(name);
        // i % 3: 0, the same attachment again; 1, a new sandbox of the same pod (same veth name) with
        // another address; 2, another pod taking the address.
        if (i % 3 === 0) {
          net.setup(addRequest(a, pods[i].path), a, replaceNone);
        } else if (i % 3 === 1) {
          const again = { ...allocation(`${a.containerId}-2`, [`10.1.1.${i}`]), podName: a.podName };
          net.setup(addRequest(again, pods[i].path), again, () => true);
        } else {
          const other = pods[i] = await newPod();
          const taker = { ...a, containerId: `${a.containerId}-taker`, podName: `taker-${i}` };
          takers.set(i, taker);
          net.setup(addRequest(taker, other.path), taker, replaceNone);
        }
      }));
      await deleter.idle();
      for (const [i, a] of first.entries()) {
        const name = hostVethName(addRequest(takers.get(i) ?? a, ""));
        const link = await hostLink(node, name);
        assert.ok(link?.flags.includes("UP"), `${name} is up after the old one's deletion ran`);
        const ip = i % 3 === 1 ? `10.1.1.${i}` : `10.1.0.${30 + i}`;
        assert.ok((await routesOf(node, 4)).includes(`${ip} ${name}`), `host route ${ip} via ${name}`);
        await ping(pods[i], "169.254.1.1");
      }
      console.log(`old veths still present at the re-ADD: ${seenOld.length} of ${first.length}`);
    } finally {
      for (const pod of created) await pod[Symbol.asyncDispose]();
    }
  });
});

Deno.test("setup() takes the MTU of the default route's device, after a change too", async () => {
  await withNode(async (node, net) => {
    await node.exec(["ip", "link", "add", "up0", "mtu", "1400", "type", "veth", "peer", "name", "up1"]);
    await node.exec(["ip", "link", "set", "up0", "up"]);
    await node.exec(["ip", "link", "set", "up1", "up"]);
    await node.exec(["ip", "route", "add", "default", "dev", "up0"]);
    const mtuOfNewPod = async (id: string, ip: string) => {
      await using pod = await createPod();
      const a = allocation(id, [ip]);
      const result = net.setup(addRequest(a, pod.path), a, replaceNone);
      net.destroy(addRequest(a, pod.path));
      return result.interfaces.map((i) => i.mtu);
    };
    assert.deepEqual(await mtuOfNewPod("c-mtu-1", "10.1.0.40"), [1400, 1400]);
    await node.exec(["ip", "link", "set", "up0", "mtu", "1350"]);
    assert.deepEqual(await mtuOfNewPod("c-mtu-2", "10.1.0.41"), [1350, 1350], "the uplink's new MTU");
    // A route more specific than the default covering the lookup's probe address: found all the same.
    await node.exec(["ip", "route", "add", "240.0.0.0/4", "dev", "up1"]);
    await node.exec(["ip", "link", "set", "up1", "mtu", "1200"]);
    assert.deepEqual(await mtuOfNewPod("c-mtu-3", "10.1.0.42"), [1350, 1350], "not the probe's route");
    await node.exec(["ip", "route", "del", "default"]);
    await node.exec(["ip", "route", "add", "default", "dev", "up1"]);
    assert.deepEqual(await mtuOfNewPod("c-mtu-4", "10.1.0.43"), [1200, 1200], "a default via another device");
  });
});

Deno.test("hostLinks() lists the veths coild made, by name, and no other link", async () => {
  await withNode(async (node, net) => {
    await using p1 = await createPod();
    await using p2 = await createPod();
    await node.exec(["ip", "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1"]);
    const a1 = allocation("c-1", ["10.1.0.12"]);
    const a2 = allocation("c-2", ["fd00:1::12"]);
    net.setup(addRequest(a1, p1.path), a1, replaceNone);
    net.setup(addRequest(a2, p2.path), a2, replaceNone);
    const found = net.hostLinks();
    assert.deepEqual(
      [...found.keys()].sort(),
      [hostVethName(addRequest(a1, "")), hostVethName(addRequest(a2, ""))].sort(),
    );
    assert.deepEqual(
      [...found.values()].map((l) => l.alias).sort(),
      [aliasOf(a1), aliasOf(a2)].sort(),
    );
  });
});

Deno.test("aliasOf() names network, container and interface; isCoilAlias() tells Coil's tags apart", () => {
  const a = { network: "k8s", containerId: "abc", ifName: "eth0" };
  assert.equal(aliasOf(a), "coil:k8s:abc:eth0");
  assert.notEqual(aliasOf(a), aliasOf({ ...a, network: "other" }), "one CNI_IFNAME in two networks");
  const long = aliasOf({ ...a, containerId: "c".repeat(300) });
  assert.match(long, /^coil:sha256-[0-9a-f]{64}:eth0$/);
  for (const alias of [aliasOf(a), long, "coil:abc:eth0"]) assert.ok(isCoilAlias(alias), alias);
  for (const alias of [undefined, "", "uplink", "coil:", "coil::eth0", "calico:abc:eth0"]) {
    assert.equal(isCoilAlias(alias), false, String(alias));
  }
});
