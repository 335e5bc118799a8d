// Which process this is, machine-wide: boot, network and PID namespaces, pid and start time, read from
// /proc through libc, because Deno asks for --allow-all before it reads anything under /proc.

import { NetlinkError } from "../netlink/errors.ts";
import { readProcFile, readProcLink } from "../netlink/procfs.ts";
import type { NodeHolder } from "../ipam/records.ts";

/** What a node key's holder record says of its process (records.ts): all of it but the lease. */
export type ProcessIdentity = Omit<NodeHolder, "leaseId">;

/** A /proc file's text, or undefined when it cannot be read (e.g. the process is gone). */
function readIfThere(path: string): string | undefined {
  try {
    return readProcFile(path);
  } catch (err) {
    if (err instanceof NetlinkError) return undefined;
    throw err;
  }
}

/**
 * State and start time of `pid` from /proc/PID/stat, or undefined when it does not exist. The command
 * name (field 2) may hold spaces and parentheses, so fields are counted from its last `)`.
 */
function processStat(pid: number | "self"): { state: string; startTicks: string } | undefined {
  const text = readIfThere(`/proc/${pid}/stat`);
  if (text === undefined) return undefined;
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); starttime is field 22.
  return { state: fields[0], startTicks: fields[19] };
}

/** This process. @throws when /proc is not mounted. */
export function currentProcess(): ProcessIdentity {
  const bootId = readIfThere("/proc/sys/kernel/random/boot_id")?.trim();
  const stat = processStat("self");
  if (!bootId || !stat) throw new Error("Cannot read this process's identity: is /proc mounted?");
  return {
    host: Deno.hostname(),
    bootId,
    netns: readProcLink("/proc/self/ns/net"),
    pidns: readProcLink("/proc/self/ns/pid"),
    pid: Deno.pid,
    startTicks: stat.startTicks,
  };
}

/** Whether the process `pid` that started at `startTicks` (in our PID namespace) still runs. */
export function processRuns(pid: number, startTicks: string): boolean {
  const stat = processStat(pid);
  // A zombie has exited; it only waits for its parent to read its status.
  return stat !== undefined && stat.startTicks === startTicks && stat.state !== "Z";
}
