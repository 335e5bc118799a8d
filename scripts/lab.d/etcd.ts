// The lab's etcd (Debian's etcd-server): one member in the management namespace, listening on the
// bridge address, checked from every node namespace the way coild will reach it.

import type { LabPlan } from "./plan.ts";
import { startDaemon } from "./processes.ts";
import { inNetns, poll } from "./run.ts";

/** Starts etcd and waits until every node gets a healthy answer. Throws with the log's tail if not. */
export async function startEtcd(plan: LabPlan): Promise<void> {
  const { mgmt } = plan;
  const peer = `http://${mgmt.address}:2380`;
  await Deno.mkdir(mgmt.etcdDir, { recursive: true });
  await startDaemon({
    netns: mgmt.netns,
    log: mgmt.etcdLog,
    pidFile: mgmt.etcdPid,
    argv: [
      "etcd",
      "--name=lab",
      `--data-dir=${mgmt.etcdDir}`,
      `--listen-client-urls=${mgmt.etcdEndpoint},http://127.0.0.1:2379`,
      `--advertise-client-urls=${mgmt.etcdEndpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=lab=${peer}`,
      "--log-level=warn",
    ],
  });
  for (const node of plan.nodes) {
    await poll(`etcd answering healthy from ${node.netns}`, 30_000, async () => {
      const health = await etcdHealth(node.netns, mgmt.address);
      return health ? true : undefined;
    }).catch(async (err) => {
      const log = await Deno.readTextFile(mgmt.etcdLog).catch(() => "");
      throw new Error(`${err.message}; etcd log ends with: ${log.trim().split("\n").slice(-3).join(" | ")}`);
    });
  }
}

// GET /health over bash's /dev/tcp, so no HTTP client is needed inside the namespace.
async function etcdHealth(netns: string, address: string): Promise<boolean> {
  const script =
    `exec 3<>/dev/tcp/${address}/2379 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3`;
  const out = await inNetns(netns, "timeout", ["3", "bash", "-c", script], { check: false });
  return /"health":\s*"true"/.test(out.stdout);
}
