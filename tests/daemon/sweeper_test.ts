// The leak sweep: allocations whose pod netns vanished without a DEL are released, but only once the
// netns was seen missing on two sweeps at least the grace apart; the sweep also re-syncs table 119.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { formatIp } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { createNodeIpam } from "../../ipam/node_ipam.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import type { LogFields, Logger, LogLevel } from "../../daemon/log.ts";
import { KeyedQueue } from "../../daemon/keyed_queue.ts";
import { startSweeper } from "../../daemon/sweeper.ts";
import { createTeardown } from "../../daemon/teardown.ts";
import { runCni } from "../helpers/cni.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns } from "../helpers/netns.ts";
import {
  addPod,
  addressKeys,
  createPod,
  logEntries,
  NETWORK,
  startNode,
  type TestNode,
  type TestPod,
  waitUntil,
} from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

const SUBNETS = ["10.120.0.0/16", "fd00:120::/112"];

/** ADD through Debian's ptp, which delegates IPAM to coil (coil then owns no interface). */
async function addViaPtp(node: TestNode, pod: TestPod): Promise<string> {
  const out = await runCni({
    command: "ADD",
    plugin: "/usr/lib/cni/ptp",
    netconf: {
      cniVersion: "1.0.0",
      name: NETWORK,
      type: "ptp",
      ipam: { type: "coil", socket: node.coild.socket },
    },
    containerId: pod.containerId,
    netns: pod.path,
    ifName: "eth0",
    args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name}`,
    inNetns: node.ns.name,
  });
  assert.equal(out.code, 0, `ptp ADD: ${out.stdout}${out.stderr}\n${node.coild.log()}`);
  return (out.json as { ips: { address: string }[] }).ips[0].address.split("/")[0];
}

function recordingLogger(): { log: Logger; entries: { level: LogLevel; msg: string; fields: LogFields }[] } {
  const entries: { level: LogLevel; msg: string; fields: LogFields }[] = [];
  return { log: (level, msg, fields = {}) => entries.push({ level, msg, fields }), entries };
}

Deno.test("startSweeper() releases an allocation only after two sweeps the grace apart", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  const dir = await Deno.makeTempDir({ prefix: "coil-t-sweep-" });
  try {
    const prefix = etcd.newPrefix();
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: SUBNETS, blockSizeBits: 5 }),
    );
    const ipam = await createNodeIpam({ store: createEtcdStore(client, prefix), node: "node-a" });
    try {
      // The sweep judges by the netns path; a plain file stands in for a bind-mounted netns.
      const netns = `${dir}/netns-1`;
      await Deno.writeFile(netns, new Uint8Array());
      const request = {
        network: NETWORK,
        containerId: "ctr-1",
        ifName: "eth0",
        podNamespace: "default",
        podName: "p1",
        podUid: "uid-1",
        netns,
      };
      const kept = { ...request, containerId: "ctr-2", netns: dir };
      await ipam.allocate(request);
      await ipam.allocate(kept);
      let clock = 1_000_000;
      const { log, entries } = recordingLogger();
      let exports = 0;
      // The grace logic needs no kernel: this node's pods have no veths to remove.
      const teardown = createTeardown({
        ipam,
        podNetwork: { destroy: () => Promise.resolve() },
        queue: new KeyedQueue(),
      });
      const sweeper = startSweeper({
        ipam,
        teardown,
        syncExport: () => exports++,
        intervalSeconds: 0,
        graceSeconds: 60,
        log,
        now: () => clock,
      });
      try {
        await t.step("a present netns is left alone", async () => {
          const report = await sweeper.sweep();
          assert.deepEqual([report.suspects, report.released.length], [0, 0]);
          assert.equal(exports, 1, "each sweep re-syncs the export table");
        });
        await Deno.remove(netns);
        await t.step("first sight of a missing netns only notes it", async () => {
          const report = await sweeper.sweep();
          assert.deepEqual([report.suspects, report.released.length], [1, 0]);
        });
        await t.step("a second sweep within the grace keeps it", async () => {
          clock += 59_999;
          const report = await sweeper.sweep();
          assert.deepEqual([report.suspects, report.released.length], [1, 0]);
          assert.ok(ipam.find(NETWORK, "ctr-1", "eth0"));
        });
        await t.step("a netns that comes back resets the clock", async () => {
          await Deno.writeFile(netns, new Uint8Array());
          assert.equal((await sweeper.sweep()).suspects, 0);
          await Deno.remove(netns);
          assert.equal((await sweeper.sweep()).suspects, 1);
          clock += 59_999;
          assert.equal((await sweeper.sweep()).released.length, 0);
        });
        await t.step(
          "a sweep the grace after the first sight releases it, with a logged reason",
          async () => {
            clock += 1;
            const report = await sweeper.sweep();
            assert.deepEqual(report.released.map((a) => a.containerId), ["ctr-1"]);
            assert.equal(ipam.find(NETWORK, "ctr-1", "eth0"), undefined);
            assert.ok(ipam.find(NETWORK, "ctr-2", "eth0"), "the other allocation stays");
            const keys = Object.values(await client.getAll().prefix(`${prefix}addresses/`).strings());
            assert.deepEqual(keys.map((v) => JSON.parse(v).containerId), ["ctr-2", "ctr-2"]);
            const released = entries.find((e) => e.msg === "released");
            assert.ok(released, "the release is logged");
            assert.match(String(released.fields.reason), /^sweep: netns ".*netns-1" missing since /);
            assert.deepEqual(
              released.fields.ips,
              report.released[0].addresses.map((a) => formatIp(a.address)),
            );
            assert.equal((await sweeper.sweep()).suspects, 0, "nothing is left to suspect");
          },
        );
      } finally {
        await sweeper.close();
      }
    } finally {
      await ipam.close();
    }
  } finally {
    client.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("coild's periodic sweep releases pods whose netns vanished without DEL", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    await t.step("main and IPAM mode pods are released after the grace; live pods stay", async () => {
      await using node = await startNode({
        etcd,
        client,
        subnets: SUBNETS,
        args: ["--sweep-interval", "1", "--sweep-grace", "1"],
      });
      await using gone = await createPod();
      await using goneIpam = await createPod();
      await using live = await createPod();
      const goneIps = await addPod(node, gone);
      const goneIpamIp = await addViaPtp(node, goneIpam);
      const liveIps = await addPod(node, live);
      await gone.remove();
      await goneIpam.remove();
      const leaked = [...goneIps, goneIpamIp];
      await waitUntil(
        "the sweep released the addresses of the vanished pods",
        async () => {
          const held = await addressKeys(client, node);
          return leaked.every((ip) => !held.has(ip));
        },
        () => node.coild.log(),
      );
      const held = await addressKeys(client, node);
      for (const ip of liveIps) assert.ok(held.has(ip), `live pod keeps ${ip}`);
      const releases = logEntries(node.coild).filter((e) => e.msg === "released");
      assert.deepEqual(
        releases.map((e) => e.containerId).sort(),
        [gone.containerId, goneIpam.containerId].sort(),
        "each release is logged, and only these",
      );
      for (const e of releases) {
        const since = /missing since (\S+)$/.exec(String(e.reason));
        assert.ok(since, `reason names when the netns was first missed: ${e.reason}`);
        assert.ok(
          Date.parse(String(e.time)) - Date.parse(since[1]) >= 1000,
          "released no earlier than the grace after the first sight",
        );
      }
      const hostLinks = await node.ns.ipJson<{ ifalias?: string }[]>(["link", "show"]);
      assert.ok(
        !hostLinks.some((l) => l.ifalias === `coil:${gone.containerId}:eth0`),
        "the vanished pod's host veth is gone",
      );
    });

    await t.step("a sweep puts back a table 119 route deleted by hand", async () => {
      await using node = await startNode({
        etcd,
        client,
        subnets: SUBNETS,
        args: ["--sweep-interval", "1", "--sweep-grace", "1"],
      });
      await using pod = await createPod();
      await addPod(node, pod);
      const table = () => node.ns.ipJson<{ dst: string }[]>(["-4", "route", "show", "table", "119"]);
      const before = await table();
      assert.ok(before.length > 0);
      await node.ns.exec(["ip", "-4", "route", "flush", "table", "119"]);
      await waitUntil(
        "table 119 is synced again",
        async () => JSON.stringify(await table()) === JSON.stringify(before),
        () => node.coild.log(),
      );
    });
  } finally {
    client.close();
  }
});
