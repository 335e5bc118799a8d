// An address write that the etcd client sent twice: the first try committed on a member that then
// stalled (SIGSTOPped leader, tests/faults/pause_test.ts), and the client's failover re-sent the same
// txn to another member, whose compare fails on the keys the first try wrote. The write is ours.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import type { IpamStore } from "../../ipam/ipam_store.ts";
import { keysFor } from "../../ipam/keys.ts";
import { createNodeIpam } from "../../ipam/node_ipam.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { ips, request } from "./node_ipam_fixture.ts";

/** The real etcd store, but its next `replays` putAddresses() calls are sent twice, as the failover does. */
function replaying(store: IpamStore, replays: number): IpamStore {
  return {
    ...store,
    async putAddresses(guards, addresses) {
      if (replays-- <= 0) return await store.putAddresses(guards, addresses);
      await store.putAddresses(guards, addresses);
      return await store.putAddresses(guards, addresses);
    },
  };
}

/** Address keys under `prefix` as `ip → containerId`. */
async function addressKeys(client: Etcd3, prefix: string): Promise<Map<string, string>> {
  const kvs = await client.getAll().prefix(keysFor(prefix).addresses()).strings();
  return new Map(
    Object.entries(kvs).map((
      [key, value],
    ) => [key.slice(key.lastIndexOf("/") + 1), JSON.parse(value).containerId]),
  );
}

Deno.test("allocate() whose write was sent twice keeps the address the first try committed", async () => {
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix });
  try {
    await client.put(keysFor(prefix).pool("default")).value(
      JSON.stringify({ subnets: ["10.1.0.0/24"], blockSizeBits: 5 }),
    );
    const store = createEtcdStore(client, prefix);
    const ipam = await createNodeIpam({ store: replaying(store, 1), node: "node1" });
    try {
      const first = await ipam.allocate(request("c1"));
      assert.deepEqual([...(await addressKeys(client, prefix)).entries()], [[ips(first)[0], "c1"]]);
      // A repeat ADD returns the same address, and DEL frees what etcd holds.
      assert.deepEqual(ips(await ipam.allocate(request("c1"))), ips(first));
      await ipam.release("k8s", "c1", "eth0");
      assert.deepEqual([...(await addressKeys(client, prefix)).entries()], []);
    } finally {
      await ipam.close();
    }
  } finally {
    client.close();
  }
});
