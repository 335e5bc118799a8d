// The hooks into Coil itself, through scripts/coil exactly as an operator and a runtime use it: the
// admin CLI creates pools, coild runs per node, and the CNI binary is exec'd with env and stdin.

import { EXPORT_TABLE_ID, type LabPlan, type NodePlan, type PodPlan, PROTOCOL_ID } from "./plan.ts";
import { isAlive, startDaemon } from "./processes.ts";
import { inNetns, poll, run } from "./run.ts";
import { addNetns } from "./topology.ts";

/** scripts/coil, which runs main.ts as the compiled binary would. */
export const COIL = new URL("../coil", import.meta.url).pathname;
/** Where runtimes find CNI plugins (Debian's containernetworking-plugins). */
export const CNI_PATH = "/usr/lib/cni";

/** True when `scripts/coil daemon --help` succeeds, i.e. coild exists. */
export async function coildAvailable(): Promise<boolean> {
  const out = await run(COIL, ["daemon", "--help"], { check: false });
  return out.code === 0;
}

/** The argv that runs coild for `node` (inside the node's namespace). */
export function coildArgv(plan: LabPlan, node: NodePlan): string[] {
  return [
    COIL,
    "daemon",
    "--node-name",
    node.name,
    "--etcd-endpoints",
    plan.mgmt.etcdEndpoint,
    "--socket",
    node.coildSocket,
    "--export-table-id",
    String(EXPORT_TABLE_ID),
    "--protocol-id",
    String(PROTOCOL_ID),
  ];
}

/** Creates the lab's pools with `coil pool create`, run in the management namespace. */
export async function createPools(plan: LabPlan): Promise<void> {
  for (const pool of plan.pools) {
    await inNetns(plan.mgmt.netns, COIL, [
      "pool",
      "create",
      pool.name,
      ...pool.subnets,
      "--block-size-bits",
      String(pool.blockSizeBits),
      "--etcd-endpoints",
      plan.mgmt.etcdEndpoint,
    ]);
  }
}

/** Starts coild in the node's namespace and waits for its socket. Throws with the log's tail if it dies. */
export async function startCoild(plan: LabPlan, node: NodePlan): Promise<void> {
  const pid = await startDaemon({
    netns: node.netns,
    argv: coildArgv(plan, node),
    log: node.coildLog,
    pidFile: node.coildPid,
  });
  await poll(`coild on ${node.name} opening ${node.coildSocket}`, 60_000, async () => {
    if (!await isAlive(pid)) {
      const log = await Deno.readTextFile(node.coildLog).catch(() => "");
      throw new Error(`coild on ${node.name} exited: ${log.trim().split("\n").slice(-5).join(" | ")}`);
    }
    const stat = await Deno.stat(node.coildSocket).catch(() => undefined);
    return stat?.isSocket ? true : undefined;
  });
}

/** The netconf the lab hands the CNI plugin on stdin. */
export function netconf(node: NodePlan): string {
  return JSON.stringify({ cniVersion: "1.1.0", name: "coil-lab", type: "coil", socket: node.coildSocket });
}

/** The CNI environment of an ADD or DEL for `pod`. */
export function cniEnv(command: "ADD" | "DEL", pod: PodPlan): Record<string, string> {
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
export async function cniAdd(node: NodePlan, pod: PodPlan): Promise<string[]> {
  await addNetns(pod.netns);
  const out = await inNetns(node.netns, COIL, [], {
    env: cniEnv("ADD", pod),
    stdin: netconf(node),
    check: false,
  });
  let result: { ips?: { address?: string }[]; code?: number; msg?: string; details?: string };
  try {
    result = JSON.parse(out.stdout);
  } catch {
    throw new Error(`CNI ADD for ${pod.name} printed no JSON (exit ${out.code}): ${out.stderr.trim()}`);
  }
  if (out.code !== 0 || result.code !== undefined) {
    throw new Error(
      `CNI ADD for ${pod.name} failed with code ${result.code}: ${result.msg} ${result.details ?? ""}`,
    );
  }
  const addresses = (result.ips ?? []).map((entry) => String(entry.address).split("/")[0]);
  if (addresses.length === 0) throw new Error(`CNI ADD for ${pod.name} returned no address`);
  return addresses;
}
