// Issue 8's duplicate-address paths in main-plugin mode, each reproduced against a real coild, etcd and
// kernel: a failing repeat ADD, CNI_ARGS that differ between calls, a second interface, one CNI_IFNAME in
// two networks, a node restarted under another name, and STATUS with namespace pools only. (A CNI_NETNS
// that is no pod's netns: pod_netns_guard_test.ts.)

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { runCni } from "../helpers/cni.ts";
import { startCoild } from "../helpers/coild.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns } from "../helpers/netns.ts";
import {
  addPod,
  addressKeys,
  cni,
  createPod,
  NETWORK,
  startNode,
  type TestNode,
  type TestPod,
} from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

let etcd: TestEtcd;
let client: Etcd3;

function node(options: { subnets?: string[]; nodeName?: string } = {}): Promise<TestNode> {
  return startNode({
    etcd,
    client,
    subnets: options.subnets ?? ["10.141.0.0/16"],
    nodeName: options.nodeName,
  });
}

/** CNI call for `pod` with explicit CNI_ARGS, ifName, network and netns. */
function call(
  n: TestNode,
  command: "ADD" | "DEL" | "CHECK",
  pod: TestPod,
  options: {
    args?: string;
    ifName?: string;
    network?: string;
    netns?: string;
    env?: Record<string, string>;
  } = {},
) {
  return runCni({
    command,
    netconf: {
      cniVersion: "1.0.0",
      name: options.network ?? NETWORK,
      type: "coil",
      socket: n.coild.socket,
      ...(command === "CHECK" && pod.result ? { prevResult: pod.result } : {}),
    },
    containerId: pod.containerId,
    netns: options.netns ?? pod.path,
    ifName: options.ifName ?? "eth0",
    args: options.args ?? `K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name}`,
    inNetns: n.ns.name,
    env: options.env,
  });
}

async function hostVeths(n: TestNode): Promise<string[]> {
  const links = await n.ns.ipJson<{ ifname: string; ifalias?: string }[]>(["link", "show", "type", "veth"]);
  return links.filter((l) => l.ifalias?.startsWith("coil:")).map((l) => `${l.ifname} ${l.ifalias}`).sort();
}

async function podAddresses(pod: TestPod): Promise<string[]> {
  const addrs = await pod.ns.ipJson<{ addr_info: { local: string; scope: string }[] }[]>(["addr", "show"]);
  return addrs.flatMap((a) => a.addr_info).filter((a) => a.scope === "global").map((a) => a.local).sort();
}

Deno.test("issue 8: no call undoes what an earlier call made or takes another attachment's network", async (t) => {
  etcd = await startEtcd();
  client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  try {
    await using n = await node();

    await t.step("item 1: a repeat ADD without CNI_ARGS returns the same address and keeps it", async () => {
      await using pod = await createPod("p1");
      const [ip] = await addPod(n, pod);
      const veths = await hostVeths(n);
      const again = await call(n, "ADD", pod, { args: "" });
      assert.equal(again.code, 0, `${again.stdout}${again.stderr}`);
      assert.deepEqual((again.json as { ips: { address: string }[] }).ips.map((i) => i.address), [
        `${ip}/32`,
      ]);
      assert.deepEqual(await hostVeths(n), veths, "the repeat left the pod's veth alone");
      assert.ok((await addressKeys(client, n)).has(ip), "the address is still allocated in etcd");
      assert.deepEqual(await podAddresses(pod), [ip]);
      // A runtime may send CHECK and DEL with other CNI_ARGS than the ADD (cnitool sends none).
      const check = await call(n, "CHECK", pod, { args: "" });
      assert.equal(check.code, 0, `CHECK without CNI_ARGS: ${check.stdout}${check.stderr}`);
      assert.equal((await call(n, "DEL", pod, { args: "" })).code, 0);
      assert.equal((await addressKeys(client, n)).has(ip), false);
      assert.deepEqual(await hostVeths(n), []);
    });

    await t.step("item 1: a repeat ADD that fails keeps the earlier allocation", async () => {
      await using pod = await createPod("p2");
      const [ip] = await addPod(n, pod);
      // Break the pod so that the repeat must set it up again, and make that fail: the host veth is gone
      // (taking the pod's eth0 along) and another link has taken the name eth0 in the pod.
      const [veth] = (await hostVeths(n))[0].split(" ");
      await n.ns.exec(["ip", "link", "del", veth]);
      await pod.ns.exec(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
      const again = await call(n, "ADD", pod);
      assert.notEqual(again.code, 0, "the repeat ADD fails: eth0 is taken in the pod");
      assert.match(String(again.json?.msg), /already exists/);
      assert.ok((await addressKeys(client, n)).has(ip), "the first ADD's address is still allocated");
      await using other = await createPod("p3");
      const [otherIp] = await addPod(n, other);
      assert.notEqual(otherIp, ip, "nobody else gets the address");
      assert.equal((await call(n, "DEL", other)).code, 0);
      assert.equal((await call(n, "DEL", pod)).code, 0);
      assert.equal((await addressKeys(client, n)).size, 0);
    });

    await t.step(
      "item 11: a second interface in main mode is refused before anything is allocated",
      async () => {
        await using pod = await createPod("two-ifaces");
        const [ip] = await addPod(n, pod);
        const out = await call(n, "ADD", pod, { ifName: "net1" });
        assert.equal(out.json?.code, 7, `${out.stdout}${out.stderr}`);
        assert.match(String(out.json?.msg), /one interface per pod/);
        assert.deepEqual(
          [...(await addressKeys(client, n)).keys()],
          [ip],
          "only eth0's address is allocated",
        );
        assert.equal((await call(n, "CHECK", pod)).code, 0, "eth0 is untouched");
        assert.equal((await call(n, "DEL", pod, { ifName: "net1" })).code, 0);
        assert.equal((await call(n, "CHECK", pod)).code, 0, "net1's DEL left eth0 alone");
        assert.equal((await call(n, "DEL", pod)).code, 0);
      },
    );

    await t.step(
      "item 11: one CNI_IFNAME in two networks: neither network's calls touch the other's veth",
      async () => {
        await using pod = await createPod("two-networks");
        const [ip] = await addPod(n, pod);
        const veths = await hostVeths(n);
        assert.match(veths[0], new RegExp(`coil:${NETWORK}:${pod.containerId}:eth0$`));
        const second = await call(n, "ADD", pod, { network: "second-net" });
        assert.notEqual(second.code, 0, "eth0 exists in the pod: the second network's ADD fails");
        assert.deepEqual(await hostVeths(n), veths, "the first network's veth survived the second ADD");
        assert.equal((await call(n, "DEL", pod, { network: "second-net" })).code, 0);
        assert.deepEqual(await hostVeths(n), veths, "the second network's DEL left the first one's veth");
        assert.equal((await call(n, "CHECK", pod)).code, 0);
        assert.deepEqual([...(await addressKeys(client, n)).keys()], [ip]);
        assert.equal((await call(n, "DEL", pod)).code, 0);
      },
    );

    await t.step(
      "item 5: coild restarted under another node name refuses to start over the pods",
      async () => {
        await using pod = await createPod("renamed");
        const [ip] = await addPod(n, pod);
        const veths = await hostVeths(n);
        await n.stop();
        const error = await startCoild({ etcd, prefix: n.prefix, node: n.ns, nodeName: "another-name" }).then(
          () => undefined,
          (err: Error) => err,
        );
        assert.ok(error, "coild started under another name");
        // The log line is JSON: the message's quotes are escaped.
        assert.ok(error.message.includes(`Refusing to start as node \\"another-name\\"`), error.message);
        assert.ok(error.message.includes(`--node-name ${n.ns.name}`), error.message);
        const fence = await client.get(`${n.prefix}node-fences/another-name`).string();
        assert.equal(fence, null, "the refused coild left no trace in etcd");
        assert.deepEqual(await hostVeths(n), veths, "the pod's veth is still there");
        const table119 = await n.ns.ipJson<unknown[]>(["route", "show", "table", "119"]);
        assert.ok(table119.length > 0, "the node's block is still exported");
        await n.start();
        assert.equal((await call(n, "CHECK", pod)).code, 0, "back under its name, the pod is intact");
        assert.ok((await addressKeys(client, n)).has(ip));
        assert.equal((await call(n, "DEL", pod)).code, 0);
      },
    );
  } finally {
    client.close();
    await etcd[Symbol.asyncDispose]();
  }
});

Deno.test("issue 8 item 12: STATUS is ready with namespace pools and no default pool", async () => {
  etcd = await startEtcd();
  client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  try {
    await using n = await startNode({ etcd, client });
    const none = await cni(n, "STATUS");
    assert.equal(none.json?.code, 50, `no pool at all: ${none.stdout}`);
    await new PoolStore(client, n.prefix).createPool(parsePool("dmz", { subnets: ["10.142.0.0/24"] }));
    const out = await cni(n, "STATUS");
    assert.equal(out.code, 0, `a namespace pool serves ADDs: ${out.stdout}${out.stderr}`);
  } finally {
    client.close();
    await etcd[Symbol.asyncDispose]();
  }
});
