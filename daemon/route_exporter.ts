// Keeps the export table (119 by default) equal to the blocks this node owns, aggregated: the fewest
// `dev lo` routes that cover exactly those blocks (ipam/aggregate.ts), stamped with our protocol, for
// a routing daemon (BIRD) to learn and advertise. Level-triggered: each sync dumps the table, diffs by
// prefix and applies the difference in one batch, so it repairs hand edits, restarts and missed events
// alike. The table is Coil's alone: foreign routes are removed.

import { aggregate } from "../ipam/aggregate.ts";
import { type Cidr, formatCidr } from "../ipam/cidr.ts";
import { isDumpInterrupted, isExists, isNotFound } from "../netlink/errors.ts";
import { linkByName } from "../netlink/link.ts";
import { type Route, routeBatch, type RouteChange, routeDump } from "../netlink/route.ts";
import type { NetlinkSocket } from "../netlink/socket.ts";

export interface RouteExporterOptions {
  sock: NetlinkSocket;
  /** `--export-table-id`. */
  table: number;
  /** `--protocol-id`. */
  protocol: number;
}

/** What one sync changed, in routes (aggregated prefixes, not blocks). */
export interface SyncReport {
  added: number;
  removed: number;
}

export interface RouteExporter {
  /**
   * Makes the table hold exactly aggregate(`blocks`, `bounds`): with the pool subnets as bounds, no
   * route is wider than a pool subnet. `sync([])` empties the table. Idempotent. Within the
   * batch, new routes go in before the routes they replace go out: when an aggregate splits (a block
   * was released), the blocks kept are announced more specifically before the aggregate is withdrawn,
   * so an address still owned is never left uncovered.
   */
  sync(blocks: readonly Cidr[], bounds?: readonly Cidr[]): SyncReport;
}

const DUMP_ATTEMPTS = 5;

/** Creates an exporter writing into `table` through `sock`. */
export function createRouteExporter(options: RouteExporterOptions): RouteExporter {
  const { sock, table, protocol } = options;
  return {
    sync(blocks, bounds = []) {
      const lo = linkByName(sock, "lo");
      if (!lo) throw new Error("Cannot export routes: the loopback interface is missing");
      const desired = new Set(aggregate(blocks, bounds).map(formatCidr));
      // A look-alike holding a wanted prefix must go before ours can be added (the kernel would
      // refuse ours with EEXIST); any other unwanted route goes after the adds.
      const replaced: RouteChange[] = [];
      const withdrawn: RouteChange[] = [];
      const present = new Set<string>();
      for (const route of dumpTable(sock, table)) {
        const ours = desired.has(route.dst) && route.protocol === protocol && route.oif === lo.index &&
          route.type === "unicast" && !route.gateway;
        if (ours && !present.has(route.dst)) present.add(route.dst);
        else (desired.has(route.dst) ? replaced : withdrawn).push({ op: "del", route: { ...route, table } });
      }
      const added: RouteChange[] = [...desired]
        .filter((dst) => !present.has(dst))
        .map((dst) => ({ op: "add", route: { dst, oif: lo.index, table, protocol } }));
      const changes = [...replaced, ...added, ...withdrawn];
      const errors = routeBatch(sock, changes);
      errors.forEach((err, i) => {
        // A route that appeared or vanished since the dump is already in the state we want.
        if (err && !(changes[i].op === "add" ? isExists(err) : isNotFound(err))) throw err;
      });
      return { added: added.length, removed: replaced.length + withdrawn.length };
    },
  };
}

function dumpTable(sock: NetlinkSocket, table: number): Route[] {
  for (let attempt = 1;; attempt++) {
    try {
      return [...routeDump(sock, { family: 4, table }), ...routeDump(sock, { family: 6, table })];
    } catch (err) {
      if (!isDumpInterrupted(err) || attempt === DUMP_ATTEMPTS) throw err;
    }
  }
}
