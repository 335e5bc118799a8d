// etcd's alarms and how Coil words them. NOSPACE (the backend reached --quota-backend-bytes) makes etcd
// refuse every request that writes (a put, a txn with a put in either branch, a lease grant) until an
// operator frees space and disarms it; reads and pure deletes still work, so DEL can release.

import type { Etcd3 } from "etcd3";

/** One raised alarm, as etcd lists it: the member that raised it and its type, upper case (`NOSPACE`). */
export interface EtcdAlarm {
  memberId: string;
  alarm: string;
}

/**
 * What an operator reads when etcd refuses a write for lack of space (etcd's ErrGRPCNoSpace): the alarm
 * by name, and the way out (etcd's maintenance guide: compact, defragment, disarm).
 */
export const NO_SPACE_MESSAGE = "etcd is out of space (NOSPACE alarm): it refuses every write until it is " +
  "compacted and defragmented and the alarm is disarmed (etcdctl alarm disarm)";

/** etcd's text for a write refused by the space quota (rpctypes.ErrGRPCNoSpace). */
const NO_SPACE_TEXT = "database space exceeded";

/** Whether `err` is etcd refusing a write for lack of space (gRPC RESOURCE_EXHAUSTED, NOSPACE). */
export function isNoSpace(err: unknown): boolean {
  return err instanceof Error && err.message.includes(NO_SPACE_TEXT);
}

/**
 * Parses one entry of a member's Status `errors` ("memberID:8626083153443012918 alarm:NOSPACE "); other
 * entries (e.g. "etcdserver: no leader") give undefined.
 */
export function parseStatusAlarm(text: string): EtcdAlarm | undefined {
  const match = /^memberID:(\d+) alarm:([A-Z]+)\s*$/.exec(text);
  return match ? { memberId: match[1], alarm: match[2] } : undefined;
}

/**
 * The alarms a member knows of, from its Status: answered locally, without a raft round, so it suits a
 * probe that runs every few seconds on every node. The alarm store is replicated, so any member tells.
 * @throws the client's error when etcd does not answer by `deadline` (ms since the epoch).
 */
export async function statusAlarms(client: Etcd3, deadline: number): Promise<EtcdAlarm[]> {
  const status = await client.maintenance.status({ deadline });
  return (status.errors ?? []).flatMap((text) => parseStatusAlarm(text) ?? []);
}

/**
 * The cluster's alarm list (`etcdctl alarm list`: Maintenance.Alarm with action GET), which etcd answers
 * through raft: for an operator's command, not for a periodic probe.
 * @throws the client's error when etcd does not answer.
 */
export async function listAlarms(client: Etcd3): Promise<EtcdAlarm[]> {
  // Numbers, not names: the library's enums (Get, Nospace) are not the proto's names (GET, NOSPACE).
  const res = await client.maintenance.alarm({ action: 0, memberID: 0, alarm: 0 });
  return (res.alarms ?? []).map((a) => ({
    memberId: String(a.memberID),
    alarm: String(a.alarm).toUpperCase(),
  }));
}

/**
 * One line on what the raised alarms mean for Coil, or undefined when none is raised: NOSPACE first,
 * as it is the one that stops ADDs while reads go on.
 */
export function describeAlarms(alarms: readonly EtcdAlarm[]): string | undefined {
  if (alarms.length === 0) return undefined;
  const members = (type: string) => alarms.filter((a) => a.alarm === type).map((a) => a.memberId).join(", ");
  const noSpace = members("NOSPACE");
  const others = [...new Set(alarms.map((a) => a.alarm).filter((a) => a !== "NOSPACE"))]
    .map((type) => `the ${type} alarm (member ${members(type)})`);
  if (noSpace) {
    const also = others.length ? `; etcd also raised ${others.join(" and ")}` : "";
    return `${NO_SPACE_MESSAGE.replace("(NOSPACE alarm)", `(NOSPACE alarm, member ${noSpace})`)}${also}`;
  }
  return `etcd raised ${others.join(" and ")}: it refuses requests until an operator clears it`;
}
