// The CNI service's rules about what a failed call may undo, and the one teardown order, call by call:
// NodeIpam over the in-memory store, and a pod network whose steps a test can make fail. The kernel side
// of the same rules runs against a real coild in attachment_safety_test.ts.

import assert from "node:assert/strict";
import type { AddRequest, ApiReply, Attachment } from "../../cni/api.ts";
import { createCniService } from "../../daemon/cni_service.ts";
import { DaemonError } from "../../daemon/errors.ts";
import { KeyedQueue } from "../../daemon/keyed_queue.ts";
import type { PodNetwork } from "../../daemon/nodenet/pod_network.ts";
import { createTeardown } from "../../daemon/teardown.ts";
import { createNodeIpam, type NodeIpam } from "../../ipam/node_ipam.ts";
import { MemoryStore } from "../helpers/memory_store.ts";

const NETWORK = "k8s";

function attachment(containerId: string): Attachment {
  return {
    network: NETWORK,
    containerId,
    ifName: "eth0",
    netns: "/proc/1/ns/net",
    podNamespace: "default",
    podName: containerId,
    podUid: "",
  };
}

function add(containerId: string, extra: Partial<AddRequest> = {}): AddRequest {
  return { verb: "add", mode: "main", ...attachment(containerId), mtu: 0, hostRouteTable: 0, ...extra };
}

/** A pod network that records its calls and fails a step while `failing` names it. */
function fakePodNetwork() {
  const calls: string[] = [];
  const failing = new Set<string>();
  const step = (name: string, containerId: string) => {
    calls.push(`${name} ${containerId}`);
    if (failing.has(name)) throw new DaemonError(999, `${name} failed`);
  };
  const network: PodNetwork = {
    verifyNetns: () => {},
    setup: (req) => {
      step("setup", req.containerId);
      return { interfaces: [], ips: [], routes: [] };
    },
    existing: (req) => {
      calls.push(`existing ${req.containerId}`);
      return undefined;
    },
    check: () => {},
    destroy: (a) => Promise.resolve().then(() => step("destroy", a.containerId)),
    hostLinks: () => new Map(),
  };
  return { network, calls, failing };
}

async function withService(
  fn: (
    call: (req: Parameters<ReturnType<typeof createCniService>>[0]) => Promise<ApiReply>,
    ipam: NodeIpam,
    pods: ReturnType<typeof fakePodNetwork>,
    store: MemoryStore,
  ) => Promise<void>,
): Promise<void> {
  const store = new MemoryStore();
  store.put(store.keys.pool("default"), JSON.stringify({ subnets: ["10.1.0.0/24"], blockSizeBits: 5 }));
  const ipam = await createNodeIpam({ store, node: "node1" });
  const pods = fakePodNetwork();
  const queue = new KeyedQueue();
  const service = createCniService({
    ipam,
    podNetwork: pods.network,
    queue,
    teardown: createTeardown({ ipam, podNetwork: pods.network, queue }),
    etcdHealth: () => Promise.resolve({ ok: true }),
    log: () => {},
  });
  try {
    await fn(service, ipam, pods, store);
  } finally {
    await ipam.close();
  }
}

function addressKeys(store: MemoryStore): number {
  return store.keysUnder(store.keys.addresses()).length;
}

Deno.test("ADD undoes only what the call itself allocated", async (t) => {
  await t.step("a first ADD whose setup fails releases its new allocation", async () => {
    await withService(async (call, ipam, pods, store) => {
      pods.failing.add("setup");
      const reply = await call(add("c1"));
      assert.equal(reply.ok, false);
      assert.equal(ipam.find(NETWORK, "c1", "eth0"), undefined);
      assert.equal(addressKeys(store), 0);
    });
  });

  await t.step("a repeat ADD whose setup fails keeps the earlier allocation", async () => {
    await withService(async (call, ipam, pods, store) => {
      assert.equal((await call(add("c1"))).ok, true);
      const first = ipam.find(NETWORK, "c1", "eth0");
      pods.failing.add("setup");
      const again = await call(add("c1", { podNamespace: "", podName: "" }));
      assert.equal(again.ok, false);
      assert.deepEqual(ipam.find(NETWORK, "c1", "eth0"), first, "the first ADD's allocation stands");
      assert.equal(addressKeys(store), 1);
      assert.deepEqual(
        pods.calls.slice(-2),
        ["existing c1", "setup c1"],
        "the repeat looked for the intact network first",
      );
    });
  });
});

Deno.test("every teardown removes the pod network before the addresses", async (t) => {
  await t.step("DEL whose veth removal fails keeps the addresses, and a retry finishes", async () => {
    await withService(async (call, ipam, pods, store) => {
      await call(add("c1"));
      pods.failing.add("destroy");
      const del = { ...attachment("c1"), verb: "del" as const, mode: "main" as const, hostRouteTable: 0 };
      assert.equal((await call(del)).ok, false);
      assert.ok(ipam.find(NETWORK, "c1", "eth0"), "the address stays while a host route may point at it");
      assert.equal(addressKeys(store), 1);
      pods.failing.delete("destroy");
      assert.equal((await call(del)).ok, true);
      assert.equal(addressKeys(store), 0);
    });
  });

  await t.step("GC: a failed veth removal keeps that attachment's addresses", async () => {
    await withService(async (call, ipam, pods, store) => {
      for (const id of ["keep", "gone-1", "gone-2"]) await call(add(id));
      pods.failing.add("destroy");
      const gc = {
        verb: "gc" as const,
        network: NETWORK,
        validAttachments: [{ containerId: "keep", ifName: "eth0" }],
      };
      assert.equal((await call(gc)).ok, false);
      assert.equal(addressKeys(store), 3, "nothing released while its veth may still route to it");
      pods.failing.delete("destroy");
      assert.equal((await call(gc)).ok, true);
      assert.deepEqual(ipam.allocations().map((a) => a.containerId), ["keep"]);
      assert.equal(addressKeys(store), 1);
      const order = pods.calls.filter((c) => c.startsWith("destroy gone-1"));
      assert.ok(order.length >= 2, "GC destroyed the veth on each try");
    });
  });
});
