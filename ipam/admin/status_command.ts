// `coil status`: utilisation per pool and per node, from one consistent read of etcd, and etcd's raised
// alarms (NOSPACE: no address can be allocated until an operator frees space).

import type { Command } from "commander";
import { formatCidr } from "../cidr.ts";
import { describeAlarms, type EtcdAlarm, listAlarms } from "../etcd_alarms.ts";
import { conciseCause } from "../etcd_client.ts";
import { addEtcdOptions, type EtcdFlagValues } from "./etcd_flags.ts";
import { formatCount, percent, table, toJson } from "./format.ts";
import { readSchemaStatus } from "./schema_status.ts";
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
        "print JSON: {schemaVersion, pools, nodes, strayAddresses, etcdAlarms} (counts that can exceed 2^53 are strings)",
      ),
  ).action(async (flags: Flags) => {
    const { schema, snapshot, alarms } = await withEtcd(flags, async (client, options) => ({
      schema: await readSchemaStatus(client, options.prefix),
      snapshot: await readSnapshot(client, options.prefix),
      // The list may need more rights than Coil's prefix (an etcd user limited to it): say so, go on.
      alarms: await listAlarms(client).catch((err: Error) => conciseCause(err.message)),
    }));
    const pools = snapshot.pools.map((p) => poolUsage(p, snapshot.blocks));
    const nodes = nodeUsage(snapshot.blocks, snapshot.liveNodes, snapshot.recentNodes);
    if (flags.json) {
      console.log(toJson({
        schemaVersion: schema.version,
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
        etcdAlarms: typeof alarms === "string" ? null : alarms,
      }));
      return;
    }
    console.log(`${schema.line}\n`);
    const alarmLine = alarmSummary(alarms);
    if (alarmLine) console.log(`${alarmLine}\n`);
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

/** The line on etcd's alarms, or undefined when none is raised; `alarms` is the cause when unreadable. */
function alarmSummary(alarms: EtcdAlarm[] | string): string | undefined {
  if (typeof alarms === "string") return `Warning: cannot list etcd's alarms: ${alarms}`;
  const text = describeAlarms(alarms);
  return text && `Warning: ${text}`;
}
