// Whether coild can serve pods, for /readyz: every check must pass (etcd answers without an alarm, a pool
// exists, the CNI socket accepts). Checks run at once, each under a deadline, and every failing reason is
// reported.

import type { EtcdHealth } from "./etcd_health.ts";

/** The outcome of one check; `reason` says why not, in a line. */
export interface CheckResult {
  ok: boolean;
  reason?: string;
}

export type ReadinessCheck = () => Promise<CheckResult>;

/** How long one check may take before it counts as failed. */
const CHECK_DEADLINE_MS = 3000;

/**
 * One check made of `checks`: ok when all are; otherwise the reasons of those that failed, one per line.
 * A check that throws or outlives the deadline fails with that as its reason. Never throws.
 */
export function allOf(checks: readonly ReadinessCheck[], deadlineMs = CHECK_DEADLINE_MS): ReadinessCheck {
  return async () => {
    const results = await Promise.all(checks.map((check) => withDeadline(check, deadlineMs)));
    const reasons = results.filter((r) => !r.ok).map((r) => r.reason ?? "a readiness check failed");
    return reasons.length ? { ok: false, reason: reasons.join("\n") } : { ok: true };
  };
}

async function withDeadline(check: ReadinessCheck, deadlineMs: number): Promise<CheckResult> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(
      () => resolve({ ok: false, reason: `a check took over ${deadlineMs} ms` }),
      deadlineMs,
    );
  });
  try {
    return await Promise.race([check(), late]);
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  } finally {
    clearTimeout(timer);
  }
}

/** etcd's health as a check: etcd must answer and have no alarm raised (under NOSPACE every ADD fails). */
export function etcdServes(health: () => Promise<EtcdHealth>): ReadinessCheck {
  return async () => {
    const h = await health();
    return h.ok && h.alarm ? { ok: false, reason: h.alarm } : h;
  };
}

/**
 * Whether coild's CNI socket at `path` accepts a connection (a connection that sends nothing gets an
 * error reply and no handler runs: socket_server.ts).
 */
export function socketAccepts(path: string): ReadinessCheck {
  return async () => {
    try {
      const conn = await Deno.connect({ transport: "unix", path });
      conn.close();
      return { ok: true };
    } catch (err) {
      const cause = err instanceof Error ? err.message : String(err);
      return { ok: false, reason: `CNI socket "${path}" does not accept connections: ${cause}` };
    }
  };
}
