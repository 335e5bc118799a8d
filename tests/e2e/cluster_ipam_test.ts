// Four nodes on one etcd: four real coild processes, each in its own node netns under its own node name,
// serving CNI calls in IPAM mode (the netconf a main plugin such as ptp hands to coil) sent straight to
// the coil binary, many at once, as runtimes on four nodes would.

import assert from "node:assert/strict";
import { aggregate } from "../../ipam/aggregate.ts";
import {
  type Cidr,
  contains,
  formatCidr,
  overlaps,
  parseCidr,
  parseIp,
  tryParseCidr,
} from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { blockId, keysFor } from "../../ipam/keys.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { type CniOutcome, runCni } from "../helpers/cni.ts";
import { startCoild, type TestCoild } from "../helpers/coild.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { inParallel } from "../helpers/in_parallel.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";

const NODES = 4;
const PODS = 400;
/** CNI calls in flight at once: a busy runtime's worth, on a 2-core machine shared with other tests. */
const IN_FLIGHT = 32;

interface ResultIp {
  address: string;
  gateway?: string;
}

interface Added {
  node: number;
  containerId: string;
  ips: ResultIp[];
}

function assertOk(outcome: CniOutcome, what: string): void {
  assert.equal(
    outcome.code,
    0,
    `${what}: exit ${outcome.code}\nstdout ${outcome.stdout}\nstderr ${outcome.stderr}`,
  );
}

/** The CNI error JSON of a failed call. */
function cniError(outcome: CniOutcome): { code: number; msg: string } {
  assert.notEqual(outcome.code, 0, `expected a failure, got ${outcome.stdout}`);
  assert.ok(outcome.json, `no error JSON on stdout: ${outcome.stdout} ${outcome.stderr}`);
  return outcome.json as { code: number; msg: string };
}

/** The block an IPAM-mode answer names: the address's network. */
function blockOfResult(ip: ResultIp): Cidr {
  return tryParseCidr(ip.address, { strict: false })!;
}

function bare(ip: ResultIp): string {
  return ip.address.split("/")[0];
}

Deno.test("coild on 4 nodes serves concurrent IPAM-mode calls from disjoint blocks", async (t) => {
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const keys = keysFor(prefix);
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const nodes: TestNetns[] = [];
  const coilds: TestCoild[] = [];
  try {
    const pools = new PoolStore(client, prefix);
    // No default pool yet: the first step shows what a namespace without a pool gets.
    await pools.createPool(parsePool("dmz", { subnets: ["10.130.0.0/24"] }));
    // 2 blocks of 4, each with 2 addresses for pods (the first is the gateway, the last the broadcast).
    await pools.createPool(parsePool("tiny", { subnets: ["10.120.0.0/29"], blockSizeBits: 2 }));
    await pools.createPool(parsePool("six", { subnets: ["fd00:6::/48"] }));
    // Pods need a netns path that exists (coild's sweep releases addresses whose netns is gone); in
    // IPAM mode nothing is done inside it.
    await using pods = await createNetns();
    for (let i = 0; i < NODES; i++) {
      const node = await createNetns();
      nodes.push(node);
      await node.exec(["ip", "link", "set", "lo", "up"]);
    }
    const started = await Promise.allSettled(
      nodes.map((node, i) => startCoild({ etcd, prefix, node, nodeName: `node-${i}` })),
    );
    for (const s of started) if (s.status === "fulfilled") coilds.push(s.value);
    for (const s of started) if (s.status === "rejected") throw s.reason;
    const netconf = (n: number) => ({
      cniVersion: "1.1.0",
      name: "k8s",
      type: "ptp",
      ipam: { type: "coil", socket: coilds[n].socket },
    });
    const call = (command: "ADD" | "DEL", n: number, containerId: string, namespace = "default") =>
      runCni({
        command,
        netconf: netconf(n),
        containerId,
        netns: pods.path,
        ifName: "eth0",
        args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${containerId}`,
      });
    const snapshot = async () => {
      const res = await client.getAll().prefix(prefix).exec();
      return Object.fromEntries(res.kvs.map((kv) => [kv.key.toString(), String(kv.mod_revision)]));
    };
    const blockOwners = async () => {
      const owners = new Map<string, string>();
      const all = await client.getAll().prefix(keys.blocks()).strings();
      for (const [key, value] of Object.entries(all)) {
        const id = key.slice(key.lastIndexOf("/") + 1);
        assert.equal(owners.get(id), undefined, `block ${id} has two keys`);
        owners.set(id, JSON.parse(value).node);
      }
      return owners;
    };
    const addressKeys = async () => await client.getAll().prefix(keys.addresses()).keys();

    await t.step(
      "ADD for a namespace without a pool and no default pool fails with 100, nothing written",
      async () => {
        const before = await snapshot();
        const err = cniError(await call("ADD", 0, "nopool", "web"));
        assert.equal(err.code, 100, err.msg);
        assert.match(err.msg, /"web"/);
        assert.match(err.msg, /"default"/);
        assert.deepEqual(await snapshot(), before);
      },
    );

    const added: Added[] = [];
    await t.step(
      `ADD ×${PODS} over ${NODES} nodes gives unique addresses in blocks their node owns`,
      async () => {
        // Created while the coilds run: they must see it without a restart.
        await pools.createPool(parsePool("default", { subnets: ["10.110.0.0/20", "fd00:110::/48"] }));
        const jobs = Array.from({ length: PODS }, (_, i) => ({ node: i % NODES, containerId: `pod-${i}` }));
        const outcomes = await inParallel(jobs, IN_FLIGHT, (job) => call("ADD", job.node, job.containerId));
        for (const [i, outcome] of outcomes.entries()) {
          assertOk(outcome, `ADD ${jobs[i].containerId} on node-${jobs[i].node}`);
          added.push({ ...jobs[i], ips: (outcome.json as { ips: ResultIp[] }).ips });
        }
        const all = added.flatMap((a) => a.ips.map(bare));
        assert.equal(all.length, 2 * PODS, "one address per family");
        assert.equal(new Set(all).size, 2 * PODS, "every address unique");
        const owners = await blockOwners();
        const records = await client.getAll().prefix(keys.addresses()).strings();
        assert.equal(Object.keys(records).length, 2 * PODS);
        for (const a of added) {
          assert.deepEqual(a.ips.map((ip) => parseIp(bare(ip)).family), [4, 6], a.containerId);
          for (const ip of a.ips) {
            const block = blockOfResult(ip);
            assert.equal(block.prefix, block.family === 4 ? 27 : 123);
            const subnet = parseCidr(block.family === 4 ? "10.110.0.0/20" : "fd00:110::/48");
            assert.ok(contains(subnet, parseIp(bare(ip))), ip.address);
            assert.equal(owners.get(blockId(block)), `node-${a.node}`, `${ip.address} of ${a.containerId}`);
            const record = JSON.parse(records[keys.address(block, parseIp(bare(ip)))]);
            assert.equal(record.node, `node-${a.node}`);
            assert.equal(record.containerId, a.containerId);
            assert.equal(record.pool, "default");
            assert.notEqual(bare(ip), ip.gateway, "an address is not its own gateway");
            assert.ok(!all.includes(ip.gateway!), `gateway ${ip.gateway} is a pod's address`);
          }
        }
        // Every node got blocks of its own: the 100 calls each node served went to its blocks only.
        const nodesWithBlocks = new Set(owners.values());
        for (let n = 0; n < NODES; n++) assert.ok(nodesWithBlocks.has(`node-${n}`), `node-${n} has no block`);
      },
    );

    await t.step(
      "each node exports exactly its own blocks to table 119, aggregated, and no address from two nodes",
      async () => {
        // Spare claims run in the background: wait (bounded) until etcd and every table agree.
        const deadline = Date.now() + 30_000;
        for (;;) {
          const owners = await blockOwners();
          const exported = await Promise.all(nodes.map(async (node) => {
            const v4 = await node.ipJson<{ dst: string }[]>(["route", "show", "table", "119"]);
            const v6 = await node.ipJson<{ dst: string }[]>(["-6", "route", "show", "table", "119"]);
            return [...v4, ...v6].map((r) => formatCidr(parseCidr(r.dst))).sort();
          }));
          // The fewest prefixes covering exactly each node's blocks (ipam/aggregate.ts's own tests are exhaustive).
          const wanted = nodes.map((_, n) =>
            aggregate(
              [...owners.entries()].filter(([, node]) => node === `node-${n}`).map(([id]) =>
                parseCidr(id.replace("_", "/"))
              ),
            ).map(formatCidr).sort()
          );
          if (JSON.stringify(exported) === JSON.stringify(wanted) || Date.now() > deadline) {
            assert.deepEqual(exported, wanted);
            const all = exported.flatMap((prefixes, n) => prefixes.map((p) => ({ n, cidr: parseCidr(p) })));
            for (const a of all) {
              for (const b of all) {
                if (a.n < b.n) {
                  assert.ok(
                    !overlaps(a.cidr, b.cidr),
                    `node-${a.n} and node-${b.n} both export ${formatCidr(a.cidr)}`,
                  );
                }
              }
            }
            return;
          }
          await new Promise((r) => setTimeout(r, 200));
        }
      },
    );

    await t.step("ADD repeated with the same container ID returns the same addresses", async () => {
      const before = await snapshot();
      for (const a of added.slice(0, 8)) {
        const again = await call("ADD", a.node, a.containerId);
        assertOk(again, `second ADD ${a.containerId}`);
        assert.deepEqual((again.json as { ips: ResultIp[] }).ips, a.ips);
      }
      assert.deepEqual(await snapshot(), before);
    });

    await t.step("DEL of every pod leaves no address key, and DEL again succeeds", async () => {
      const outcomes = await inParallel(added, IN_FLIGHT, (a) => call("DEL", a.node, a.containerId));
      for (const [i, outcome] of outcomes.entries()) assertOk(outcome, `DEL ${added[i].containerId}`);
      assert.deepEqual(await addressKeys(), []);
      for (const a of added.slice(0, 8)) assertOk(await call("DEL", a.node, a.containerId), "second DEL");
      assertOk(await call("DEL", 1, "never-added"), "DEL of an unknown container");
      assert.deepEqual(await addressKeys(), []);
    });

    await t.step("ADD in namespace dmz takes its address from pool dmz", async () => {
      const outcome = await call("ADD", 2, "dmz-pod", "dmz");
      assertOk(outcome, "ADD in dmz");
      const ips = (outcome.json as { ips: ResultIp[] }).ips;
      assert.equal(ips.length, 1, "pool dmz is IPv4 only");
      assert.ok(contains(parseCidr("10.130.0.0/24"), parseIp(bare(ips[0]))), ips[0].address);
      const record = JSON.parse(
        (await client.get(keys.address(blockOfResult(ips[0]), parseIp(bare(ips[0]))))
          .string())!,
      );
      assert.equal(record.pool, "dmz");
      assert.equal(record.podNamespace, "dmz");
      // A namespace without a pool of its own gets the default pool.
      const other = await call("ADD", 2, "other-pod", "no-such-pool");
      assertOk(other, "ADD in a namespace without pool");
      const otherIps = (other.json as { ips: ResultIp[] }).ips;
      assert.ok(contains(parseCidr("10.110.0.0/20"), parseIp(bare(otherIps[0]))), otherIps[0].address);
      assertOk(await call("DEL", 2, "dmz-pod", "dmz"), "DEL in dmz");
      assertOk(await call("DEL", 2, "other-pod", "no-such-pool"), "DEL other");
    });

    await t.step("ADD from an IPv6-only /48 pool gives one IPv6 address", async () => {
      const outcome = await call("ADD", 3, "six-pod", "six");
      assertOk(outcome, "ADD in six");
      const ips = (outcome.json as { ips: ResultIp[] }).ips;
      assert.equal(ips.length, 1);
      const block = blockOfResult(ips[0]);
      assert.equal(block.family, 6);
      assert.equal(block.prefix, 123);
      assert.ok(contains(parseCidr("fd00:6::/48"), parseIp(bare(ips[0]))), ips[0].address);
      assert.equal(ips[0].gateway, formatCidr(block).split("/")[0]);
      assertOk(await call("DEL", 3, "six-pod", "six"), "DEL in six");
    });

    await t.step(
      "ADD past the last free address fails with 101 naming the pool, nothing written",
      async () => {
        const taken: string[] = [];
        for (let i = 0; i < 4; i++) {
          const outcome = await call("ADD", 1, `tiny-${i}`, "tiny");
          assertOk(outcome, `ADD tiny-${i}`);
          taken.push(bare((outcome.json as { ips: ResultIp[] }).ips[0]));
        }
        // Offsets 1 and 2 of 10.120.0.0/30 and 10.120.0.4/30.
        assert.deepEqual(taken.sort(), ["10.120.0.1", "10.120.0.2", "10.120.0.5", "10.120.0.6"]);
        const before = await snapshot();
        const err = cniError(await call("ADD", 1, "tiny-4", "tiny"));
        assert.equal(err.code, 101, err.msg);
        assert.match(err.msg, /"tiny"/);
        assert.match(err.msg, /exhausted/);
        // Another node holds no block of the pool, and none is left to claim.
        assert.equal(cniError(await call("ADD", 0, "tiny-5", "tiny")).code, 101);
        assert.deepEqual(await snapshot(), before);
        for (let i = 0; i < 4; i++) assertOk(await call("DEL", 1, `tiny-${i}`, "tiny"), `DEL tiny-${i}`);
        assert.deepEqual(await addressKeys(), []);
      },
    );
  } finally {
    await Promise.all(coilds.map((c) => c.stop()));
    for (const node of nodes) await node[Symbol.asyncDispose]();
    client.close();
  }
});
