// The lab's record in its state dir (lab.json): the options `up` ran with and the pods it made with
// their addresses, written as `up` goes, so `status`, `ping` and the tests read what really exists.

import { type LabOptions, type LabPlan, planLab } from "./plan.ts";

export interface PodState {
  name: string;
  namespace: string;
  node: string;
  netns: string;
  containerId: string;
  addresses: string[];
}

export interface LabState {
  options: LabOptions;
  pods: PodState[];
}

/** Writes `state` to the plan's state file (atomically: write, then rename). */
export async function saveState(plan: LabPlan, state: LabState): Promise<void> {
  const tmp = `${plan.stateFile}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(state, null, 2) + "\n");
  await Deno.rename(tmp, plan.stateFile);
}

/** The state of lab `name` and its plan, or undefined when no such lab was brought up. */
export async function loadState(
  name: string,
  stateRoot?: string,
): Promise<{ plan: LabPlan; state: LabState } | undefined> {
  const probe = planLab({ name, nodes: 1, pods: 0, dualStack: false, coil: false }, stateRoot);
  const text = await Deno.readTextFile(probe.stateFile).catch(() => undefined);
  if (text === undefined) return undefined;
  const state = JSON.parse(text) as LabState;
  return { plan: planLab(state.options, stateRoot), state };
}
