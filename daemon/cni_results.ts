// The ADD results coild answers, in both modes: what the pod got (addresses, gateways, routes, and in
// main mode its interfaces), version-neutral; cni/result.ts shapes them for the netconf's cniVersion.

import type { AddResult } from "../cni/api.ts";
import { formatIp } from "../ipam/cidr.ts";
import type { AllocatedAddress, Allocation } from "../ipam/node_ipam.ts";
import type { Link } from "../netlink/link.ts";
import { GATEWAY_V4, GATEWAY_V6 } from "./nodenet/constants.ts";

/**
 * IPAM-mode result. The address carries its block's prefix and the block's first address as gateway:
 * the calling plugin (e.g. ptp) installs its default route through ConfigureIface before it adds its
 * own on-link route, so the gateway must be on-link through the address's prefix. The allocator never
 * hands out a block's first address, so the gateway is nobody's pod address.
 */
export function ipamResult(allocation: Allocation): AddResult {
  return {
    interfaces: [],
    ips: allocation.addresses.map((a) => ({
      address: `${formatIp(a.address)}/${a.block.prefix}`,
      gateway: formatIp({ family: a.family, value: a.block.base }),
    })),
    routes: allocation.addresses.map((a) => ({ dst: a.family === 4 ? "0.0.0.0/0" : "::/0" })),
  };
}

/**
 * Main-mode result: the host veth, the pod's interface (index 1, in `netns`) and a host-length address
 * per family whose default route goes via the link-local gateway every host veth carries.
 */
export function mainResult(
  hostLink: Link,
  podLink: Link,
  netns: string,
  addresses: readonly AllocatedAddress[],
): AddResult {
  return {
    interfaces: [
      { name: hostLink.name, mac: hostLink.mac, mtu: hostLink.mtu },
      { name: podLink.name, mac: podLink.mac, mtu: podLink.mtu, sandbox: netns },
    ],
    ips: addresses.map((a) => ({
      address: `${formatIp(a.address)}/${a.family === 4 ? 32 : 128}`,
      gateway: a.family === 4 ? GATEWAY_V4 : GATEWAY_V6,
      interface: 1,
    })),
    routes: addresses.map((a) =>
      a.family === 4 ? { dst: "0.0.0.0/0", gw: GATEWAY_V4 } : { dst: "::/0", gw: GATEWAY_V6 }
    ),
  };
}
