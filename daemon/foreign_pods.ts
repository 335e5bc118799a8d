// A host's pods belong to the node name coild ran under when it set them up. Restarted under another
// name, coild would take their veths for leftovers and delete them, and withdraw their blocks from table
// 119; going back to the old name would not repair them. coild asks etcd about such veths first.

import type { Etcd3 } from "etcd3";
import { lookupAddresses } from "../ipam/address_lookup.ts";
import { formatIp, type IpAddress, tryParseIp } from "../ipam/cidr.ts";
import type { Allocation } from "../ipam/node_ipam.ts";
import { routeDump } from "../netlink/route.ts";
import type { NetlinkSocket } from "../netlink/socket.ts";
import type { PodNetwork } from "./nodenet/pod_network.ts";
import { aliasesOf } from "./nodenet/veth_name.ts";

/** A pod on this host whose address record names another node. */
export interface ForeignPod {
  link: string;
  address: string;
  node: string;
  pod: string;
}

/**
 * The host veths tagged by Coil that none of `allocations` holds and whose host route leads to an
 * address that etcd records for that same attachment under another node name. Veths that etcd knows
 * nothing about are left to the start-up repair, which removes them as leftovers.
 * @throws {IpamError} "unavailable" when etcd fails.
 */
export async function findForeignPods(options: {
  host: NetlinkSocket;
  podNetwork: Pick<PodNetwork, "hostLinks">;
  allocations: readonly Allocation[];
  client: Etcd3;
  prefix: string;
  node: string;
  protocol: number;
}): Promise<ForeignPod[]> {
  const known = new Set(options.allocations.flatMap((a) => aliasesOf(a)));
  const unknown = [...options.podNetwork.hostLinks().values()].filter((l) => !known.has(l.alias!));
  if (unknown.length === 0) return [];
  const addressesOf = new Map<number, IpAddress[]>();
  for (const route of routeDump(options.host, { protocol: options.protocol })) {
    const ip = route.oif === undefined ? undefined : tryParseIp(route.dst.split("/")[0]);
    if (ip) addressesOf.set(route.oif!, [...(addressesOf.get(route.oif!) ?? []), ip]);
  }
  const candidates = unknown.flatMap((link) =>
    (addressesOf.get(link.index) ?? []).map((ip) => ({ link, ip }))
  );
  const holders = await lookupAddresses(options.client, options.prefix, candidates.map((c) => c.ip));
  return candidates.flatMap(({ link, ip }) => {
    const record = holders.get(ip)?.record;
    if (!record || record.node === options.node || !aliasesOf(record).includes(link.alias!)) return [];
    const pod = record.podName
      ? `${record.podNamespace}/${record.podName}`
      : `container ${record.containerId}`;
    return [{ link: link.name, address: formatIp(ip), node: record.node, pod }];
  });
}

/** What coild says when it refuses to start over another node's pods. */
export function foreignPodsMessage(node: string, pods: ForeignPod[]): string {
  const owners = [...new Set(pods.map((p) => p.node))];
  const example = pods[0];
  return `Refusing to start as node "${node}": this host runs ${pods.length} pod address(es) that coild set ` +
    `up as node ${owners.map((o) => `"${o}"`).join(", ")} (e.g. ${example.pod}, ${example.address} on ` +
    `${example.link}). Started under another name, coild would remove their veths and withdraw their ` +
    `blocks. Start it with --node-name ${owners[0]}; to rename the node, delete its pods first.`;
}
