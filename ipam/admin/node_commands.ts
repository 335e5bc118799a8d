// `coil node …`: what each node holds in etcd. `node list` and `node remove` (release a dead node's
// blocks and addresses) belong here as further subcommands of the same `node` command.

import type { Command } from "commander";
import { cidrSize, formatCidr } from "../cidr.ts";
import { addEtcdOptions, type EtcdFlagValues } from "./etcd_flags.ts";
import { table, toJson } from "./format.ts";
import { withEtcd } from "./session.ts";
import { readSnapshot } from "./snapshot.ts";

type Flags = EtcdFlagValues & { json?: boolean };

/** Registers `node` and its subcommands on `program`. */
export function registerNodeCommands(program: Command): void {
  const node = program
    .command("node")
    .summary("inspect the blocks nodes hold")
    .description("Inspect nodes: the blocks each node has claimed and the addresses it has handed out.");

  addEtcdOptions(
    node.command("blocks")
      .summary("list the blocks a node holds")
      .description("List the blocks a node holds, by pool, with the number of addresses used in each")
      .argument("<node>", "node name, as coild registers it (the Kubernetes node name)")
      .option(
        "--json",
        "print JSON: {node, live, pools: [{pool, blocks: [{block, addressesUsed, addresses, claimedAt}]}]}",
      ),
  ).action(async (name: string, flags: Flags) => {
    const snapshot = await withEtcd(flags, (client, options) => readSnapshot(client, options.prefix));
    const blocks = snapshot.blocks.filter((b) => b.node === name);
    const live = snapshot.liveNodes.has(name);
    if (flags.json) {
      const pools = [...new Set(blocks.map((b) => b.pool))].map((pool) => ({
        pool,
        blocks: blocks.filter((b) => b.pool === pool).map((b) => ({
          block: formatCidr(b.block),
          addressesUsed: b.addressesUsed,
          addresses: Number(cidrSize(b.block)),
          claimedAt: b.claimedAt,
        })),
      }));
      console.log(toJson({ node: name, live, pools }));
      return;
    }
    const state = live ? "coild running" : "coild not running";
    if (blocks.length === 0) {
      console.log(`Node "${name}" holds no blocks (${state})`);
      return;
    }
    console.log(`Node "${name}" (${state}): ${blocks.length} block(s)`);
    console.log();
    console.log(table(
      ["POOL", "BLOCK", "USED", "CLAIMED-AT"],
      blocks.map((
        b,
      ) => [b.pool, formatCidr(b.block), `${b.addressesUsed}/${cidrSize(b.block)}`, b.claimedAt]),
    ));
  });
}
