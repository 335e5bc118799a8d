// Coil's admin CLI in the lab, through scripts/coil exactly as an operator runs it: pools are created
// and the blocks each node holds are read from etcd, from the management namespace.

import { formatCidr, parseCidr } from "../../ipam/cidr.ts";
import type { LabPlan } from "./plan.ts";
import { inNetns, run } from "./run.ts";

/** scripts/coil, which runs main.ts as the compiled binary would. */
export const COIL = new URL("../coil", import.meta.url).pathname;

/** True when `scripts/coil daemon --help` succeeds, i.e. coild exists. */
export async function coildAvailable(): Promise<boolean> {
  const out = await run(COIL, ["daemon", "--help"], { check: false });
  return out.code === 0;
}

/** Creates the lab's pools with `coil pool create`, run in the management namespace. */
export async function createPools(plan: LabPlan): Promise<void> {
  for (const pool of plan.pools) {
    await admin(plan, [
      "pool",
      "create",
      pool.name,
      ...pool.subnets,
      "--block-size-bits",
      String(pool.blockSizeBits),
    ]);
  }
}

/** A block as etcd records it. */
export interface HeldBlock {
  pool: string;
  /** Canonical CIDR text, as `ip route` prints it. */
  block: string;
  addressesUsed: number;
}

/** The blocks `node` holds in etcd (`coil node blocks --json`). Throws when etcd does not answer. */
export async function heldBlocks(plan: LabPlan, node: string): Promise<HeldBlock[]> {
  const out = await admin(plan, ["node", "blocks", node, "--json"]);
  const view = JSON.parse(out) as {
    pools: { pool: string; blocks: { block: string; addressesUsed: number }[] }[];
  };
  return view.pools.flatMap((pool) =>
    pool.blocks.map((b) => ({
      pool: pool.pool,
      block: formatCidr(parseCidr(b.block)),
      addressesUsed: b.addressesUsed,
    }))
  );
}

/** Who holds an address, as etcd records it (`coil ip show --json`). */
export interface AddressHolder {
  allocated: boolean;
  pool?: string;
  block?: string;
  blockOwner?: string;
  podNamespace?: string;
  podName?: string;
}

/** Looks `address` up in etcd. Throws when etcd does not answer. */
export async function addressHolder(plan: LabPlan, address: string): Promise<AddressHolder> {
  const view = JSON.parse(await admin(plan, ["ip", "show", address, "--json"])) as {
    allocated: boolean;
    pool?: string | null;
    block?: string | null;
    blockOwner?: string | null;
    record?: { podNamespace?: string; podName?: string } | null;
  };
  return {
    allocated: view.allocated,
    pool: view.pool ?? undefined,
    block: view.block ?? undefined,
    blockOwner: view.blockOwner ?? undefined,
    podNamespace: view.record?.podNamespace,
    podName: view.record?.podName,
  };
}

async function admin(plan: LabPlan, args: string[]): Promise<string> {
  const out = await inNetns(plan.mgmt.netns, COIL, [...args, "--etcd-endpoints", plan.mgmt.etcdEndpoint]);
  return out.stdout;
}
