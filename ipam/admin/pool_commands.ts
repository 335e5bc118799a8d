// `coil pool …`: create, add-subnet, list, show and delete address pools, straight in etcd.

import { type Command, InvalidArgumentError } from "commander";
import { formatCidr } from "../cidr.ts";
import { IpamError } from "../errors.ts";
import { usableAddresses } from "../block_allocator.ts";
import {
  blockPrefix,
  DEFAULT_BLOCK_SIZE_BITS,
  MAX_BLOCK_SIZE_BITS,
  MIN_BLOCK_SIZE_BITS,
  parsePool,
  type Pool,
} from "../pool.ts";
import { PoolStore } from "../pool_store.ts";
import { addEtcdOptions, type EtcdFlagValues } from "./etcd_flags.ts";
import { fields, formatCount, percent, table, toJson } from "./format.ts";
import { withEtcd } from "./session.ts";
import { readSnapshot } from "./snapshot.ts";
import { poolUsage } from "./usage.ts";

type Flags = EtcdFlagValues & { json?: boolean; blockSizeBits?: number };

/** Registers `pool` and its subcommands on `program`. */
export function registerPoolCommands(program: Command): void {
  const pool = program
    .command("pool")
    .summary("manage address pools")
    .description(
      'Manage address pools. A pool is a set of subnets cut into blocks that nodes claim. The pool "default" ' +
        "serves every namespace without a pool of its own; any other pool serves only the Kubernetes " +
        "namespace of the same name.",
    );

  addEtcdOptions(
    pool.command("create")
      .summary("create a pool")
      .description(
        "Create a pool from one or more IPv4 and/or IPv6 subnets; its block size is fixed from then on",
      )
      .argument("<name>", 'pool name: "default" or a namespace name')
      .argument("<cidr...>", "subnets, e.g. 10.1.0.0/16 fd00:1::/48 (no host bits, no overlap with any pool)")
      .option(
        "--block-size-bits <n>",
        `log2 of the addresses per block, ${MIN_BLOCK_SIZE_BITS} to ${MAX_BLOCK_SIZE_BITS} ` +
          `(default ${DEFAULT_BLOCK_SIZE_BITS}: blocks of 32 addresses, /27 and /123); a block's first ` +
          "address is the pods' gateway and an IPv4 block's last their broadcast address, so a block of " +
          "2^n serves 2^n - 1 IPv6 pods or 2^n - 2 IPv4 pods (one in a /31)",
        parseWholeNumber,
      ),
  ).action(async (name: string, cidrs: string[], flags: Flags) => {
    const definition = parsePool(name, { subnets: cidrs, blockSizeBits: flags.blockSizeBits });
    await withEtcd(
      flags,
      (client, options) => new PoolStore(client, options.prefix).createPool(definition),
      { writes: "coil pool create" },
    );
    console.log(`Created pool "${name}": ${describePool(definition)}`);
  });

  addEtcdOptions(
    pool.command("add-subnet")
      .summary("add a subnet to a pool")
      .description("Add a subnet to a pool; the pool keeps its block size")
      .argument("<name>", "pool name")
      .argument("<cidr>", "the new subnet (no host bits, no overlap with any pool)"),
  ).action(async (name: string, cidr: string, flags: Flags) => {
    const grown = await withEtcd(
      flags,
      (client, options) => new PoolStore(client, options.prefix).addSubnet(name, cidr),
      { writes: "coil pool add-subnet" },
    );
    console.log(
      `Added ${formatCidr(grown.subnets[grown.subnets.length - 1])} to pool "${name}": ${
        describePool(grown)
      }`,
    );
  });

  addEtcdOptions(
    pool.command("list")
      .summary("list pools")
      .description("List pools with their subnets and block size")
      .option("--json", "print JSON: [{name, subnets, blockSizeBits}]"),
  ).action(async (flags: Flags) => {
    const pools = await withEtcd(
      flags,
      (client, options) => new PoolStore(client, options.prefix).listPools(),
    );
    if (flags.json) {
      console.log(
        toJson(
          pools.map((p) => ({
            name: p.name,
            subnets: p.subnets.map(formatCidr),
            blockSizeBits: p.blockSizeBits,
          })),
        ),
      );
    } else if (pools.length === 0) {
      console.log("No pools; create one with: coil pool create default CIDR…");
    } else {
      const rows = pools.map((p) => [p.name, String(p.blockSizeBits), p.subnets.map(formatCidr).join(", ")]);
      console.log(table(["NAME", "BLOCK-SIZE-BITS", "SUBNETS"], rows));
    }
  });

  addEtcdOptions(
    pool.command("show")
      .summary("show a pool's utilisation per subnet")
      .description("Show a pool: per subnet, blocks claimed of all blocks and addresses used")
      .argument("<name>", "pool name")
      .option("--json", "print JSON (counts that can exceed 2^53 are decimal strings)"),
  ).action(async (name: string, flags: Flags) => {
    const snapshot = await withEtcd(flags, (client, options) => readSnapshot(client, options.prefix));
    const found = snapshot.pools.find((p) => p.name === name);
    if (!found) throw new IpamError("not-found", `Pool "${name}" not found`);
    const usage = poolUsage(found, snapshot.blocks);
    if (flags.json) {
      console.log(toJson({
        name,
        blockSizeBits: found.blockSizeBits,
        blocksClaimed: usage.blocksClaimed,
        blocksTotal: usage.blocksTotal,
        addressesUsed: usage.addressesUsed,
        addressesInClaimedBlocks: usage.addressesInClaimedBlocks,
        subnets: usage.subnets.map((s) => ({ ...s, subnet: formatCidr(s.subnet) })),
      }));
      return;
    }
    console.log(fields([
      ["Pool", name],
      ["Block size", `2^${found.blockSizeBits} = ${describeBlockSize(found)}`],
      ["Blocks", `${usage.blocksClaimed} claimed of ${formatCount(usage.blocksTotal)}`],
      [
        "Addresses",
        `${usage.addressesUsed} used of ${usage.addressesInClaimedBlocks} in claimed blocks ` +
        `(${percent(usage.addressesUsed, usage.addressesInClaimedBlocks)})`,
      ],
    ]));
    console.log();
    console.log(table(
      ["SUBNET", "BLOCK", "BLOCKS-CLAIMED", "ADDRESSES-USED"],
      usage.subnets.map((s) => [
        formatCidr(s.subnet),
        `/${s.blockPrefix}`,
        `${s.blocksClaimed}/${formatCount(s.blocksTotal)}`,
        `${s.addressesUsed}/${formatCount(s.addresses)}`,
      ]),
    ));
  });

  addEtcdOptions(
    pool.command("delete")
      .summary("delete a pool whose blocks hold no address")
      .description(
        "Delete a pool and its blocks; refused while any of its blocks holds an address. A node that " +
          "kept an empty block of the pool drops it at its next release or sweep",
      )
      .argument("<name>", "pool name"),
  ).action(async (name: string, flags: Flags) => {
    await withEtcd(
      flags,
      (client, options) => new PoolStore(client, options.prefix).deletePool(name),
      { writes: "coil pool delete" },
    );
    console.log(`Deleted pool "${name}"`);
  });
}

function describePool(pool: Pool): string {
  const prefixes = [...new Set(pool.subnets.map((s) => `/${blockPrefix(pool, s.family)}`))].join(" and ");
  return `${pool.subnets.map(formatCidr).join(", ")} in blocks of ${describeBlockSize(pool)} (${prefixes})`;
}

/** E.g. `32 addresses, 30 for IPv4 pods and 31 for IPv6 pods`: the reserved addresses left out. */
function describeBlockSize(pool: Pool): string {
  const size = 2 ** pool.blockSizeBits;
  const families = ([4, 6] as const).filter((f) => pool.subnets.some((s) => s.family === f));
  const usable = families.map((f) => `${usableAddresses(size, f)} for IPv${f} pods`);
  return `${size} addresses, ${usable.join(" and ")}`;
}

function parseWholeNumber(text: string): number {
  if (!/^(0|[1-9][0-9]{0,5})$/.test(text)) throw new InvalidArgumentError(`"${text}" is not a whole number`);
  return Number(text);
}
