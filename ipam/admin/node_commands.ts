// `coil node …`: the nodes known to etcd (by their blocks or their running or recently alive coild), the
// blocks each holds, and `node remove`, which gives a gone node's blocks and addresses back to the pools.

import type { Command } from "commander";
import { aggregate } from "../aggregate.ts";
import { formatCidr } from "../cidr.ts";
import { formatSeconds } from "../node_presence.ts";
import { removeNode } from "../node_removal.ts";
import { addEtcdOptions, type EtcdFlagValues } from "./etcd_flags.ts";
import { percent, table, toJson } from "./format.ts";
import { withEtcd } from "./session.ts";
import { readSnapshot } from "./snapshot.ts";
import { blockCapacity, type NodeUsage, nodeUsage } from "./usage.ts";

type Flags = EtcdFlagValues & { json?: boolean };

/** The human view of `node list` and of the node part of `status`. */
export function nodeTable(nodes: NodeUsage[]): string {
  if (nodes.length === 0) return "No nodes hold blocks and no coild is running";
  return table(
    ["NODE", "COILD", "BLOCKS", "ADDRESSES-USED", "USE"],
    nodes.map((n) => [
      n.node,
      coildState(n.live, n.removableInSeconds),
      String(n.blocks),
      `${n.addressesUsed}/${n.capacity}`,
      percent(n.addressesUsed, n.capacity),
    ]),
  );
}

/**
 * "running"; "not running" for a node that may be removed; or, for one alive within its
 * --node-dead-after, "not running, alive recently (removable in 9m11s)".
 */
function coildState(live: boolean, removableInSeconds: number | undefined): string {
  if (live) return "running";
  if (removableInSeconds === undefined) return "not running";
  return `not running, alive recently (removable in ${formatSeconds(removableInSeconds)})`;
}

/** Registers `node` and its subcommands on `program`. */
export function registerNodeCommands(program: Command): void {
  const node = program
    .command("node")
    .summary("list nodes, inspect their blocks, remove gone ones")
    .description(
      "Nodes: the blocks each node has claimed, the addresses it has handed out, whether its coild is " +
        "running (its lease-bound key exists) or was alive within its --node-dead-after, and removal of a " +
        "gone node's blocks and addresses.",
    );

  addEtcdOptions(
    node.command("list")
      .summary("list nodes with their blocks, addresses and liveness")
      .description(
        "List every node that holds blocks or runs coild: blocks held, addresses used of their capacity, " +
          "and whether coild is running, was alive recently (a pause, a restart, a partition: not yet " +
          "removable without --force), or not",
      )
      .option(
        "--json",
        "print JSON: [{node, live, removableInSeconds (only when alive recently), blocks, addressesUsed, capacity}]",
      ),
  ).action(async (flags: Flags) => {
    const snapshot = await withEtcd(flags, (client, options) => readSnapshot(client, options.prefix));
    const nodes = nodeUsage(snapshot.blocks, snapshot.liveNodes, snapshot.recentNodes);
    if (flags.json) {
      console.log(toJson(nodes));
      return;
    }
    console.log(nodeTable(nodes));
  });

  addEtcdOptions(
    node.command("remove")
      .summary("release all blocks and addresses of a gone node")
      .description(
        "Release every block the node holds, with the addresses in it, back to the pools (one etcd " +
          "transaction per block). Refused while the node's coild runs or was alive within its " +
          "--node-dead-after (default 10 minutes), unless --force: a coild that is only paused or cut off " +
          "from etcd comes back and keeps using the addresses of its pods",
      )
      .argument("<node>", "node name, as coild registers it (the Kubernetes node name)")
      .option("--force", "remove now: only for a host known to be down (powered off, reinstalled)")
      .option("--json", "print JSON: {node, wasAlive, wasRecentlyAlive, blocks: [{pool, block, addresses}]}"),
  ).action(async (name: string, flags: Flags & { force?: boolean }) => {
    const removal = await withEtcd(
      flags,
      (client, options) => removeNode(client, options.prefix, name, { force: flags.force }),
      { writes: "coil node remove" },
    );
    if (flags.json) {
      console.log(toJson({
        node: removal.node,
        wasAlive: removal.wasAlive,
        wasRecentlyAlive: removal.wasRecentlyAlive,
        blocks: removal.blocks.map((b) => ({
          pool: b.pool,
          block: formatCidr(b.block),
          addresses: b.addresses,
        })),
      }));
      return;
    }
    if (removal.wasAlive) console.log(`Warning: node "${name}" was running coild (--force)`);
    else if (removal.wasRecentlyAlive) console.log(`Warning: node "${name}" was alive recently (--force)`);
    if (removal.blocks.length === 0) {
      console.log(`Node "${name}" holds no blocks: nothing to release`);
      return;
    }
    for (const b of removal.blocks) {
      console.log(
        `Released block ${formatCidr(b.block)} of pool "${b.pool}" with ${b.addresses} address(es)`,
      );
    }
    const addresses = removal.blocks.reduce((sum, b) => sum + b.addresses, 0);
    console.log(`Removed node "${name}": ${removal.blocks.length} block(s), ${addresses} address(es)`);
  });

  addEtcdOptions(
    node.command("blocks")
      .summary("list the blocks a node holds and the prefixes it exports")
      .description(
        "List the blocks a node holds, by pool, with the number of addresses used in each, and the " +
          "prefixes its coild exports for them: the fewest that cover exactly those blocks (buddy blocks " +
          "merge, two /27s into one /26)",
      )
      .argument("<node>", "node name, as coild registers it (the Kubernetes node name)")
      .option(
        "--json",
        "print JSON: {node, live, exported: [prefix], pools: [{pool, blocks: [{block, addressesUsed, " +
          "addresses, claimedAt}]}]}",
      ),
  ).action(async (name: string, flags: Flags) => {
    const snapshot = await withEtcd(flags, (client, options) => readSnapshot(client, options.prefix));
    const blocks = snapshot.blocks.filter((b) => b.node === name);
    const live = snapshot.liveNodes.has(name);
    const state = `coild ${coildState(live, snapshot.recentNodes.get(name))}`;
    // As coild exports them: no prefix wider than a pool subnet.
    const bounds = snapshot.pools.flatMap((p) => p.subnets);
    const exported = aggregate(blocks.map((b) => b.block), bounds).map(formatCidr);
    if (flags.json) {
      const pools = [...new Set(blocks.map((b) => b.pool))].map((pool) => ({
        pool,
        blocks: blocks.filter((b) => b.pool === pool).map((b) => ({
          block: formatCidr(b.block),
          addressesUsed: b.addressesUsed,
          addresses: blockCapacity(b.block),
          claimedAt: b.claimedAt,
        })),
      }));
      console.log(toJson({ node: name, live, exported, pools }));
      return;
    }
    if (blocks.length === 0) {
      console.log(`Node "${name}" holds no blocks (${state})`);
      return;
    }
    console.log(
      `Node "${name}" (${state}): ${blocks.length} block(s), exported as ${exported.length} ` +
        `prefix(es): ${exported.join(", ")}`,
    );
    console.log();
    console.log(table(
      ["POOL", "BLOCK", "USED", "CLAIMED-AT"],
      blocks.map((
        b,
      ) => [b.pool, formatCidr(b.block), `${b.addressesUsed}/${blockCapacity(b.block)}`, b.claimedAt]),
    ));
  });
}
