// `scripts/lab add-pods` and `del-pods`: change the pods of a running coild lab, then wait for BGP and
// show what changed where it matters: the blocks each node holds, the prefixes it exports for them (a
// run of buddy blocks is one prefix) and the routes the router holds.

import { waitConverged } from "./bgp_state.ts";
import { heldBlocks } from "./coil.ts";
import { addPods, deletePods, morePods } from "./pods.ts";
import { detail, step } from "./run.ts";
import type { LabPlan } from "./plan.ts";
import type { LabState, PodState } from "./state.ts";

/** Adds `count` pods in `namespace` on `node` with CNI ADD. Throws on a --no-coil lab or a failed ADD. */
export async function addPodsCommand(
  plan: LabPlan,
  state: LabState,
  node: string,
  count: number,
  namespace: string,
): Promise<void> {
  requireCoil(plan);
  if (count < 1) throw new Error(`Pod count ${count} is invalid: add 1 or more pods`);
  step(`Adding ${count} pods in namespace ${namespace} on ${node} with CNI ADD`);
  const added = await addPods(plan, state, morePods(plan, state, node, count, namespace));
  const describe = (pod: PodState) => `${pod.name} ${pod.addresses.join(" ")}`;
  detail(added.length === 1 ? describe(added[0]) : `${describe(added[0])} ... ${describe(added.at(-1)!)}`);
  await showRoutes(plan, state);
}

/** Deletes the named pods with CNI DEL. Throws on an unknown pod, a --no-coil lab or a failed DEL. */
export async function deletePodsCommand(plan: LabPlan, state: LabState, names: string[]): Promise<void> {
  requireCoil(plan);
  const pods = names.map((name) => {
    const pod = state.pods.find((p) => p.name === name);
    if (!pod) throw new Error(`Pod "${name}" is not in lab "${plan.options.name}": see scripts/lab status`);
    return pod;
  });
  step(`Deleting ${pods.length} pod(s) with CNI DEL: ${names.join(" ")}`);
  await deletePods(plan, state, pods);
  await showRoutes(plan, state);
}

async function showRoutes(plan: LabPlan, state: LabState): Promise<void> {
  step("Waiting for the router and every node to learn every exported prefix");
  const exported = await waitConverged(plan);
  let blocks = 0;
  for (const [node, prefixes] of exported) {
    const pods = state.pods.filter((p) => p.node === node).length;
    const held = (await heldBlocks(plan, node)).length;
    blocks += held;
    detail(
      `${node}: ${pods} pods in ${held} block(s), exported as ${prefixes.length} prefix(es): ` +
        `${prefixes.join(", ") || "none"}`,
    );
  }
  const routes = [...exported.values()].flat().length;
  detail(
    `the router holds ${routes} route(s) for ${state.pods.length} pods in ${blocks} blocks: ` +
      "one per run of blocks, not one per block or pod",
  );
}

function requireCoil(plan: LabPlan): void {
  if (!plan.options.coil) {
    throw new Error(`Lab "${plan.options.name}" runs without coild (--no-coil): its pods are static`);
  }
}
