// Whether etcd answers, and whether it raised an alarm (NOSPACE refuses every ADD's write), for the CNI
// STATUS verb and /readyz: runtimes ask every few seconds (containerd ≥ 2.0.1: every 5 s), so one probe
// is cached briefly and shared by concurrent callers.

import type { Etcd3 } from "etcd3";
import { describeAlarms, statusAlarms } from "../ipam/etcd_alarms.ts";
import { conciseCause } from "../ipam/etcd_client.ts";

export interface EtcdHealth {
  ok: boolean;
  /** Why not, e.g. "etcd is unreachable: connect ECONNREFUSED 127.0.0.1:2379". */
  reason?: string;
  /**
   * While etcd answers but has an alarm raised, what it means (etcd_alarms.ts describeAlarms()): under
   * NOSPACE no ADD can succeed, so STATUS and /readyz fail, while the watchdog keeps coild running.
   */
  alarm?: string;
}

export interface EtcdHealthOptions {
  client: Etcd3;
  /** The key read by the probe (its absence is fine). */
  probeKey: string;
  /** How long a result is reused; default 1500 ms. */
  cacheMs?: number;
  /** Deadline of the probe read; default 2000 ms, well below runtimes' STATUS timeouts. */
  timeoutMs?: number;
}

/** Returns the cached health check. It never throws, and reads etcd at most once per `cacheMs`. */
export function createEtcdHealth(options: EtcdHealthOptions): () => Promise<EtcdHealth> {
  const cacheMs = options.cacheMs ?? 1500;
  const timeoutMs = options.timeoutMs ?? 2000;
  let cached: { at: number; result: Promise<EtcdHealth> } | undefined;

  async function probe(): Promise<EtcdHealth> {
    try {
      // A linearizable read (the default) needs a quorum: a member cut off from the others fails it.
      const deadline = Date.now() + timeoutMs;
      await options.client.get(options.probeKey).options({ deadline }).exists();
      // An etcd that does not tell (an older one, or a user without the right) is taken as alarm-free.
      const alarm = describeAlarms(await statusAlarms(options.client, deadline).catch(() => []));
      return alarm ? { ok: true, alarm } : { ok: true };
    } catch (err) {
      const cause = err instanceof Error ? err.message : String(err);
      return { ok: false, reason: `etcd is unreachable: ${conciseCause(cause)}` };
    }
  }

  return () => {
    const now = performance.now();
    // The entry exists from the moment a probe starts, so callers meanwhile share it.
    if (!cached || now - cached.at >= cacheMs) cached = { at: now, result: probe() };
    return cached.result;
  };
}
