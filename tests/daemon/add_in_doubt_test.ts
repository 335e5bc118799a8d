// An ADD whose address write got no answer (its etcd member stalled; etcd_client.ts does not re-send
// it): coild settles the write and allocates once more, so the ADD succeeds with what etcd holds, and a
// late copy of the write cannot commit afterwards. NodeIpam over the in-memory store, IPAM mode.

import assert from "node:assert/strict";
import type { AddRequest, ApiReply, ApiRequest, DelRequest } from "../../cni/api.ts";
import { createCniService } from "../../daemon/cni_service.ts";
import { KeyedQueue } from "../../daemon/keyed_queue.ts";
import type { PodNetwork } from "../../daemon/nodenet/pod_network.ts";
import { createTeardown } from "../../daemon/teardown.ts";
import { createNodeIpam } from "../../ipam/node_ipam.ts";
import { gate, MemoryStore } from "../helpers/memory_store.ts";

function add(containerId: string): AddRequest {
  return {
    verb: "add",
    mode: "ipam",
    network: "k8s",
    containerId,
    ifName: "eth0",
    netns: "/proc/1/ns/net",
    podNamespace: "default",
    podName: containerId,
    podUid: "",
    mtu: 0,
    hostRouteTable: 0,
  };
}

function del(containerId: string): DelRequest {
  const { network, ifName, netns, podNamespace, podName, podUid } = add(containerId);
  return {
    verb: "del",
    mode: "ipam",
    network,
    containerId,
    ifName,
    netns,
    podNamespace,
    podName,
    podUid,
    hostRouteTable: 0,
  };
}

/** IPAM mode never touches the pod network. */
const noPodNetwork = new Proxy({} as PodNetwork, {
  get: (_, name) => () => assert.fail(`pod network ${String(name)}() called in IPAM mode`),
});

async function withService(
  fn: (call: (req: ApiRequest) => Promise<ApiReply>, store: MemoryStore) => Promise<void>,
) {
  const store = new MemoryStore();
  store.put(store.keys.pool("default"), JSON.stringify({ subnets: ["10.1.0.0/24"], blockSizeBits: 5 }));
  const ipam = await createNodeIpam({ store, node: "node1" });
  const queue = new KeyedQueue();
  const service = createCniService({
    ipam,
    podNetwork: noPodNetwork,
    queue,
    teardown: createTeardown({ ipam, podNetwork: noPodNetwork, queue }),
    etcdHealth: () => Promise.resolve({ ok: true }),
    log: () => {},
  });
  try {
    await fn(service, store);
  } finally {
    await ipam.close();
  }
}

/** The address keys' IPs (the last part of each key). */
function storedIps(store: MemoryStore): string[] {
  return store.keysUnder(store.keys.addresses()).map((k) => k.slice(k.lastIndexOf("/") + 1));
}

function ipOf(reply: ApiReply): string {
  assert.ok(reply.ok, JSON.stringify(reply));
  return reply.result!.ips[0].address.split("/")[0];
}

Deno.test("ADD whose address write is in doubt", async (t) => {
  await t.step("committed then timed out: the ADD answers with the committed address", async () => {
    await withService(async (call, store) => {
      store.inject("putAddresses", { kind: "commit-then-timeout" });
      const reply = await call(add("c1"));
      assert.deepEqual(storedIps(store), [ipOf(reply)]);
    });
  });

  await t.step("still in flight: the ADD gets another address and the late copy fails", async () => {
    await withService(async (call, store) => {
      const late = gate();
      const applied = store.inject("putAddresses", { kind: "late", until: late.until });
      const reply = await call(add("c1"));
      assert.deepEqual(storedIps(store), [ipOf(reply)]);
      assert.equal((await call(del("c1"))).ok, true);
      late.open();
      assert.equal((await applied as { ok: boolean }).ok, false, "the late copy committed");
      assert.deepEqual(storedIps(store), []);
    });
  });

  await t.step("with the settle failing too, the ADD answers 11 and leaves nothing", async () => {
    await withService(async (call, store) => {
      store.inject("putAddresses", { kind: "unavailable" });
      store.inject("fenceBlock", { kind: "unavailable" });
      const reply = await call(add("c1"));
      assert.equal(reply.ok, false);
      assert.equal(!reply.ok && reply.code, 11);
      assert.deepEqual(storedIps(store), []);
    });
  });
});
