// The lab's network: a router namespace, a management namespace with a bridge (etcd's network), and
// one namespace per node with a veth to each. Every link is created inside the lab's namespaces, so
// the machine's own namespace is never touched.

import { labNetnsPattern, type LabPlan, type NodePlan } from "./plan.ts";
import { inNetns, ip, mapLimit, run } from "./run.ts";

/** Creates the namespaces and links of `plan` (nodes, router, management). Throws on the first failure. */
export async function createTopology(plan: LabPlan): Promise<void> {
  const { router, mgmt } = plan;
  for (const netns of [router.netns, mgmt.netns]) await addNetns(netns);
  await enableForwarding(router.netns, plan.options.dualStack);
  await ip(mgmt.netns, ["link", "add", mgmt.bridge, "type", "bridge"]);
  await ip(mgmt.netns, ["addr", "add", `${mgmt.address}/${mgmt.prefix}`, "dev", mgmt.bridge]);
  await ip(mgmt.netns, ["link", "set", mgmt.bridge, "up"]);
  await mapLimit(plan.nodes, 4, (node) => createNode(plan, node));
}

async function createNode(plan: LabPlan, node: NodePlan): Promise<void> {
  const { router, mgmt } = plan;
  const link = node.uplink;
  await addNetns(node.netns);
  // coild enables forwarding in its node, as on a real one; with --no-coil the lab stands in for it.
  if (!plan.options.coil) await enableForwarding(node.netns, plan.options.dualStack);
  // Uplink: node `tor0` <-> router `nodeI`.
  await addVeth(node.netns, link.nodeIf, router.netns, link.peerIf);
  await ip(node.netns, ["addr", "add", `${link.node4}/${link.prefix4}`, "dev", link.nodeIf]);
  await ip(router.netns, ["addr", "add", `${link.router4}/${link.prefix4}`, "dev", link.peerIf]);
  if (plan.options.dualStack) {
    // nodad: BGP may connect at once instead of failing on a tentative address for a second or two.
    await ip(node.netns, ["addr", "add", `${link.node6}/${link.prefix6}`, "dev", link.nodeIf, "nodad"]);
    await ip(router.netns, ["addr", "add", `${link.router6}/${link.prefix6}`, "dev", link.peerIf, "nodad"]);
  }
  await ip(node.netns, ["link", "set", link.nodeIf, "up"]);
  await ip(router.netns, ["link", "set", link.peerIf, "up"]);
  // Management: node `mgmt0` <-> `nodeI` on the bridge.
  await addVeth(node.netns, "mgmt0", mgmt.netns, node.name);
  await ip(mgmt.netns, ["link", "set", node.name, "master", mgmt.bridge, "up"]);
  await ip(node.netns, ["addr", "add", `${node.mgmtAddress}/${mgmt.prefix}`, "dev", "mgmt0"]);
  await ip(node.netns, ["link", "set", "mgmt0", "up"]);
}

/** Creates veth `name` in `netns` with its peer `peer` directly in `peerNetns`. */
export async function addVeth(netns: string, name: string, peerNetns: string, peer: string): Promise<void> {
  await ip(netns, ["link", "add", name, "type", "veth", "peer", "name", peer, "netns", peerNetns]);
}

/** Creates `netns` with its loopback up. */
export async function addNetns(netns: string): Promise<void> {
  await run("ip", ["netns", "add", netns]);
  await ip(netns, ["link", "set", "lo", "up"]);
}

// For the router and for nodes without coild. Per-namespace sysctls: these change only the lab's
// namespace. IPv6 only when asked for, so an IPv4 lab also runs on a kernel booted with IPv6 disabled.
async function enableForwarding(netns: string, dualStack: boolean): Promise<void> {
  const settings = ["net.ipv4.ip_forward=1"];
  if (dualStack) settings.push("net.ipv6.conf.all.forwarding=1");
  await inNetns(netns, "sysctl", ["-qw", ...settings]);
}

/** The existing namespaces that belong to lab `name` (see labNetnsPattern). */
export async function listLabNetns(name: string): Promise<string[]> {
  const pattern = labNetnsPattern(name);
  const out = await run("ip", ["-j", "netns", "list"]);
  const text = out.stdout.trim();
  const all = text === "" ? [] : (JSON.parse(text) as { name: string }[]).map((entry) => entry.name);
  return all.filter((netns) => pattern.test(netns)).sort();
}

/** Deletes `netns` (its links go with it). Idempotent. */
export async function deleteNetns(netns: string): Promise<void> {
  const out = await run("ip", ["netns", "del", netns], { check: false });
  if (out.code !== 0 && !/No such file/.test(out.stderr)) {
    throw new Error(`Namespace ${netns} could not be deleted: ${out.stderr.trim()}`);
  }
}
