// Coil as the IPAM plugin of Debian's ptp (containernetworking-plugins): ptp execs coil from CNI_PATH,
// coil asks a real coild (in a node netns, on a real etcd), and ptp wires real pods in network namespaces.

import assert from "node:assert/strict";
import { formatCidr, formatIp, parseCidr, parseIp, tryParseCidr } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { type CniOutcome, runCni } from "../helpers/cni.ts";
import { startCoild } from "../helpers/coild.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";

const PTP = "/usr/lib/cni/ptp";
/** Debian's ptp 1.1.1 speaks CNI up to 1.0.0 (`CNI_COMMAND=VERSION /usr/lib/cni/ptp`). */
const PTP_VERSIONS = ["0.3.1", "0.4.0", "1.0.0"];

interface ResultIp {
  address: string;
  gateway: string;
  interface?: number;
}

interface PtpResult {
  interfaces: { name: string; sandbox?: string }[];
  ips: ResultIp[];
}

interface Pod {
  ns: TestNetns;
  containerId: string;
  args: string;
  result: PtpResult;
}

/** The address without its prefix. */
function bare(ip: ResultIp): string {
  return ip.address.split("/")[0];
}

/** The block an IPAM-mode answer names: the address's network. */
function blockOfResult(ip: ResultIp) {
  return tryParseCidr(ip.address, { strict: false })!;
}

function assertOk(outcome: CniOutcome, what: string): void {
  assert.equal(
    outcome.code,
    0,
    `${what}: exit ${outcome.code}\nstdout ${outcome.stdout}\nstderr ${outcome.stderr}`,
  );
}

/** Waits (bounded) until no address in `ns` is still tentative (IPv6 duplicate address detection). */
async function waitAddressesSettled(ns: TestNetns): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const links = await ns.ipJson<{ addr_info?: { local: string; tentative?: boolean }[] }[]>(["-6", "addr"]);
    const tentative = links.flatMap((l) => l.addr_info ?? []).filter((a) => a.tentative);
    if (tentative.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`Addresses still tentative in ${ns.name}: ${tentative.map((a) => a.local).join(", ")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether `from` gets an echo reply from `ip` (a few tries: the first packet may wait for neighbours). */
async function pings(from: TestNetns, ip: string): Promise<boolean> {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await from.exec(["ping", "-c", "1", "-W", "2", ip]);
      return true;
    } catch { /* try again */ }
  }
  return false;
}

Deno.test("ptp with coil as IPAM plugin wires pods with coil's addresses", async (t) => {
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const keys = keysFor(prefix);
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  try {
    const pools = new PoolStore(client, prefix);
    await pools.createPool(parsePool("default", { subnets: ["10.100.0.0/16", "fd00:100::/112"] }));
    // Blocks of 4 (3 for pods), so a few pods fill a block and spill into the next.
    await pools.createPool(parsePool("tiny", { subnets: ["10.101.0.0/24"], blockSizeBits: 2 }));
    await using node = await createNetns();
    await node.exec(["ip", "link", "set", "lo", "up"]);
    await using coild = await startCoild({ etcd, prefix, node });
    const netconf = (cniVersion = "1.0.0") => ({
      cniVersion,
      name: "k8s",
      type: "ptp",
      ipam: { type: "coil", socket: coild.socket },
    });
    const ptp = (
      command: "ADD" | "DEL" | "CHECK",
      pod: { ns?: TestNetns; containerId: string; args: string },
      conf: Record<string, unknown> = netconf(),
    ) =>
      runCni({
        command,
        netconf: conf,
        containerId: pod.containerId,
        netns: pod.ns?.path,
        ifName: "eth0",
        args: pod.args,
        inNetns: node.name,
        plugin: PTP,
      });
    const addressKeys = async () => await client.getAll().prefix(keys.addresses()).keys();
    const hostLinks = async () =>
      (await node.ipJson<{ ifname: string }[]>(["link"])).map((l) => l.ifname).filter((n) => n !== "lo");

    const namespaces: TestNetns[] = [];
    const newPodNetns = async () => {
      const ns = await createNetns();
      namespaces.push(ns);
      return ns;
    };
    try {
      const pods: Pod[] = [];

      await t.step("ADD through ptp gives each pod unique addresses of both families", async () => {
        for (let i = 0; i < 3; i++) {
          const ns = await newPodNetns();
          const pod = { ns, containerId: `ptp-c${i}`, args: `K8S_POD_NAMESPACE=default;K8S_POD_NAME=p${i}` };
          const outcome = await ptp("ADD", pod);
          assertOk(outcome, `ADD ${pod.containerId}`);
          pods.push({ ...pod, result: outcome.json as unknown as PtpResult });
        }
        const all = pods.flatMap((p) => p.result.ips.map(bare));
        assert.equal(new Set(all).size, 6, all.join(" "));
        for (const pod of pods) {
          assert.deepEqual(pod.result.ips.map((ip) => parseIp(bare(ip)).family), [4, 6]);
          for (const ip of pod.result.ips) {
            const block = blockOfResult(ip);
            assert.equal(block.prefix, ip.address.includes(":") ? 123 : 27, ip.address);
            // The gateway is the block's first address, which no pod gets.
            assert.equal(ip.gateway, formatIp({ family: block.family, value: block.base }));
            assert.ok(!all.includes(ip.gateway), `gateway ${ip.gateway} is a pod's address`);
            assert.ok(await client.get(keys.address(block, parseIp(bare(ip)))).exists(), ip.address);
          }
          // ptp put the addresses on the pod's eth0 and the gateways on the host veth.
          const eth0 = await pod.ns.ipJson<{ addr_info: { local: string; prefixlen: number }[] }[]>([
            "addr",
            "show",
            "dev",
            "eth0",
          ]);
          const podAddresses = eth0[0].addr_info.map((a) => `${a.local}/${a.prefixlen}`);
          for (const ip of pod.result.ips) {
            assert.ok(podAddresses.includes(ip.address), podAddresses.join(" "));
          }
          const hostVeth = pod.result.interfaces[0].name;
          const host = await node.ipJson<{ addr_info: { local: string }[] }[]>([
            "addr",
            "show",
            "dev",
            hostVeth,
          ]);
          const hostAddresses = host[0].addr_info.map((a) => a.local);
          for (const ip of pod.result.ips) {
            assert.ok(hostAddresses.includes(ip.gateway), hostAddresses.join(" "));
          }
        }
      });

      await t.step("pods ping each other and the node over IPv4 and IPv6", async () => {
        assert.equal(pods.length, 3, "needs the pods of the first step");
        await waitAddressesSettled(node);
        for (const [i, pod] of pods.entries()) {
          const peer: Pod = pods[(i + 1) % pods.length];
          for (const ip of peer.result.ips) {
            assert.ok(await pings(pod.ns, bare(ip)), `${pod.containerId} → ${peer.containerId} ${bare(ip)}`);
          }
          for (const ip of pod.result.ips) {
            // ptp puts the gateway on the host veth: the pod reaches the node through it.
            assert.ok(await pings(pod.ns, ip.gateway), `${pod.containerId} → node at ${ip.gateway}`);
            assert.ok(await pings(node, bare(ip)), `node → ${pod.containerId} ${bare(ip)}`);
          }
        }
      });

      await t.step("CHECK through ptp passes for every pod", async () => {
        for (const pod of pods) {
          assertOk(
            await ptp("CHECK", pod, { ...netconf(), prevResult: pod.result }),
            `CHECK ${pod.containerId}`,
          );
        }
      });

      await t.step(
        "a block's first and last addresses are never a pod's, even when pods fill the block",
        async () => {
          // Blocks of 4: the first address is the gateway, the last the broadcast address ptp gives eth0.
          const tiny: Pod[] = [];
          for (let i = 0; i < 3; i++) {
            const pod = {
              ns: await newPodNetns(),
              containerId: `tiny-c${i}`,
              args: `K8S_POD_NAMESPACE=tiny`,
            };
            const outcome = await ptp("ADD", pod);
            assertOk(outcome, `ADD ${pod.containerId}`);
            tiny.push({ ...pod, result: outcome.json as unknown as PtpResult });
          }
          const ips = tiny.map((p) => p.result.ips[0]);
          const addresses = ips.map(bare);
          assert.equal(new Set(addresses).size, 3);
          const blocks = ips.map((ip) => formatCidr(blockOfResult(ip)));
          // Two pods fill the first block, the third spills into another.
          assert.equal(blocks[0], blocks[1]);
          assert.notEqual(blocks[2], blocks[0]);
          for (const ip of ips) {
            const block = blockOfResult(ip);
            assert.equal(block.prefix, 30);
            const offset = parseIp(bare(ip)).value - block.base;
            assert.ok(offset === 1n || offset === 2n, `${ip.address} is at offset ${offset} of its block`);
            assert.ok(!addresses.includes(ip.gateway), `gateway ${ip.gateway} is also a pod's address`);
            assert.equal(ip.gateway, formatIp({ family: 4, value: block.base }));
          }
          await waitAddressesSettled(node);
          assert.ok(await pings(tiny[0].ns, addresses[1]), "pods of one block reach each other");
          assert.ok(await pings(tiny[1].ns, addresses[0]), "pods of one block reach each other");
          assert.ok(await pings(tiny[2].ns, addresses[0]), "pods of two blocks reach each other");
          for (const pod of tiny) assertOk(await ptp("DEL", pod), `DEL ${pod.containerId}`);
        },
      );

      await t.step(
        "DEL through ptp removes the address keys and the veth, and is safe to repeat",
        async () => {
          const veths = pods.map((p) => p.result.interfaces[0].name);
          for (const veth of veths) assert.ok((await hostLinks()).includes(veth), veth);
          for (const pod of pods) {
            assertOk(await ptp("DEL", pod), `DEL ${pod.containerId}`);
            for (const ip of pod.result.ips) {
              assert.equal(
                await client.get(keys.address(blockOfResult(ip), parseIp(bare(ip)))).exists(),
                false,
              );
            }
            assert.equal((await hostLinks()).includes(pod.result.interfaces[0].name), false);
            assert.deepEqual(await pod.ns.ipJson(["addr", "show", "dev", "eth0"]).catch(() => []), []);
            assertOk(await ptp("DEL", pod), `second DEL ${pod.containerId}`);
            const check = await ptp("CHECK", pod, { ...netconf(), prevResult: pod.result });
            assert.notEqual(check.code, 0, `CHECK after DEL passed: ${check.stdout}`);
          }
          // The netns gone (and the runtime no longer telling it): DEL still succeeds.
          assertOk(
            await ptp("DEL", { containerId: pods[0].containerId, args: pods[0].args }),
            "DEL without netns",
          );
          assert.deepEqual(await addressKeys(), []);
          assert.deepEqual(await hostLinks(), []);
        },
      );

      for (const version of PTP_VERSIONS) {
        await t.step(`ADD, CHECK and DEL through ptp at cniVersion ${version}`, async () => {
          const pod = {
            ns: await newPodNetns(),
            containerId: `v${version.replaceAll(".", "")}`,
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=versioned",
          };
          const conf = netconf(version);
          const added = await ptp("ADD", pod, conf);
          assertOk(added, `ADD at ${version}`);
          const result = added.json as unknown as PtpResult & { cniVersion: string };
          assert.equal(result.cniVersion, version);
          assert.equal(result.ips.length, 2);
          const eth0 = await pod.ns.ipJson<{ addr_info: { local: string }[] }[]>([
            "addr",
            "show",
            "dev",
            "eth0",
          ]);
          for (const ip of result.ips) {
            assert.ok(eth0[0].addr_info.some((a) => a.local === bare(ip)), ip.address);
          }
          if (version !== "0.3.1") {
            assertOk(await ptp("CHECK", pod, { ...conf, prevResult: result }), `CHECK at ${version}`);
          }
          assertOk(await ptp("DEL", pod, conf), `DEL at ${version}`);
          assert.deepEqual(await addressKeys(), []);
          assert.deepEqual(await hostLinks(), []);
        });
      }

      await t.step("the pods' blocks stay owned by the node and exported to table 119", async () => {
        const blocks = await client.getAll().prefix(keys.blocks()).strings();
        assert.ok(Object.keys(blocks).length >= 2, Object.keys(blocks).join(" "));
        for (const value of Object.values(blocks)) assert.equal(JSON.parse(value).node, coild.nodeName);
        const exported = await node.ipJson<{ dst: string }[]>(["route", "show", "table", "119"]);
        const exported6 = await node.ipJson<{ dst: string }[]>(["-6", "route", "show", "table", "119"]);
        const routes = [...exported, ...exported6].map((r) => formatCidr(parseCidr(r.dst)));
        for (const key of Object.keys(blocks)) {
          const id = key.slice(key.lastIndexOf("/") + 1);
          assert.ok(
            routes.some((r) => r.replace("/", "_") === id),
            `${id} not in table 119: ${routes.join(" ")}`,
          );
        }
      });
    } finally {
      for (const ns of namespaces) await ns[Symbol.asyncDispose]();
    }
  } finally {
    client.close();
  }
});
