// The pod's network in main-plugin mode: a veth pair whose pod end is created inside the pod netns,
// the link-local gateway on the host end, a host route per pod address, and the pod's routes.
//
// The pod routes everything via 169.254.1.1 (IPv4) and fe80::1 (IPv6), addresses that every host veth
// carries (scope link), so the host answers ARP/ND for them even when kube-proxy sets arp_ignore
// (Coil v1.0.0 moved to a link-local gateway for that reason, k8s#70530).

import type { AddRequest, AddResult, Attachment, CheckRequest } from "../../cni/api.ts";
import { formatIp } from "../../ipam/cidr.ts";
import type { AllocatedAddress, Allocation } from "../../ipam/node_ipam.ts";
import { addrAdd, addrList } from "../../netlink/addr.ts";
import { isExists, isNotFound, NetlinkError } from "../../netlink/errors.ts";
import {
  type Link,
  linkAddVeth,
  linkByIndex,
  linkByName,
  linkDel,
  linkList,
  linkSetAlias,
  linkSetDown,
  linkSetUp,
} from "../../netlink/link.ts";
import { closeNetns, isOwnNetns, NotNetnsError, openNetns } from "../../netlink/netns.ts";
import { type Route, routeAdd, routeDump, routeGet } from "../../netlink/route.ts";
import { NetlinkSocket } from "../../netlink/socket.ts";
import { mainResult } from "../cni_results.ts";
import { CODE, DaemonError } from "../errors.ts";
import { GATEWAY_V4, GATEWAY_V6, MAIN_TABLE } from "./constants.ts";
import { HostRouteTables } from "./host_route_tables.ts";
import type { LinkDeleter } from "./link_deleter.ts";
import { aliasesOf, aliasOf, hostVethName, isAttachmentLink, isCoilAlias } from "./veth_name.ts";

const DEFAULT_MTU = 1500;
/**
 * The alias of a host veth that a DEL cut off and left to the deleter: "/" is in no network name,
 * container ID or interface name, so no attachment's alias (aliasOf()) can equal it, and a restarted
 * coild removes such a link as stale.
 */
const DETACHED_ALIAS = "coil:/detached:";

/** Sets up, verifies and removes pod networks. Every method runs its kernel work synchronously. */
export interface PodNetwork {
  /**
   * Verifies, before ADD allocates (and perhaps claims a block), that the pod can be set up: its netns
   * exists, is a network namespace and is not coild's own, and no other interface in it carries Coil's
   * routes (main mode gives a pod one interface: a second one's gateway routes would collide).
   * @throws {DaemonError} code 5 naming the path, or 7 for a second interface.
   */
  verifyNetns(path: string, ifName: string): void;
  /**
   * Creates the pod's interfaces and routes; removes what it made when a step fails. A link already
   * holding the host veth's name is replaced when it is this attachment's or `replaceable(alias)` says
   * it is stale; otherwise the ADD fails without touching it.
   */
  setup(req: AddRequest, allocation: Allocation, replaceable: (alias: string) => boolean): AddResult;
  /** The result of an earlier setup() that is still intact (a repeated ADD), or undefined. */
  existing(req: AddRequest, allocation: Allocation): AddResult | undefined;
  /** @throws {DaemonError} naming the first missing or different piece. */
  check(req: CheckRequest, allocation: Allocation): void;
  /**
   * Removes the pod's veth and with it its host routes. Only a veth tagged as this attachment's (or
   * untagged) goes. Idempotent; fine when the netns is gone. With a LinkDeleter, it resolves once the
   * veth is detached — retagged, down (the kernel drops its routes in every table, and the pod's end
   * loses its carrier) — and queued for deletion: the kernel's ~25 ms of unregistering it come later.
   * An ADD that needs the name meanwhile deletes the detached veth itself.
   */
  destroy(attachment: Attachment): Promise<void>;
  /** The host veths that coild tagged, by name. */
  hostLinks(): Map<string, Link>;
}

export interface PodNetworkOptions {
  /** Socket in coild's (the host's) netns. */
  host: NetlinkSocket;
  /** Table of the per-pod host routes when the netconf gives none (`--pod-table-id`); 0: main. */
  defaultHostRouteTable: number;
  /** Protocol stamped on host routes, so that they can be told apart from others. */
  protocol: number;
  /** Deletes veths on worker threads; without it, destroy() deletes on the calling thread. */
  deleter?: LinkDeleter;
}

/** Creates the pod network component over a host-side netlink socket. */
export function createPodNetwork(options: PodNetworkOptions): PodNetwork {
  const { host, protocol } = options;
  const tables = new HostRouteTables(host, protocol);
  const tableFor = (requested: number) => requested || options.defaultHostRouteTable || MAIN_TABLE;

  function setup(
    req: AddRequest,
    allocation: Allocation,
    replaceable: (alias: string) => boolean,
  ): AddResult {
    const name = hostVethName(req);
    const table = tableFor(req.hostRouteTable);
    return withPodNetns(req.netns, (pod) => {
      freeHostName(name, req, replaceable);
      const mtu = req.mtu || defaultRouteMtu(host);
      // Undo steps, run in reverse order when a later step fails. Deleting the veth takes its
      // addresses and routes along (on both ends); the rules go once no route needs them.
      const undo: (() => void)[] = [];
      try {
        if (table !== MAIN_TABLE) undo.push(() => tables.dropUnused());
        const hostLink = addVeth(host, name, req.ifName, pod.fd, mtu);
        undo.push(() => deleteIfPresent(name));
        linkSetAlias(host, hostLink.index, aliasOf(req));
        linkSetUp(host, hostLink.index);
        for (const a of allocation.addresses) {
          addrAdd(host, gatewayAddr(hostLink.index, a));
          routeAdd(host, hostRoute(hostLink.index, a, table, protocol));
        }
        if (table !== MAIN_TABLE) tables.ensureRules(table, families(allocation));
        const podLink = configurePod(pod.sock, req.ifName, allocation.addresses);
        return mainResult(hostLink, podLink, req.netns, allocation.addresses);
      } catch (err) {
        runUndo(undo, err);
        throw err;
      }
    });
  }

  function existing(req: AddRequest, allocation: Allocation): AddResult | undefined {
    try {
      check({ ...req, verb: "check", prevIps: [] }, allocation);
    } catch (err) {
      if (err instanceof DaemonError) return undefined;
      throw err;
    }
    const hostLink = linkByName(host, hostVethName(req))!;
    return withPodNetns(req.netns, ({ sock }) => {
      const podLink = linkByName(sock, req.ifName)!;
      return mainResult(hostLink, podLink, req.netns, allocation.addresses);
    });
  }

  function check(req: CheckRequest, allocation: Allocation): void {
    const name = hostVethName(req);
    const hostLink = linkByName(host, name);
    if (!hostLink?.up) throw checkFailed(`host veth "${name}" is ${hostLink ? "down" : "missing"}`);
    if (!hostLink.alias || !aliasesOf(req).includes(hostLink.alias)) {
      throw checkFailed(
        `host veth "${name}" belongs to another attachment (alias "${hostLink.alias ?? ""}")`,
      );
    }
    const table = tableFor(req.hostRouteTable);
    const hostRoutes = routeDump(host, { table, oif: hostLink.index });
    const hostAddrs = addrList(host, { index: hostLink.index });
    for (const a of allocation.addresses) {
      // The address first: removing a link's last IPv4 address flushes its routes too (fib_disable_ip()).
      const gateway = gatewayAddr(hostLink.index, a);
      if (!hostAddrs.some((x) => x.address === gateway.address && x.prefix === gateway.prefix)) {
        throw checkFailed(`gateway address ${gateway.address}/${gateway.prefix} on "${name}" is missing`);
      }
      const dst = `${formatIp(a.address)}/${a.family === 4 ? 32 : 128}`;
      if (!hostRoutes.some((r) => r.dst === dst)) {
        throw checkFailed(`host route ${dst} dev ${name} table ${table} is missing`);
      }
    }
    if (table !== MAIN_TABLE) {
      const missing = tables.missingRules(table, families(allocation));
      if (missing.length > 0) {
        throw checkFailed(`IPv${missing[0]} rule "lookup ${table}" for the host routes is missing`);
      }
    }
    withPodNetns(req.netns, ({ sock }) => {
      const podLink = linkByName(sock, req.ifName);
      if (!podLink?.up) throw checkFailed(`pod interface "${req.ifName}" is ${podLink ? "down" : "missing"}`);
      const addrs = addrList(sock, { index: podLink.index });
      const routes = routeDump(sock, { table: MAIN_TABLE, oif: podLink.index });
      for (const a of allocation.addresses) {
        const ip = formatIp(a.address);
        if (!addrs.some((x) => x.address === ip)) {
          throw checkFailed(`pod address ${ip} on "${req.ifName}" is missing`);
        }
        const gateway = a.family === 4 ? GATEWAY_V4 : GATEWAY_V6;
        const dflt = a.family === 4 ? "0.0.0.0/0" : "::/0";
        if (!routes.some((r) => r.dst === dflt && r.gateway === gateway)) {
          throw checkFailed(`pod default route via ${gateway} is missing`);
        }
      }
    });
  }

  async function destroy(attachment: Attachment): Promise<void> {
    const name = hostVethName(attachment);
    const link = linkByName(host, name);
    if (link && isAttachmentLink(link.alias, aliasesOf(attachment))) {
      if (!options.deleter) deleteIfPresent(name);
      else if (detach(link)) await options.deleter.enqueue(link.index, name);
    }
    tables.dropUnused();
  }

  /**
   * Cuts a host veth off its pod for a deletion to come; false when it is gone already. Retagged first:
   * left behind by a crash at any point from here, it is stale to the start-up repair whatever becomes
   * of the attachment's allocation, never repaired as the pod's.
   */
  function detach(link: Link): boolean {
    try {
      linkSetAlias(host, link.index, DETACHED_ALIAS + link.index);
      linkSetDown(host, link.index);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  function hostLinks(): Map<string, Link> {
    const ours = linkList(host).filter((l) => isCoilAlias(l.alias));
    return new Map(ours.map((link) => [link.name, link]));
  }

  /**
   * Frees the host veth's name for a new pair. A leftover of this attachment (a crashed or repeated
   * ADD, Coil v1 #70), of an attachment that is gone, or a veth that a DEL detached and whose background
   * deletion has not come yet, goes here and now; a live attachment's veth (another network
   * of the same pod, or an older sandbox still set up) is never deleted by someone else's ADD.
   */
  function freeHostName(name: string, req: AddRequest, replaceable: (alias: string) => boolean): void {
    const link = linkByName(host, name);
    if (!link) return;
    const detached = link.alias?.startsWith(DETACHED_ALIAS) ?? false;
    if (!detached && !isAttachmentLink(link.alias, aliasesOf(req)) && !replaceable(link.alias!)) {
      throw new DaemonError(
        CODE.tryAgainLater,
        `Host veth "${name}" is held by another attachment (alias "${link.alias}") that is still set up; ` +
          "it goes with that attachment's DEL",
      );
    }
    deleteIfPresent(name);
  }

  function deleteIfPresent(name: string): void {
    try {
      linkDel(host, name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  function verifyNetns(path: string, ifName: string): void {
    withPodNetns(path, ({ sock }) => {
      const gatewayRoutes = routeDump(sock, { table: MAIN_TABLE }).filter((r) =>
        r.dst === `${GATEWAY_V4}/32` || (r.dst === "::/0" && r.gateway === GATEWAY_V6)
      );
      for (const route of gatewayRoutes) {
        const link = route.oif === undefined ? undefined : linkByIndex(sock, route.oif);
        if (link && link.name !== ifName) {
          throw new DaemonError(
            CODE.invalidConfig,
            `Coil in main-plugin mode sets up one interface per pod: "${link.name}" already has Coil's ` +
              `gateway routes in "${path}", so "${ifName}" cannot get them; for a second interface, use Coil ` +
              "as the IPAM plugin of another plugin",
          );
        }
      }
    });
  }

  return { verifyNetns, setup, existing, check, destroy, hostLinks };
}

/**
 * Runs `fn` with a socket inside the pod's netns. A vanished netns (the sandbox died during ADD), a path
 * that is no netns (a leftover file whose bind mount is gone, a FIFO: openNetns() never blocks on it) or
 * coild's own netns is a clear CNI error, not a crash, a stall or the node configured as a pod.
 */
function withPodNetns<T>(path: string, fn: (pod: { fd: number; sock: NetlinkSocket }) => T): T {
  let fd: number;
  try {
    fd = openNetns(path);
  } catch (err) {
    if (isNotFound(err)) {
      throw new DaemonError(CODE.ioFailure, `Pod network namespace "${path}" does not exist`);
    }
    if (err instanceof NotNetnsError) {
      throw new DaemonError(
        CODE.ioFailure,
        `Pod network namespace "${path}" is not a network namespace: it is ${err.found}`,
      );
    }
    if (!(err instanceof NetlinkError)) throw err;
    // ENAMETOOLONG, ENOTDIR (a trailing slash on a file), EACCES…: the runtime's path is unusable.
    throw new DaemonError(CODE.ioFailure, `Cannot open pod network namespace "${path}": ${err.code}`);
  }
  try {
    if (isOwnNetns(fd)) {
      throw new DaemonError(
        CODE.ioFailure,
        `Pod network namespace "${path}" is coild's own network namespace: the node is not a pod`,
      );
    }
    using sock = openSocketIn(fd, path);
    return fn({ fd, sock });
  } finally {
    closeNetns(fd);
  }
}

/**
 * Creates the pair. The host name was freed just before, so EEXIST means the pod already has an
 * interface named CNI_IFNAME (the spec makes that an error of ADD).
 */
function addVeth(host: NetlinkSocket, name: string, ifName: string, podFd: number, mtu: number): Link {
  try {
    return linkAddVeth(host, { name, peerName: ifName, peerNetnsFd: podFd, mtu });
  } catch (err) {
    if (!isExists(err)) throw err;
    throw new DaemonError(
      CODE.invalidEnv,
      `CNI_IFNAME "${ifName}" already exists in the pod network namespace`,
    );
  }
}

function openSocketIn(fd: number, path: string): NetlinkSocket {
  try {
    return new NetlinkSocket({ netnsFd: fd });
  } catch (err) {
    if (!(err instanceof NetlinkError && err.op === "enter")) throw err;
    throw new DaemonError(
      CODE.ioFailure,
      `Pod network namespace "${path}" is not a network namespace: ${err.code}`,
    );
  }
}

/** Runs undo steps in reverse order; a failing step is attached to `cause` and the rest still run. */
function runUndo(undo: (() => void)[], cause: unknown): void {
  for (const step of undo.reverse()) {
    try {
      step();
    } catch (err) {
      // The original failure is what the caller reports; keep the cleanup failure visible on it.
      if (cause instanceof Error) cause.message += ` (cleanup failed too: ${(err as Error).message})`;
    }
  }
}

/** Inside the pod: the interface up, its addresses, the link route to the gateway and the default route. */
function configurePod(sock: NetlinkSocket, ifName: string, addresses: AllocatedAddress[]): Link {
  const link = linkByName(sock, ifName);
  if (!link) throw new DaemonError(CODE.internal, `Pod interface "${ifName}" vanished right after creation`);
  linkSetUp(sock, link.index);
  for (const a of addresses) {
    const ip = formatIp(a.address);
    if (a.family === 4) {
      addrAdd(sock, { index: link.index, address: ip, prefix: 32 });
      routeAdd(sock, { dst: `${GATEWAY_V4}/32`, oif: link.index, scope: "link" });
      routeAdd(sock, { dst: "0.0.0.0/0", gateway: GATEWAY_V4, oif: link.index });
    } else {
      addrAdd(sock, { index: link.index, address: ip, prefix: 128, nodad: true });
      routeAdd(sock, { dst: "::/0", gateway: GATEWAY_V6, oif: link.index });
    }
  }
  return link;
}

function gatewayAddr(index: number, a: AllocatedAddress) {
  return a.family === 4
    ? { index, address: GATEWAY_V4, prefix: 32, scope: "link" as const }
    : { index, address: GATEWAY_V6, prefix: 64, scope: "link" as const, nodad: true };
}

function hostRoute(oif: number, a: AllocatedAddress, table: number, protocol: number): Route {
  const dst = `${formatIp(a.address)}/${a.family === 4 ? 32 : 128}`;
  return { dst, oif, table, protocol, scope: "link" };
}

function families(allocation: Allocation): (4 | 6)[] {
  return allocation.addresses.map((a) => a.family);
}

/**
 * Per family, an address that only the default route covers on any plausible node (the top of class E;
 * the end of the IPv6 documentation prefix), so one `ip route get fibmatch` finds the default route
 * however many host routes the main table holds.
 */
const DEFAULT_ROUTE_PROBES = [
  [4, "0.0.0.0/0", "255.255.255.254"],
  [6, "::/0", "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe"],
] as const;

/**
 * MTU of the interface that carries the host's default route (the pods' traffic leaves there): the
 * IPv4 one, else the IPv6 one (an IPv6-only node), else 1500. Read on every ADD, so it follows a change
 * of the uplink's MTU or of the default route at once.
 */
function defaultRouteMtu(host: NetlinkSocket): number {
  for (const [family, dst, probe] of DEFAULT_ROUTE_PROBES) {
    let dflt = routeGet(host, probe, { fibMatch: true });
    // A more specific route covers the probe: find the default route the slow way.
    if (dflt && dflt.dst !== dst) {
      dflt = routeDump(host, { family, table: MAIN_TABLE }).find((r) => r.dst === dst);
    }
    const link = dflt?.oif === undefined ? undefined : linkByIndex(host, dflt.oif);
    if (link) return link.mtu;
  }
  return DEFAULT_MTU;
}

function checkFailed(what: string): DaemonError {
  return new DaemonError(CODE.checkFailed, `CHECK failed: ${what}`);
}
