// The lab's long-running processes (etcd, BIRD, coild): started detached inside a namespace with a log
// and a pid file, and stopped by pid, found through their namespace or their pid file.

import { run } from "./run.ts";

export interface DaemonSpec {
  netns: string;
  argv: string[];
  log: string;
  pidFile: string;
  env?: Record<string, string>;
}

// bash writes its own pid, then execs the daemon with that pid and its output in the log: the pid file
// is right even though setsid -f has already returned.
const LAUNCH = 'echo $$ > "$1"; log="$2"; shift 2; exec "$@" >>"$log" 2>&1 </dev/null';

/** Starts `argv` inside `netns` in its own session, outliving the lab command. Returns its pid. */
export async function startDaemon(spec: DaemonSpec): Promise<number> {
  await Deno.remove(spec.pidFile).catch(() => {});
  const launch = ["bash", "-c", LAUNCH, "coil-lab", spec.pidFile, spec.log];
  const status = await new Deno.Command("setsid", {
    args: ["-f", "ip", "netns", "exec", spec.netns, ...launch, ...spec.argv],
    env: spec.env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn().status;
  if (!status.success) throw new Error(`Process ${spec.argv[0]} in ${spec.netns} did not start`);
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const text = await Deno.readTextFile(spec.pidFile).catch(() => "");
    if (/^\d+\n$/.test(text)) return Number(text);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`Process ${spec.argv[0]} in ${spec.netns} wrote no pid file ${spec.pidFile}`);
}

/** True while `pid` exists (and is not a zombie). */
export async function isAlive(pid: number): Promise<boolean> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  return stat !== "" && !/^\d+ \(.*\) Z /.test(stat);
}

/** The pids of the processes inside `netns` (none when it is gone). */
export async function netnsPids(netns: string): Promise<number[]> {
  const out = await run("ip", ["netns", "pids", netns], { check: false });
  return out.stdout.split("\n").filter((line) => /^\d+$/.test(line)).map(Number);
}

/**
 * The pid in `pidFile` if that process still runs and its command line names `marker` (the lab's
 * state dir), so a pid reused by an unrelated process is never taken for ours.
 */
export async function pidFromFile(pidFile: string, marker: string): Promise<number | undefined> {
  const text = await Deno.readTextFile(pidFile).catch(() => "");
  if (!/^\d+\s*$/.test(text)) return undefined;
  const pid = Number(text);
  const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
  return cmdline.replaceAll("\0", " ").includes(marker) ? pid : undefined;
}

/** Sends SIGTERM, waits up to 5 s, then SIGKILL and waits again. Idempotent: gone pids are skipped. */
export async function stopProcesses(pids: number[]): Promise<void> {
  const signal = (sig: Deno.Signal) => {
    for (const pid of pids) {
      try {
        Deno.kill(pid, sig);
      } catch { /* already gone */ }
    }
  };
  signal("SIGTERM");
  if (await waitGone(pids, 5000)) return;
  signal("SIGKILL");
  if (!await waitGone(pids, 5000)) throw new Error(`Processes ${pids.join(", ")} did not end after SIGKILL`);
}

async function waitGone(pids: number[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const alive = await Promise.all(pids.map(isAlive));
    if (!alive.includes(true)) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}
