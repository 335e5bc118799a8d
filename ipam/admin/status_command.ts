// `coil status`: utilisation per pool and per node, from one consistent read of etcd.

import type { Command } from "commander";
import { formatCidr } from "../cidr.ts";
import { addEtcdOptions, type EtcdFlagValues } from "./etcd_flags.ts";
import { formatCount, percent, table, toJson } from "./format.ts";
import { withEtcd } from "./session.ts";
import { nodeTable } from "./node_commands.ts";
import { readSnapshot } from "./snapshot.ts";
import { nodeUsage, poolUsage } from "./usage.ts";

type Flags = EtcdFlagValues & { json?: boolean };

/** Registers `status` on `program`. */
export function registerStatusCommand(program: Command): void {
  addEtcdOptions(
    program.command("status")
      .summary("show utilisation per pool and per node")
      .description(
        "Show utilisation per pool (blocks claimed of all blocks; addresses used of those in claimed blocks) " +
          "and per node (blocks held; addresses used of their capacity; whether coild is running).",
      )
      .option(
        "--json",
        "print JSON: {pools, nodes, strayAddresses} (counts that can exceed 2^53 are strings)",
      ),
  ).action(async (flags: Flags) => {
    const snapshot = await withEtcd(flags, (client, options) => readSnapshot(client, options.prefix));
    const pools = snapshot.pools.map((p) => poolUsage(p, snapshot.blocks));
    const nodes = nodeUsage(snapshot.blocks, snapshot.liveNodes, snapshot.recentNodes);
    if (flags.json) {
      console.log(toJson({
        pools: pools.map((u) => ({
          name: u.pool.name,
          subnets: u.pool.subnets.map(formatCidr),
          blockSizeBits: u.pool.blockSizeBits,
          blocksClaimed: u.blocksClaimed,
          blocksTotal: u.blocksTotal,
          addressesUsed: u.addressesUsed,
          addressesInClaimedBlocks: u.addressesInClaimedBlocks,
        })),
        nodes,
        strayAddresses: snapshot.strayAddresses,
      }));
      return;
    }
    if (pools.length === 0) {
      console.log("No pools; create one with: coil pool create default CIDR…");
    } else {
      console.log(table(
        ["POOL", "SUBNETS", "BLOCK-SIZE-BITS", "BLOCKS-CLAIMED", "ADDRESSES-USED", "USE"],
        pools.map((u) => [
          u.pool.name,
          String(u.pool.subnets.length),
          String(u.pool.blockSizeBits),
          `${u.blocksClaimed}/${formatCount(u.blocksTotal)}`,
          `${u.addressesUsed}/${u.addressesInClaimedBlocks}`,
          percent(u.addressesUsed, u.addressesInClaimedBlocks),
        ]),
      ));
    }
    console.log();
    console.log(nodeTable(nodes));
    if (snapshot.strayAddresses > 0) {
      console.log();
      console.log(`Warning: ${snapshot.strayAddresses} address record(s) lie outside every claimed block`);
    }
  });
}
