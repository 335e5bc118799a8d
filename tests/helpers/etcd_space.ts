// A full etcd for tests, made and mended as an operator meets it: big values under a prefix of
// their own until etcd raises NOSPACE, then the runbook of etcd's maintenance guide (delete, compact,
// defragment, disarm) through the client's Maintenance calls, which is what `etcdctl` sends.

import { Buffer } from "node:buffer";
import type { Etcd3 } from "etcd3";
import { isNoSpace, listAlarms } from "../../ipam/etcd_alarms.ts";

/** Size of one filler value: big enough to fill a small quota in a few dozen puts. */
const FILL_VALUE_BYTES = 100_000;
/** Puts after which a quota that never fills counts as a broken set-up. */
const MAX_FILL_PUTS = 10_000;

/**
 * Puts big values under `fillPrefix` until etcd refuses one for lack of space.
 * @returns how many puts it took.
 * @throws {Error} when a put fails otherwise, or the quota never fills.
 */
export async function fillUntilNoSpace(client: Etcd3, fillPrefix: string): Promise<number> {
  const value = "x".repeat(FILL_VALUE_BYTES);
  for (let i = 0; i < MAX_FILL_PUTS; i++) {
    try {
      await client.put(`${fillPrefix}${i}`).value(value);
    } catch (err) {
      if (isNoSpace(err)) return i;
      throw err;
    }
  }
  throw new Error(`etcd took ${MAX_FILL_PUTS} puts under "${fillPrefix}" without refusing one`);
}

/** Whether etcd's alarm list holds NOSPACE. */
export async function noSpaceRaised(client: Etcd3): Promise<boolean> {
  return (await listAlarms(client)).some((a) => a.alarm === "NOSPACE");
}

/**
 * The operator's way out: deletes the filler (deletes pass the alarm), compacts up to the current
 * revision, defragments (the only step that gives the space back to the quota), then disarms every
 * alarm (`etcdctl alarm disarm`).
 * @returns when the disarm was answered (performance.now()), the start of "time to serve again".
 */
export async function freeSpaceAndDisarm(client: Etcd3, fillPrefix: string): Promise<number> {
  const deleted = await client.delete().prefix(fillPrefix).exec();
  await client.kv.compact({ revision: deleted.header.revision, physical: true });
  await client.maintenance.defragment();
  for (const alarm of await listAlarms(client)) {
    // Numbers, not names: the library's enum keys (Deactivate, Nospace) are not the proto's names.
    await client.maintenance.alarm({ action: 2, memberID: alarm.memberId, alarm: alarmNumber(alarm.alarm) });
  }
  return performance.now();
}

function alarmNumber(alarm: string): number {
  const n = ["NONE", "NOSPACE", "CORRUPT"].indexOf(alarm);
  if (n < 1) throw new Error(`Unknown etcd alarm "${alarm}"`);
  return n;
}

/** The store revision now, from a one-key read (for "nothing was written"). */
export async function currentRevision(client: Etcd3): Promise<string> {
  const res = await client.kv.range({ key: Buffer.from("\0"), count_only: true });
  return res.header.revision;
}
