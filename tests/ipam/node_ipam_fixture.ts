// Shared by the NodeIpam test files: one real etcd per file, a fresh prefix with pools per test, and
// every NodeIpam closed when the file's test ends.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { formatIp } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createEtcdStore } from "../../ipam/etcd_store.ts";
import { IpamError, type IpamErrorKind } from "../../ipam/errors.ts";
import type { IpamStore } from "../../ipam/ipam_store.ts";
import { type Keys, keysFor } from "../../ipam/keys.ts";
import {
  type Allocation,
  type AllocationRequest,
  createNodeIpam,
  type NodeIpam,
  type NodeIpamOptions,
} from "../../ipam/node_ipam.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";

export function request(containerId: string, podNamespace = "default", network = "k8s"): AllocationRequest {
  return {
    network,
    containerId,
    ifName: "eth0",
    podNamespace,
    podName: `pod-${containerId}`,
    podUid: `uid-${containerId}`,
    netns: `/run/netns/${containerId}`,
  };
}

export function ips(allocation: Allocation): string[] {
  return allocation.addresses.map((a) => formatIp(a.address));
}

export async function assertIpamError(promise: Promise<unknown>, kind: IpamErrorKind, message?: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof IpamError, `expected an IpamError, got ${err}`);
    assert.equal(err.kind, kind, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

export interface NodeIpamSetup {
  prefix: string;
  keys: Keys;
  /** The etcd store of this prefix, as coild builds it. */
  store: IpamStore;
  /** A NodeIpam for `node` on this prefix, closed with the fixture. */
  open(node: string, extra?: Partial<NodeIpamOptions>): Promise<NodeIpam>;
}

export interface NodeIpamFixture extends AsyncDisposable {
  etcd: TestEtcd;
  client: Etcd3;
  /** A fresh prefix holding the given pools (name → subnets). */
  setup(pools: Record<string, string[]>, blockSizeBits?: number): Promise<NodeIpamSetup>;
}

export async function startNodeIpamFixture(): Promise<NodeIpamFixture> {
  const etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 2000 });
  const opened: NodeIpam[] = [];
  return {
    etcd,
    client,
    async setup(pools, blockSizeBits = 5) {
      const prefix = etcd.newPrefix();
      const keys = keysFor(prefix);
      const store = createEtcdStore(client, prefix);
      for (const [name, subnets] of Object.entries(pools)) {
        await client.put(keys.pool(name)).value(JSON.stringify({ subnets, blockSizeBits }));
      }
      const open = async (node: string, extra: Partial<NodeIpamOptions> = {}) => {
        const ipam = await createNodeIpam({ store, node, ...extra });
        opened.push(ipam);
        return ipam;
      };
      return { prefix, keys, store, open };
    },
    async [Symbol.asyncDispose]() {
      try {
        await Promise.all(opened.map((ipam) => ipam.close()));
        client.close();
      } finally {
        await etcd.stop();
      }
    },
  };
}
