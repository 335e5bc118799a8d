// What a person can do with a lab that is up: the commands to look at it, change it and remove it,
// printed after `up` and `demo` with the lab's own names filled in.

import { DEFAULT_LAB_NAME, type LabPlan } from "./plan.ts";
import type { LabState } from "./state.ts";
import { table } from "./status.ts";

/** Prints the next commands to try on the lab, ending with how to tear it down. */
export function printNextSteps(plan: LabPlan, state: LabState): void {
  const name = plan.options.name === DEFAULT_LAB_NAME ? "" : ` --name ${plan.options.name}`;
  const lab = (command: string) => `sudo scripts/lab ${command}${name}`;
  const rows = [
    [lab("status"), "pods, blocks, BGP sessions and the routes each side learned"],
    [lab("ping"), "every pod pings every pod on the other nodes"],
  ];
  if (plan.options.coil) {
    rows.push(
      [
        lab("add-pods node1 200"),
        "200 more pods on node1: 7 more blocks, announced as one run: 3 prefixes (4+2+1 blocks), not 7",
      ],
      [
        lab("del-pods pod-node1-1"),
        "CNI DEL, as a runtime calls it; an emptied block goes if others have room",
      ],
    );
  }
  const pod = state.pods[0];
  const peer = state.pods.find((p) => p.node !== pod?.node);
  if (pod && peer) {
    rows.push([
      `sudo ip netns exec ${pod.netns} ping -c 3 ${peer.addresses[0]}`,
      `from ${pod.name} to ${peer.name} on ${peer.node}`,
    ]);
  }
  rows.push(
    [`sudo birdc -s ${plan.router.birdSocket} show route`, "the router's BGP routes"],
    [`sudo ip -n ${plan.nodes[0].netns} route show table 119`, "the blocks node1 exports"],
  );
  console.log(`\nLab "${plan.options.name}" is up. Try:\n`);
  console.log(table(["COMMAND", "WHAT IT SHOWS"], rows).split("\n").map((line) => `  ${line}`).join("\n"));
  console.log(`\nTear it down with: ${lab("down")}`);
}
