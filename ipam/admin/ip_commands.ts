// `coil ip show ADDRESS`: which pod holds an address, or why it is free, from the pool definitions,
// the block key and the address key.

import type { Command } from "commander";
import { lookupAddresses } from "../address_lookup.ts";
import { formatCidr, formatIp, tryParseIp } from "../cidr.ts";
import { IpamError } from "../errors.ts";
import { addEtcdOptions, type EtcdFlagValues } from "./etcd_flags.ts";
import { fields, toJson } from "./format.ts";
import { withEtcd } from "./session.ts";

type Flags = EtcdFlagValues & { json?: boolean };

/** Registers `ip` and its subcommands on `program`. */
export function registerIpCommands(program: Command): void {
  const ip = program
    .command("ip")
    .summary("look up pod addresses")
    .description("Look up pod addresses.");

  addEtcdOptions(
    ip.command("show")
      .summary("show who holds an address")
      .description(
        "Show the pod holding an address (container, interface, pod, netns, node), or say that it is not allocated",
      )
      .argument("<address>", "an IPv4 or IPv6 address")
      .option("--json", "print JSON: {address, allocated, pool, block, blockOwner, record}"),
  ).action(async (text: string, flags: Flags) => {
    const address = tryParseIp(text);
    if (!address) throw new IpamError("invalid", `Invalid IP address "${text}"`);
    const shown = formatIp(address);
    const found = await withEtcd(
      flags,
      async (client, options) => (await lookupAddresses(client, options.prefix, [address])).get(address),
    );
    if (flags.json) {
      console.log(toJson({
        address: shown,
        allocated: found?.record !== undefined,
        pool: found?.pool.name ?? null,
        block: found ? formatCidr(found.block) : null,
        blockOwner: found?.owner ?? null,
        record: found?.record ?? null,
      }));
    } else if (!found) {
      console.log(`${shown} is not allocated: it is in no pool`);
    } else if (!found.record) {
      const claim = found.owner === undefined
        ? "is not claimed by any node"
        : `is claimed by node "${found.owner}"`;
      console.log(
        `${shown} is not allocated: block ${formatCidr(found.block)} of pool "${found.pool.name}" ${claim}`,
      );
    } else {
      const r = found.record;
      console.log(fields([
        ["Address", shown],
        ["Pool", found.pool.name],
        ["Block", `${formatCidr(found.block)}, claimed by node "${found.owner ?? "(none)"}"`],
        ["Node", r.node],
        ["Pod", `${r.podNamespace}/${r.podName} (uid ${r.podUid})`],
        ["Container", r.containerId],
        ["Interface", r.ifName],
        ["Netns", r.netns],
        ["Network", r.network],
        ["Allocated at", r.createdAt],
      ]));
    }
  });
}
