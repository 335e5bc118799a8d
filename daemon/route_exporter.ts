// Keeps the export table (119 by default) equal to the blocks this node owns: one `dev lo` route per
// block, stamped with our protocol, for a routing daemon (BIRD) to learn and advertise. Level-triggered:
// each sync dumps the table, diffs by prefix and applies the difference in one batch, so it repairs
// hand edits, restarts and missed events alike. The table is Coil's alone: foreign routes are removed.

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

/** What one sync changed. */
export interface SyncReport {
  added: number;
  removed: number;
}

export interface RouteExporter {
  /** Makes the table hold exactly `blocks`; `sync([])` empties it. */
  sync(blocks: readonly Cidr[]): SyncReport;
}

const DUMP_ATTEMPTS = 5;

/** Creates an exporter writing into `table` through `sock`. */
export function createRouteExporter(options: RouteExporterOptions): RouteExporter {
  const { sock, table, protocol } = options;
  return {
    sync(blocks) {
      const lo = linkByName(sock, "lo");
      if (!lo) throw new Error("Cannot export routes: the loopback interface is missing");
      const desired = new Map(blocks.map((b) => [formatCidr(b), b]));
      const changes: RouteChange[] = [];
      const present = new Set<string>();
      for (const route of dumpTable(sock, table)) {
        const ours = desired.has(route.dst) && route.protocol === protocol && route.oif === lo.index &&
          route.type === "unicast" && !route.gateway;
        if (ours && !present.has(route.dst)) present.add(route.dst);
        else changes.push({ op: "del", route: { ...route, table } });
      }
      for (const dst of desired.keys()) {
        if (!present.has(dst)) changes.push({ op: "add", route: { dst, oif: lo.index, table, protocol } });
      }
      const errors = routeBatch(sock, changes);
      errors.forEach((err, i) => {
        // A route that appeared or vanished since the dump is already in the state we want.
        if (err && !(changes[i].op === "add" ? isExists(err) : isNotFound(err))) throw err;
      });
      return {
        added: changes.filter((c) => c.op === "add").length,
        removed: changes.filter((c) => c.op === "del").length,
      };
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
