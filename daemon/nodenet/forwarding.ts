// Pods reach each other and other nodes only through the node's routing, so coild turns on IPv4 and
// IPv6 forwarding in its netns at start, as Calico's Felix does. With IPv6 forwarding on, the kernel
// ignores router advertisements on interfaces whose accept_ra is 1: nodes that take their IPv6 default
// route from RAs need accept_ra=2 on the uplink (docs/bird.md says so).

import { readSysctl, writeSysctl } from "../../netlink/sysctl.ts";
import type { Logger } from "../log.ts";

const SYSCTLS = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"];

/** Writes 1 to the forwarding sysctls that are not 1 yet; a failure is logged (IPv6 may be disabled). */
export function enableForwarding(log: Logger): void {
  for (const name of SYSCTLS) {
    try {
      if (readSysctl(name) === "1") continue;
      writeSysctl(name, "1");
      log("info", "forwarding enabled", { sysctl: name });
    } catch (err) {
      log("warn", "cannot enable forwarding", { sysctl: name, error: err });
    }
  }
}
