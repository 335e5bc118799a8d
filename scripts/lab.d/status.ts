// `scripts/lab status`: the pods (node, address, the block it comes from), each node's exported and
// learned blocks, and the router's BGP sessions and routes as BIRD and the kernel see them.

import { contains, parseCidr, parseIp } from "../../ipam/cidr.ts";
import { bgpSessions, birdc } from "./bird.ts";
import { exportedBlocks, learnedRoutes } from "./bgp_state.ts";
import type { LabPlan } from "./plan.ts";
import type { LabState } from "./state.ts";

/** Renders rows as left-aligned columns under `header`. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** The block among `blocks` that holds `address`, or "-" when none does. */
export function blockHolding(address: string, blocks: string[]): string {
  const ip = parseIp(address);
  for (const block of blocks) {
    const cidr = parseCidr(block, { strict: false });
    if (cidr.family === ip.family && contains(cidr, ip)) return block;
  }
  return "-";
}

/** Prints the lab's status. Throws when the lab's BIRD or namespaces are gone. */
export async function printStatus(plan: LabPlan, state: LabState): Promise<void> {
  const { options } = plan;
  const mode = options.coil ? "coild" : "static blocks (--no-coil)";
  const family = options.dualStack ? "IPv4 + IPv6" : "IPv4";
  console.log(
    `\nLab "${options.name}": ${options.nodes} nodes, ${family}, ${mode}, state in ${plan.stateDir}\n`,
  );

  const exported = new Map<string, string[]>();
  for (const node of plan.nodes) exported.set(node.name, await exportedBlocks(plan, node));
  const podRows = state.pods.flatMap((pod) =>
    pod.addresses.map((address, i) => [
      i === 0 ? `${pod.namespace}/${pod.name}` : "",
      i === 0 ? pod.node : "",
      address,
      blockHolding(address, exported.get(pod.node) ?? []),
    ])
  );
  console.log(podRows.length > 0 ? table(["POD", "NODE", "ADDRESS", "BLOCK"], podRows) : "No pods.");

  console.log("");
  const nodeRows: string[][] = [];
  for (const node of plan.nodes) {
    const exports = exported.get(node.name) ?? [];
    const learned = (await learnedRoutes(plan, node.netns)).map((r) => `${r.dst} via ${r.via}`);
    // One block per line, so the table stays readable with many blocks.
    for (let i = 0; i < Math.max(1, exports.length, learned.length); i++) {
      nodeRows.push([
        i === 0 ? node.name : "",
        i === 0 ? String(node.asn) : "",
        exports[i] ?? (i === 0 ? "-" : ""),
        learned[i] ?? (i === 0 ? "-" : ""),
      ]);
    }
  }
  console.log(table(["NODE", "AS", "EXPORTS (table 119)", "LEARNED (main, proto bird)"], nodeRows));

  console.log(`\nBGP sessions of the router (${plan.router.netns}, AS ${plan.router.asn}):`);
  const sessions = await bgpSessions(plan.router.birdSocket);
  console.log(table(["SESSION", "STATE"], sessions.map((s) => [s.name, s.info])));

  console.log(`\nRoutes the router learned (birdc -s ${plan.router.birdSocket} show route):`);
  const shown = await birdc(plan.router.birdSocket, ["show", "route"]);
  console.log(shown.split("\n").filter((line) => line.trim() !== "" && !line.startsWith("BIRD ")).join("\n"));
}
