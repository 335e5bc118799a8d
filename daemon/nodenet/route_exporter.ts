// Keeps the export table (119 by default) equal to the blocks this node owns, aggregated: the fewest
// `dev lo` routes that cover exactly those blocks (ipam/aggregate.ts), stamped with our protocol, for
// a routing daemon (BIRD) to learn and advertise. Level-triggered: each sync dumps the table, diffs by
// prefix and applies the difference in one batch, so it repairs hand edits, restarts and missed events
// alike. The table is Coil's alone: foreign routes are removed. Routes stay bytes end to end (dump,
// diff, batch): text is made only for an error.

import { aggregate } from "../../ipam/aggregate.ts";
import { type Cidr, ipToBytes } from "../../ipam/cidr.ts";
import { RTN_UNICAST } from "../../netlink/constants.ts";
import { isDumpInterrupted, isExists, isNotFound } from "../../netlink/errors.ts";
import { linkByName } from "../../netlink/link.ts";
import {
  routeBatchBytes,
  type RouteBytes,
  type RouteBytesChange,
  routeDumpBytes,
} from "../../netlink/route.ts";
import type { NetlinkSocket } from "../../netlink/socket.ts";

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
      const desired = new Map<number | string, RouteBytes>();
      for (const { family, base, prefix } of aggregate(blocks, bounds)) {
        const dst = ipToBytes({ family, value: base });
        desired.set(prefixKey(dst, prefix), { family, dst, dstLen: prefix, oif: lo.index, table, protocol });
      }
      // A look-alike holding a wanted prefix must go before ours can be added (the kernel would
      // refuse ours with EEXIST); any other unwanted route goes after the adds.
      const replaced: RouteBytesChange[] = [];
      const withdrawn: RouteBytesChange[] = [];
      const present = new Set<number | string>();
      for (const route of dumpTable(sock, table)) {
        const key = prefixKey(route.dst, route.dstLen);
        const wanted = desired.has(key);
        const ours = wanted && route.protocol === protocol && route.oif === lo.index &&
          route.type === RTN_UNICAST && !route.gateway;
        if (ours && !present.has(key)) present.add(key);
        else (wanted ? replaced : withdrawn).push({ op: "del", route: { ...route, table } });
      }
      const added: RouteBytesChange[] = [];
      for (const [key, route] of desired) if (!present.has(key)) added.push({ op: "add", route });
      const changes = [...replaced, ...added, ...withdrawn];
      const errors = routeBatchBytes(sock, changes);
      errors.forEach((err, i) => {
        // A route that appeared or vanished since the dump is already in the state we want.
        if (err && !(changes[i].op === "add" ? isExists(err) : isNotFound(err))) throw err;
      });
      return { added: added.length, removed: replaced.length + withdrawn.length };
    },
  };
}

// A number for an IPv4 prefix (address × 64 + length: exact below 2^53), a string for IPv6.
function prefixKey(address: Uint8Array, length: number): number | string {
  if (address.length === 4) {
    return ((address[0] << 24 | address[1] << 16 | address[2] << 8 | address[3]) >>> 0) * 64 + length;
  }
  return `${address.join(",")}/${length}`;
}

function dumpTable(sock: NetlinkSocket, table: number): RouteBytes[] {
  for (let attempt = 1;; attempt++) {
    try {
      return [...routeDumpBytes(sock, { family: 4, table }), ...routeDumpBytes(sock, { family: 6, table })];
    } catch (err) {
      if (!isDumpInterrupted(err) || attempt === DUMP_ATTEMPTS) throw err;
    }
  }
}
