// DEL answers before the kernel has unregistered the pod's veth (daemon/nodenet/link_deleter.ts). Against a real
// coild, etcd and kernel: an ADD of the same attachment, or one that gets the released address, while
// old veths still await deletion; and no veth leaks when coild stops or crashes with deletions queued.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";
import {
  addPod,
  cni,
  createPod,
  startNode,
  type TestNode,
  type TestPod,
  waitUntil,
} from "./_lifecycle_fixture.ts";
import { inParallel } from "../helpers/in_parallel.ts";

await removeLeftoverNetns();

interface IpLink {
  ifname: string;
  flags: string[];
  ifalias?: string;
}

const DETACHED = "coil:/detached:";

function vethOf(pod: TestPod): string {
  return "veth" + createHash("sha1").update(`${pod.namespace}.${pod.name}`).digest("hex").slice(0, 11);
}

async function veths(node: TestNode): Promise<IpLink[]> {
  return await node.ns.ipJson<IpLink[]>(["link", "show", "type", "veth"]);
}

async function hostRoutes(node: TestNode): Promise<string[]> {
  const routes = await node.ns.ipJson<{ dst: string; dev: string }[]>(["-4", "route", "show", "proto", "30"]);
  return routes.map((r) => `${r.dst} ${r.dev}`).sort();
}

async function ping(from: TestNetns, to: string): Promise<void> {
  await from.exec(["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", "10", to]);
}

function expectOk(out: { code: number; stdout: string; stderr: string }, what: string): void {
  assert.equal(out.code, 0, `${what}: ${out.stdout}${out.stderr}`);
}

let etcd: TestEtcd;
let client: Etcd3;

Deno.test("DEL leaves the veth to a background deletion that no later ADD or restart can trip over", async (t) => {
  etcd = await startEtcd();
  client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  const pods: TestPod[] = [];
  const newPod = async (name?: string) => {
    const pod = await createPod(name);
    pods.push(pod);
    return pod;
  };
  try {
    await t.step("DEL then ADD of the same attachment while deletions are queued", async () => {
      await using node = await startNode({ etcd, client, subnets: ["10.220.0.0/16"] });
      const group: TestPod[] = [];
      for (let i = 0; i < 16; i++) group.push(await newPod());
      await inParallel(group, 6, async (pod) => void await addPod(node, pod));
      let metOld = 0;
      const ips = new Map<TestPod, string>();
      await Promise.all(group.map(async (pod) => {
        expectOk(await cni(node, "DEL", pod), `DEL ${pod.name}`);
        if ((await veths(node)).some((l) => l.ifname === vethOf(pod))) metOld++;
        ips.set(pod, (await addPod(node, pod))[0]);
      }));
      await waitUntil(
        "no detached veth is left",
        async () => !(await veths(node)).some((l) => l.ifalias?.startsWith(DETACHED)),
      );
      const routes = await hostRoutes(node);
      for (const pod of group) {
        const link = (await veths(node)).find((l) => l.ifname === vethOf(pod));
        assert.ok(link?.flags.includes("UP"), `${vethOf(pod)} is up: ${JSON.stringify(link)}`);
        assert.ok(routes.includes(`${ips.get(pod)} ${vethOf(pod)}`), `host route of ${pod.name}`);
        await ping(pod.ns, "169.254.1.1");
        await ping(node.ns, ips.get(pod)!);
      }
      console.log(`re-ADDs that found the old veth still there: ${metOld} of ${group.length}`);
      for (const pod of group) expectOk(await cni(node, "DEL", pod), "DEL");
    });

    await t.step(
      "an ADD that gets a just-released address reaches the new pod, not the old one",
      async () => {
        // One /27 block: once it is full, the only free addresses are the ones the DELs release.
        await using node = await startNode({ etcd, client, subnets: ["10.221.0.0/27"] });
        const full: { pod: TestPod; ip: string }[] = [];
        for (let i = 0; i < 32; i++) {
          const pod = await newPod();
          const out = await cni(node, "ADD", pod);
          if (out.code !== 0) break;
          full.push({ pod, ip: (out.json as { ips: { address: string }[] }).ips[0].address.split("/")[0] });
        }
        assert.ok(full.length >= 29, `the block holds ${full.length} pods`);
        const leaving = full.slice(0, 8);
        const takers = await Promise.all(leaving.map(() => newPod()));
        const got = await Promise.all(leaving.map(async ({ pod }, i) => {
          expectOk(await cni(node, "DEL", pod), `DEL ${pod.name}`);
          return (await addPod(node, takers[i]))[0];
        }));
        assert.deepEqual(
          [...got].sort(),
          leaving.map((l) => l.ip).sort(),
          "the takers got the released addresses",
        );
        await waitUntil(
          "no detached veth is left",
          async () => !(await veths(node)).some((l) => l.ifalias?.startsWith(DETACHED)),
        );
        const routes = await hostRoutes(node);
        for (const [i, taker] of takers.entries()) {
          assert.ok(
            routes.includes(`${got[i]} ${vethOf(taker)}`),
            `${got[i]} routes to ${taker.name}: ${routes}`,
          );
          // The old pod still holds the address on its eth0; only the taker may answer.
          await ping(node.ns, got[i]);
          await ping(taker.ns, "169.254.1.1");
        }
        for (const { pod } of leaving) {
          assert.deepEqual(
            (await pod.ns.ipJson<IpLink[]>(["link", "show", "type", "veth"])).length,
            0,
            `${pod.name}'s end went with its host veth`,
          );
        }
      },
    );

    for (const how of ["SIGTERM", "SIGKILL"] as const) {
      await t.step(`a ${how} with deletions queued leaves no veth behind after the restart`, async () => {
        await using node = await startNode({ etcd, client, subnets: ["10.222.0.0/16"] });
        const group: TestPod[] = [];
        for (let i = 0; i < 24; i++) group.push(await newPod());
        await inParallel(group, 6, async (pod) => void await addPod(node, pod));
        const [staying, leaving] = [group.slice(0, 4), group.slice(4)];
        await Promise.all(leaving.map(async (pod) => expectOk(await cni(node, "DEL", pod), "DEL")));
        const detached = (await veths(node)).filter((l) => l.ifalias?.startsWith(DETACHED)).length;
        if (how === "SIGTERM") {
          await node.stop();
          // A clean stop finishes the queued deletions before it exits.
          assert.deepEqual(
            (await veths(node)).map((l) => l.ifname).sort(),
            staying.map(vethOf).sort(),
            `after SIGTERM with ${detached} deletions pending`,
          );
          await node.start();
        } else {
          await node.kill();
          await node.start();
          // The start-up repair removed what the crash left: detached veths are stale.
          assert.deepEqual(
            (await veths(node)).map((l) => l.ifname).sort(),
            staying.map(vethOf).sort(),
            `after SIGKILL with ${detached} deletions pending\n${node.coild.log()}`,
          );
        }
        console.log(`${how}: ${detached} of ${leaving.length} veths awaited deletion when coild stopped`);
        for (const pod of staying) {
          expectOk(await cni(node, "CHECK", pod), `CHECK ${pod.name} after the restart`);
          await ping(pod.ns, "169.254.1.1");
        }
        for (const pod of staying) expectOk(await cni(node, "DEL", pod), "DEL");
      });
    }
  } finally {
    for (const pod of pods) await pod.remove();
    client.close();
    await etcd[Symbol.asyncDispose]();
  }
});
