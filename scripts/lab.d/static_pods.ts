// `--no-coil`: the lab plays coild's part with `ip`, writing one block route per node into table 119
// and wiring pods as coild does (veth, 169.254.1.1 gateway, /32 host route), so BGP and the data path
// can be proven before coild exists.

import { EXPORT_TABLE_ID, type LabPlan, type NodePlan, type PodPlan, PROTOCOL_ID } from "./plan.ts";
import { GATEWAY_V4, GATEWAY_V6 } from "../../daemon/nodenet/constants.ts";
import { ip } from "./run.ts";
import { addNetns, addVeth } from "./topology.ts";

const BLOCK_ROUTE = ["dev", "lo", "proto", String(PROTOCOL_ID), "table", String(EXPORT_TABLE_ID)];

/** Adds `<block> dev lo proto 30 table 119` for every static block of `node`. */
export async function addStaticBlocks(node: NodePlan): Promise<void> {
  for (const block of node.staticBlocks) await addBlockRoute(node.netns, block);
}

/** Adds one block route to table 119 of `netns`, exactly as coild writes it. */
export async function addBlockRoute(netns: string, block: string): Promise<void> {
  await ip(netns, ["route", "add", block, ...BLOCK_ROUTE]);
}

/** Deletes one block route from table 119 of `netns`. */
export async function deleteBlockRoute(netns: string, block: string): Promise<void> {
  await ip(netns, ["route", "del", block, ...BLOCK_ROUTE]);
}

/** Pod k of node i: 10.100.i.k (and fd00:100:0:i::k) inside the node's static block. */
export function staticPodAddresses(plan: LabPlan, node: NodePlan, pod: PodPlan): string[] {
  const addresses = [`10.100.${node.index}.${pod.index}`];
  if (plan.options.dualStack) {
    addresses.push(`fd00:100:0:${node.index.toString(16)}::${pod.index.toString(16)}`);
  }
  return addresses;
}

/** `veth` + the first 11 hex digits of sha1("<namespace>.<pod>"), the host-side name Coil and Calico use. */
export async function vethName(namespace: string, pod: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(`${namespace}.${pod}`));
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  return `veth${hex.slice(0, 11)}`;
}

/** Creates the pod's namespace and wires `addresses` into it from `node`. Throws on the first failure. */
export async function addStaticPod(node: NodePlan, pod: PodPlan, addresses: string[]): Promise<void> {
  const veth = await vethName(pod.namespace, pod.name);
  await addNetns(pod.netns);
  await addVeth(node.netns, veth, pod.netns, "eth0");
  await ip(node.netns, ["addr", "add", `${GATEWAY_V4}/32`, "dev", veth, "scope", "link"]);
  await ip(node.netns, ["link", "set", veth, "up"]);
  await ip(pod.netns, ["link", "set", "eth0", "up"]);
  await ip(pod.netns, ["route", "add", `${GATEWAY_V4}/32`, "dev", "eth0", "scope", "link"]);
  for (const address of addresses) {
    if (address.includes(":")) {
      await ip(node.netns, ["addr", "add", `${GATEWAY_V6}/64`, "dev", veth, "nodad"]);
      await ip(pod.netns, ["addr", "add", `${address}/128`, "dev", "eth0", "nodad"]);
      await ip(pod.netns, ["-6", "route", "add", "default", "via", GATEWAY_V6, "dev", "eth0"]);
      await ip(node.netns, ["-6", "route", "add", `${address}/128`, "dev", veth]);
    } else {
      await ip(pod.netns, ["addr", "add", `${address}/32`, "dev", "eth0"]);
      await ip(pod.netns, ["route", "add", "default", "via", GATEWAY_V4, "dev", "eth0"]);
      await ip(node.netns, ["route", "add", `${address}/32`, "dev", veth]);
    }
  }
}
