// coild on a lab node: started detached inside the node's namespace with its log and pid file, ready
// once its socket accepts a connection, and stopped with SIGTERM as systemd stops it.

import { COIL } from "./coil.ts";
import { EXPORT_TABLE_ID, type LabPlan, type NodePlan, PROTOCOL_ID } from "./plan.ts";
import { isAlive, pidFromFile, startDaemon, stopProcesses } from "./processes.ts";
import { poll } from "./run.ts";

/** How long coild may take to open its socket: a start loads state from etcd on a shared machine. */
const START_TIMEOUT_MS = 60_000;

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

/**
 * Starts coild in the node's namespace and waits until its socket accepts a connection (a socket file
 * left by a killed coild does not count). Throws with the log's tail if coild dies first.
 */
export async function startCoild(plan: LabPlan, node: NodePlan): Promise<void> {
  const pid = await startDaemon({
    netns: node.netns,
    argv: coildArgv(plan, node),
    log: node.coildLog,
    pidFile: node.coildPid,
  });
  await poll(`coild on ${node.name} opening ${node.coildSocket}`, START_TIMEOUT_MS, async () => {
    if (!await isAlive(pid)) {
      const log = await Deno.readTextFile(node.coildLog).catch(() => "");
      throw new Error(`coild on ${node.name} exited: ${log.trim().split("\n").slice(-5).join(" | ")}`);
    }
    return await accepts(node.coildSocket) ? true : undefined;
  });
}

/** Stops the node's coild with SIGTERM (SIGKILL after 5 s). Idempotent: no coild, nothing to do. */
export async function stopCoild(plan: LabPlan, node: NodePlan): Promise<void> {
  const pid = await pidFromFile(node.coildPid, `${plan.stateDir}/`);
  if (pid !== undefined) await stopProcesses([pid]);
}

/** Stops the node's coild and starts it again, as `systemctl restart coild` does. */
export async function restartCoild(plan: LabPlan, node: NodePlan): Promise<void> {
  await stopCoild(plan, node);
  await startCoild(plan, node);
}

async function accepts(socket: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path: socket });
    conn.close();
    return true;
  } catch {
    return false;
  }
}
