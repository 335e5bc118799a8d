// CNI pods in a running lab: added and deleted as a runtime does (several at once), each recorded in
// lab.json as it comes and goes, so `status`, `ping` and `down` see exactly the pods that exist.

import { cniAdd, cniDel } from "./cni.ts";
import { type LabPlan, type NodePlan, planPod, type PodPlan } from "./plan.ts";
import { mapLimit } from "./run.ts";
import { type LabState, type PodState, saveState } from "./state.ts";

/** How many CNI calls run at once: containerd and CRI-O call the plugin concurrently too. */
const CONCURRENT_CALLS = 4;

/**
 * Runs CNI ADD for `pods` (at most a few at once) and records each that got addresses. Returns their
 * states in the order given. Throws the first failure, after the others finished and were recorded.
 */
export async function addPods(plan: LabPlan, state: LabState, pods: PodPlan[]): Promise<PodState[]> {
  const outcomes = await mapLimit(pods, CONCURRENT_CALLS, async (pod) => {
    try {
      const addresses = await cniAdd(nodeOf(plan, pod.node), pod);
      return { pod: podState(pod, addresses) };
    } catch (error) {
      return { error };
    }
  });
  const added = outcomes.flatMap((o) => o.pod ? [o.pod] : []);
  state.pods.push(...added);
  await saveState(plan, state);
  const failed = outcomes.find((o) => o.error !== undefined);
  if (failed) throw failed.error;
  return added;
}

/**
 * Plans `count` more pods in `namespace` on `node`, numbered after the node's existing pods.
 * Throws on an unknown node.
 */
export function morePods(
  plan: LabPlan,
  state: LabState,
  node: string,
  count: number,
  namespace: string,
): PodPlan[] {
  nodeOf(plan, node);
  const taken = state.pods.filter((p) => p.node === node).map((p) => podIndex(p.name));
  const first = Math.max(0, ...taken) + 1;
  return Array.from({ length: count }, (_, i) => planPod(plan, node, first + i, namespace));
}

/**
 * Deletes `pods` as a runtime does (CNI DEL, then the namespace), a few at once, and drops each from
 * the record once gone. Throws the first failure, after the others finished.
 */
export async function deletePods(plan: LabPlan, state: LabState, pods: PodState[]): Promise<void> {
  const outcomes = await mapLimit(pods, CONCURRENT_CALLS, async (pod) => {
    try {
      await cniDel(nodeOf(plan, pod.node), pod);
      return { pod };
    } catch (error) {
      return { error };
    }
  });
  const gone = new Set(outcomes.flatMap((o) => o.pod ? [o.pod.name] : []));
  state.pods = state.pods.filter((p) => !gone.has(p.name));
  await saveState(plan, state);
  const failed = outcomes.find((o) => o.error !== undefined);
  if (failed) throw failed.error;
}

/** The record of a pod that got `addresses`. */
export function podState(pod: PodPlan, addresses: string[]): PodState {
  return {
    name: pod.name,
    namespace: pod.namespace,
    node: pod.node,
    netns: pod.netns,
    containerId: pod.containerId,
    addresses,
  };
}

function nodeOf(plan: LabPlan, name: string): NodePlan {
  const node = plan.nodes.find((n) => n.name === name);
  if (!node) {
    throw new Error(
      `Node "${name}" is not in lab "${plan.options.name}": use node1-node${plan.nodes.length}`,
    );
  }
  return node;
}

// Pod names are `pod-<node>-<index>`.
function podIndex(name: string): number {
  return Number(/-(\d+)$/.exec(name)?.[1] ?? 0);
}
