// Start-up repair of the kernel from IPAM state (which etcd holds): every host veth that coild tagged
// (alias `coil:<network>:<containerId>:<ifName>`) either belongs to a known allocation, whose missing host routes
// are put back, or is stale and removed. Coil v2 repaired only table 119 at start (issue #382).

import type { Allocation } from "../../ipam/node_ipam.ts";
import { formatIp } from "../../ipam/cidr.ts";
import { isNotFound } from "../../netlink/errors.ts";
import { linkDel } from "../../netlink/link.ts";
import { routeDump, routeReplace } from "../../netlink/route.ts";
import type { NetlinkSocket } from "../../netlink/socket.ts";
import { MAIN_TABLE } from "./constants.ts";
import { HostRouteTables } from "./host_route_tables.ts";
import type { Logger } from "../log.ts";
import type { PodNetwork } from "./pod_network.ts";
import { aliasesOf } from "./veth_name.ts";

export interface ReconcileOptions {
  host: NetlinkSocket;
  podNetwork: Pick<PodNetwork, "hostLinks">;
  allocations: readonly Allocation[];
  /** `--pod-table-id`; 0: main. Where a missing host route is put back. */
  podTableId: number;
  /** `--protocol-id`: marks our host routes. */
  protocol: number;
  log: Logger;
}

export interface ReconcileReport {
  /** Host veths that belong to an allocation. */
  kept: number;
  routesRepaired: number;
  staleLinksRemoved: number;
}

/**
 * Repairs host routes of allocated pods and removes tagged host veths that no allocation holds. A host
 * route counts as present when a route to the address through the pod's veth, with our protocol,
 * exists in any table (a netconf may have chosen its own `hostRouteTable`); a missing one is put into
 * the default pod table. Allocations without a tagged veth (IPAM mode, where the calling plugin owns
 * the interfaces) are left alone. Call it before serving requests: an ADD in flight would look stale.
 * Idempotent. @throws {NetlinkError} when the kernel refuses a change (other than a vanished link).
 */
export function reconcilePodNetworks(options: ReconcileOptions): ReconcileReport {
  const { host, protocol, log } = options;
  const table = options.podTableId || MAIN_TABLE;
  const byAlias = new Map(options.allocations.flatMap((a) => aliasesOf(a).map((alias) => [alias, a])));
  const present = new Set(routeDump(host, { protocol }).map((r) => `${r.dst} ${r.oif}`));
  const report: ReconcileReport = { kept: 0, routesRepaired: 0, staleLinksRemoved: 0 };
  const families = new Set<4 | 6>();
  for (const link of options.podNetwork.hostLinks().values()) {
    const allocation = link.alias === undefined ? undefined : byAlias.get(link.alias);
    if (!allocation) {
      try {
        linkDel(host, link.index);
        report.staleLinksRemoved++;
        log("info", "stale host veth removed", {
          link: link.name,
          alias: link.alias,
          reason: "no allocation",
        });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      continue;
    }
    report.kept++;
    for (const a of allocation.addresses) {
      const dst = `${formatIp(a.address)}/${a.family === 4 ? 32 : 128}`;
      if (present.has(`${dst} ${link.index}`)) continue;
      routeReplace(host, { dst, oif: link.index, table, protocol, scope: "link" });
      families.add(a.family);
      report.routesRepaired++;
      log("info", "host route repaired", {
        dst,
        link: link.name,
        table,
        containerId: allocation.containerId,
      });
    }
  }
  if (table !== MAIN_TABLE && families.size > 0) {
    new HostRouteTables(host, protocol).ensureRules(table, [...families]);
  }
  return report;
}
