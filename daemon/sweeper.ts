// The leak sweep: an allocation whose pod netns has vanished without a DEL (a runtime crash, a lost
// call) is released once the netns has been seen missing on two sweeps at least the grace apart; then
// empty blocks go back to the pool and the export table is re-synced (which also undoes hand edits).

import type { Allocation, NodeIpam } from "../ipam/node_ipam.ts";
import { formatCidr, formatIp } from "../ipam/cidr.ts";
import type { Logger } from "./log.ts";
import type { Teardown } from "./teardown.ts";

export interface SweeperOptions {
  ipam: Pick<NodeIpam, "allocations" | "releaseEmptyBlocks">;
  /** Tears an allocation down the way DEL does (pod network, then addresses), in its container's queue. */
  teardown: Pick<Teardown, "expire">;
  /** Re-syncs the export table from the owned blocks; must not throw. */
  syncExport: () => void;
  /** Seconds between the end of one sweep and the start of the next; 0: only explicit sweep() calls. */
  intervalSeconds: number;
  graceSeconds: number;
  log: Logger;
  /** Whether a netns path exists; default: stat, where only "not found" counts as missing. */
  netnsExists?: (path: string) => boolean | Promise<boolean>;
  now?: () => number;
  /** Hears each finished sweep (metrics). */
  onReport?: (report: SweepReport) => void;
}

/** What one sweep did. */
export interface SweepReport {
  /** Allocations whose netns is missing but within the grace (or seen missing only once). */
  suspects: number;
  released: Allocation[];
  blocksReleased: number;
}

/** Periodic sweeps, one at a time, remembering when each netns was first seen missing. */
export interface Sweeper {
  /** Runs one sweep now (or joins the one running); logs and survives per-allocation failures. Never throws. */
  sweep(): Promise<SweepReport>;
  /** Stops the periodic sweeps and waits for one in progress. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts sweeping every `intervalSeconds` (timed from the end of the previous sweep, so sweeps never
 * overlap); the first periodic sweep comes one interval after the start.
 */
export function startSweeper(options: SweeperOptions): Sweeper {
  const { ipam, log } = options;
  const now = options.now ?? Date.now;
  const netnsExists = options.netnsExists ?? statExists;
  const graceMs = options.graceSeconds * 1000;
  /** First time each attachment's netns was seen missing, by network, container ID and interface. */
  const missingSince = new Map<string, number>();
  let running: Promise<SweepReport> | undefined;

  async function sweepOnce(): Promise<SweepReport> {
    const report: SweepReport = { suspects: 0, released: [], blocksReleased: 0 };
    const seen = new Set<string>();
    for (const allocation of ipam.allocations()) {
      const id = JSON.stringify([allocation.network, allocation.containerId, allocation.ifName]);
      seen.add(id);
      // Without a path (never the case for an ADD that passed validation) there is nothing to judge by.
      if (!allocation.netns || await netnsExists(allocation.netns)) {
        missingSince.delete(id);
        continue;
      }
      const since = missingSince.get(id);
      if (since === undefined) {
        missingSince.set(id, now());
        report.suspects++;
        continue;
      }
      if (now() - since < graceMs) {
        report.suspects++;
        continue;
      }
      if (await release(allocation, since)) {
        report.released.push(allocation);
        missingSince.delete(id);
      }
    }
    for (const id of missingSince.keys()) if (!seen.has(id)) missingSince.delete(id);
    try {
      const blocks = await ipam.releaseEmptyBlocks();
      report.blocksReleased = blocks.length;
      if (blocks.length > 0) {
        log("info", "empty blocks released", {
          blocks: blocks.map(formatCidr),
          reason: "sweep: no address in use",
        });
      }
    } catch (err) {
      log("warn", "sweep: releasing empty blocks failed", { error: err });
    }
    options.syncExport();
    options.onReport?.(report);
    return report;
  }

  async function release(allocation: Allocation, since: number): Promise<boolean> {
    const fields = {
      containerId: allocation.containerId,
      ifName: allocation.ifName,
      network: allocation.network,
      pod: allocation.podName ? `${allocation.podNamespace}/${allocation.podName}` : undefined,
      ips: allocation.addresses.map((a) => formatIp(a.address)),
    };
    try {
      // Skipped when a DEL (and a new ADD) replaced the allocation since the sweep listed it.
      if (!await options.teardown.expire(allocation)) return false;
      log("info", "released", {
        reason: `sweep: netns "${allocation.netns}" missing since ${new Date(since).toISOString()}`,
        ...fields,
      });
      return true;
    } catch (err) {
      log("warn", "sweep: release failed, retrying next sweep", { ...fields, error: err });
      return false;
    }
  }

  function sweep(): Promise<SweepReport> {
    running ??= sweepOnce()
      .catch((err): SweepReport => {
        log("error", "sweep failed", { error: err });
        return { suspects: 0, released: [], blocksReleased: 0 };
      })
      .finally(() => running = undefined);
    return running;
  }

  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const schedule = () => {
    if (closed || options.intervalSeconds === 0) return;
    timer = setTimeout(() => void sweep().finally(schedule), options.intervalSeconds * 1000);
  };
  schedule();

  return {
    sweep,
    async close() {
      closed = true;
      clearTimeout(timer);
      await running;
    },
  };
}

/**
 * Synchronous: a netns path is a bind mount under /run or a /proc link, whose stat never waits on I/O,
 * and an async stat per pod costs a trip through Deno's blocking thread pool (a sweep of 500 pods took
 * ~36 ms of CPU that way).
 */
function statExists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (err) {
    // Any other failure (permissions, I/O) proves nothing: keep the allocation.
    return !(err instanceof Deno.errors.NotFound);
  }
}
