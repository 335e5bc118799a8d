// One simulated node for the benchmarks that need coild: a real etcd, a node netns (lo up), a pool,
// and the real coild (scripts/coil daemon) inside the netns; everything removed on dispose.

import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { closeNetns, openNetns } from "../../netlink/netns.ts";
import { startCoild, type TestCoild } from "../helpers/coild.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";

export interface NodeFixture extends AsyncDisposable {
  etcd: TestEtcd;
  client: Etcd3;
  prefix: string;
  node: TestNetns;
  /** The node netns opened, for spawning plugins inside it. */
  nodeFd: number;
  coild: TestCoild;
}

/** Starts etcd, the node and coild with pool `default` over `subnets`. @throws when a part fails. */
export async function startNode(subnets: string[], blockSizeBits = 5): Promise<NodeFixture> {
  await using stack = new AsyncDisposableStack();
  const etcd = stack.use(await startEtcd());
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  stack.defer(() => client.close());
  const prefix = etcd.newPrefix();
  await new PoolStore(client, prefix).createPool(parsePool("default", { subnets, blockSizeBits }));
  const node = stack.use(await createNetns());
  await node.exec(["ip", "link", "set", "lo", "up"]);
  const nodeFd = openNetns(node.path);
  stack.defer(() => closeNetns(nodeFd));
  // No periodic sweep: IPAM-mode requests here name no real netns, and a sweep must not release them
  // in the middle of a measurement.
  const coild = stack.use(await startCoild({ etcd, prefix, node, args: ["--sweep-interval", "0"] }));
  const owned = stack.move();
  return {
    etcd,
    client,
    prefix,
    node,
    nodeFd,
    coild,
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}
