// `scripts/lab ping`: every pod pings every pod on the other nodes, one packet per address family the
// two share, and the result is printed as a matrix and counts.

import { inNetns, mapLimit } from "./run.ts";
import type { PodState } from "./state.ts";
import { table } from "./status.ts";

export interface PingResult {
  from: string;
  to: string;
  address: string;
  ok: boolean;
}

/** The largest lab whose matrix is printed; beyond it only the counts and failures are. */
const MATRIX_MAX_PODS = 16;

/** Pings across nodes from inside each pod's namespace. Never throws for a lost packet. */
export async function pingAll(pods: PodState[]): Promise<PingResult[]> {
  const jobs: { from: PodState; to: PodState; address: string }[] = [];
  for (const from of pods) {
    const families = new Set(from.addresses.map((a) => a.includes(":")));
    for (const to of pods) {
      if (to.node === from.node) continue;
      for (const address of to.addresses) {
        if (families.has(address.includes(":"))) jobs.push({ from, to, address });
      }
    }
  }
  return await mapLimit(jobs, 8, async (job) => {
    const out = await inNetns(job.from.netns, "ping", ["-c", "1", "-W", "2", "-q", job.address], {
      check: false,
    });
    return { from: job.from.name, to: job.to.name, address: job.address, ok: out.code === 0 };
  });
}

/** Prints the matrix (rows ping columns), the counts and each failure. Returns true when all passed. */
export function printPingReport(pods: PodState[], results: PingResult[]): boolean {
  if (pods.length <= MATRIX_MAX_PODS) {
    const rows = pods.map((from) => [
      from.name,
      ...pods.map((to) => {
        const cell = results.filter((r) => r.from === from.name && r.to === to.name);
        if (cell.length === 0) return ".";
        const failed = cell.filter((r) => !r.ok);
        if (failed.length === 0) return "ok";
        return failed.length === cell.length
          ? "FAIL"
          : `FAIL${failed.map((r) => r.address.includes(":") ? 6 : 4)}`;
      }),
    ]);
    console.log(table(["FROM \\ TO", ...pods.map((p) => p.name)], rows));
    console.log('("." = same node, not pinged)');
  }
  const failures = results.filter((r) => !r.ok);
  for (const f of failures) console.log(`FAILED: ${f.from} -> ${f.to} (${f.address})`);
  console.log(`${results.length - failures.length}/${results.length} pings succeeded`);
  return failures.length === 0;
}
