// What the kernels say about BGP in the lab: the prefixes each node exports (table 119, proto 30: its
// blocks, aggregated), the
// routes BIRD installed (proto bird) in the router's and nodes' main tables, and waiting for the two
// to agree.

import { bgpSessions } from "./bird.ts";
import { EXPORT_TABLE_ID, type LabPlan, type NodePlan, PROTOCOL_ID } from "./plan.ts";
import { poll, routes } from "./run.ts";

/** The kernel's protocol number for routes BIRD writes (RTPROT_BIRD). */
export const RTPROT_BIRD = 12;

export interface LearnedRoute {
  dst: string;
  via: string;
}

function families(plan: LabPlan): (4 | 6)[] {
  return plan.options.dualStack ? [4, 6] : [4];
}

/** The prefixes `node` exports (its blocks, aggregated): table 119 routes with protocol 30, both families. */
export async function exportedBlocks(plan: LabPlan, node: NodePlan): Promise<string[]> {
  const found: string[] = [];
  for (const family of families(plan)) {
    const list = await routes(node.netns, family, String(EXPORT_TABLE_ID), ["proto", String(PROTOCOL_ID)]);
    found.push(...list.map((route) => route.dst));
  }
  return found;
}

/** The routes BIRD installed in the main table of `netns` (one entry per route), both families. */
export async function learnedRoutes(plan: LabPlan, netns: string): Promise<LearnedRoute[]> {
  const found: LearnedRoute[] = [];
  for (const family of families(plan)) {
    const list = await routes(netns, family, "main", ["proto", String(RTPROT_BIRD)]);
    found.push(...list.map((route) => ({ dst: route.dst, via: route.gateway ?? route.dev ?? "" })));
  }
  return found;
}

/** The routes the router installed, grouped by the node they lead to (its uplink address is the next hop). */
export async function routerRoutesByNode(plan: LabPlan): Promise<Map<string, string[]>> {
  const byNode = new Map(plan.nodes.map((node) => [node.name, [] as string[]]));
  for (const route of await learnedRoutes(plan, plan.router.netns)) {
    const node = plan.nodes.find((n) => route.via === n.uplink.node4 || route.via === n.uplink.node6);
    if (!node) throw new Error(`Route ${route.dst} at the router leads to ${route.via}, which is no node`);
    byNode.get(node.name)!.push(route.dst);
  }
  return byNode;
}

/** Waits until every BGP session of the router is Established. Throws after `timeoutMs`. */
export async function waitSessions(plan: LabPlan, timeoutMs = 60_000): Promise<void> {
  const expected = plan.nodes.length * families(plan).length;
  await poll(`all ${expected} BGP sessions of the router reaching Established`, timeoutMs, async () => {
    const sessions = await bgpSessions(plan.router.birdSocket);
    const up = sessions.filter((s) => s.established).length;
    return up === expected && sessions.length === expected ? true : undefined;
  });
}

/**
 * Waits until the router holds exactly the exported blocks, and each node holds every other node's
 * blocks and none of its own. Returns the exported blocks per node. Throws after `timeoutMs`.
 */
export async function waitConverged(plan: LabPlan, timeoutMs = 60_000): Promise<Map<string, string[]>> {
  return await poll("BGP converging on every exported block", timeoutMs, async () => {
    const exported = new Map<string, string[]>();
    for (const node of plan.nodes) exported.set(node.name, await exportedBlocks(plan, node));
    const all = [...exported.values()].flat();
    const atRouter = (await learnedRoutes(plan, plan.router.netns)).map((r) => r.dst);
    if (!sameSet(atRouter, all) || atRouter.length !== all.length) return undefined;
    for (const node of plan.nodes) {
      const own = exported.get(node.name) ?? [];
      const others = all.filter((block) => !own.includes(block));
      const atNode = (await learnedRoutes(plan, node.netns)).map((r) => r.dst);
      if (!sameSet(atNode, others)) return undefined;
    }
    return exported;
  });
}

function sameSet(a: string[], b: string[]): boolean {
  const setA = new Set(a);
  const setB = new Set(b);
  return setA.size === setB.size && [...setA].every((x) => setB.has(x));
}
