// The CNI plugin as a runtime drives it: scripts/coil exec'd inside the node's namespace with the CNI
// environment and the netconf on stdin, ADD for a new pod and DEL before its namespace goes.

import { COIL } from "./coil.ts";
import type { NodePlan, PodPlan } from "./plan.ts";
import { inNetns } from "./run.ts";
import { addNetns, deleteNetns } from "./topology.ts";

/** Where runtimes find CNI plugins (Debian's containernetworking-plugins). */
export const CNI_PATH = "/usr/lib/cni";

/** The pod fields a CNI call needs (a PodPlan or a PodState). */
export type CniPod = Pick<PodPlan, "name" | "namespace" | "netns" | "containerId">;

interface CniOutput {
  ips?: { address?: string }[];
  code?: number;
  msg?: string;
  details?: string;
}

/** The netconf the lab hands the CNI plugin on stdin. */
export function netconf(node: NodePlan): string {
  return JSON.stringify({ cniVersion: "1.1.0", name: "coil-lab", type: "coil", socket: node.coildSocket });
}

/** The CNI environment of an ADD or DEL for `pod`. */
export function cniEnv(command: "ADD" | "DEL", pod: CniPod): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: pod.containerId,
    CNI_NETNS: `/var/run/netns/${pod.netns}`,
    CNI_IFNAME: "eth0",
    CNI_PATH,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name}`,
  };
}

/**
 * Creates the pod's namespace and runs CNI ADD for it inside the node's namespace, as a runtime
 * does. Returns the addresses of the result (without prefix length). Throws with the CNI error.
 */
export async function cniAdd(node: NodePlan, pod: CniPod): Promise<string[]> {
  await addNetns(pod.netns);
  const result = await runCni("ADD", node, pod);
  const addresses = (result?.ips ?? []).map((entry) => String(entry.address).split("/")[0]);
  if (addresses.length === 0) throw new Error(`CNI ADD for ${pod.name} returned no address`);
  return addresses;
}

/**
 * Runs CNI DEL for the pod inside the node's namespace, then deletes the pod's namespace, in the
 * order a runtime does. Throws with the CNI error. Idempotent, as DEL is.
 */
export async function cniDel(node: NodePlan, pod: CniPod): Promise<void> {
  await runCni("DEL", node, pod);
  await deleteNetns(pod.netns);
}

// A successful ADD prints the result, a successful DEL nothing; a failure prints the CNI error JSON.
async function runCni(command: "ADD" | "DEL", node: NodePlan, pod: CniPod): Promise<CniOutput | undefined> {
  const out = await inNetns(node.netns, COIL, [], {
    env: cniEnv(command, pod),
    stdin: netconf(node),
    check: false,
  });
  let result: CniOutput | undefined;
  try {
    result = out.stdout.trim() === "" ? undefined : JSON.parse(out.stdout);
  } catch {
    throw new Error(
      `CNI ${command} for ${pod.name} printed no JSON (exit ${out.code}): ${out.stderr.trim()}`,
    );
  }
  if (out.code !== 0 || result?.code !== undefined) {
    throw new Error(
      `CNI ${command} for ${pod.name} failed with code ${result?.code}: ${result?.msg} ${
        result?.details ?? ""
      }`,
    );
  }
  if (command === "ADD" && result === undefined) {
    throw new Error(`CNI ADD for ${pod.name} printed no result: ${out.stderr.trim()}`);
  }
  return result;
}
