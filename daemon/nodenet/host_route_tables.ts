// `ip rule`s for pod host routes kept outside the main table (netconf hostRouteTable / --pod-table-id):
// Coil v2 moved its routes to table 116 because Calico's Felix rewrote routes in main. A rule exists
// while its table holds one of our routes, so DEL of the last pod leaves no rule behind.

import type { Family } from "../../ipam/cidr.ts";
import { routeDump } from "../../netlink/route.ts";
import { ruleAdd, ruleDel, ruleList } from "../../netlink/rule.ts";
import type { NetlinkSocket } from "../../netlink/socket.ts";

/** Priority of our rules: before `main` (32766), after `local` (0). */
export const HOST_ROUTE_RULE_PRIORITY = 2000;

/** Keeps one `from all lookup <table>` rule per family and table that holds pod host routes. */
export class HostRouteTables {
  #sock: NetlinkSocket;
  #protocol: number;

  constructor(sock: NetlinkSocket, protocol: number) {
    this.#sock = sock;
    this.#protocol = protocol;
  }

  /** Adds the rules for `table` that are missing. Idempotent. */
  ensureRules(table: number, families: Family[]): void {
    for (const family of this.missingRules(table, families)) {
      ruleAdd(this.#sock, { family, table, priority: HOST_ROUTE_RULE_PRIORITY, protocol: this.#protocol });
    }
  }

  /** The families among `families` that have no rule for `table`. */
  missingRules(table: number, families: Family[]): Family[] {
    return [...new Set(families)].filter((family) =>
      ruleList(this.#sock, { family, table, priority: HOST_ROUTE_RULE_PRIORITY }).length === 0
    );
  }

  /** Removes our rules whose table no longer holds any of our routes. Idempotent. */
  dropUnused(): void {
    const rules = ruleList(this.#sock, { priority: HOST_ROUTE_RULE_PRIORITY })
      .filter((r) => r.protocol === this.#protocol);
    for (const rule of rules) {
      const routes = routeDump(this.#sock, {
        family: rule.family,
        table: rule.table,
        protocol: this.#protocol,
      });
      if (routes.length === 0) ruleDel(this.#sock, rule);
    }
  }
}
