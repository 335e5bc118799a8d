// Pods reach each other and other nodes only through the node's routing, so coild turns on IPv4 and
// IPv6 forwarding in its netns at start, as Calico's Felix does. With IPv6 forwarding on, the kernel
// ignores router advertisements on interfaces whose accept_ra is 1: nodes that take their IPv6 default
// route from RAs need accept_ra=2 on the uplink (docs/bird.md says so).

import type { Logger } from "./log.ts";

const SYSCTLS = ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"];

/** Writes 1 to the forwarding sysctls that are not 1 yet; a failure is logged (IPv6 may be disabled). */
export function enableForwarding(log: Logger): void {
  for (const path of SYSCTLS) {
    try {
      if (Deno.readTextFileSync(path).trim() === "1") continue;
      Deno.writeTextFileSync(path, "1\n");
      log("info", "forwarding enabled", { sysctl: path });
    } catch (err) {
      log("warn", "cannot enable forwarding", { sysctl: path, error: err });
    }
  }
}
