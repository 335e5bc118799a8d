// A lean, timed spawner: runs a program as a container runtime runs a CNI plugin (its own process, env
// and stdin in, stdout out) and measures spawn to exit. It can fork the child inside a namespace (the
// simulated node) by switching the JS thread with setns around the synchronous spawn, so that no
// `ip netns exec` process adds its own start-up to the figure.

import { withNetns } from "../../netlink/netns.ts";

export const ROOT = new URL("../../", import.meta.url).pathname;

/** scripts/coil: the bash wrapper exec'ing the native deno on main.ts, as the compiled binary runs. */
export const COIL = `${ROOT}scripts/coil`;
/** The native deno binary that scripts/coil execs. */
export const DENO = `${ROOT}node_modules/@deno/linux-x64-glibc/deno`;
/** Debian's containernetworking-plugins. */
export const CNI_DIR = "/usr/lib/cni";
export const HOST_LOCAL = `${CNI_DIR}/host-local`;
export const PTP = `${CNI_DIR}/ptp`;

/** What to run. */
export interface ExecSpec {
  cmd: string;
  args?: string[];
  /** The whole environment of the child, besides PATH and HOME. */
  env?: Record<string, string>;
  /** Written to stdin, then closed; none: stdin is /dev/null. */
  stdin?: string;
  /** Fork the child inside this namespace (fd from openNetns()). */
  netnsFd?: number;
}

/** How it went; `ms` is from just before spawn to the exit being seen. */
export interface ExecResult {
  ms: number;
  code: number;
  stdout: string;
  stderr: string;
}

/** A started child: await `done` for its result. */
export interface Running {
  done: Promise<ExecResult>;
}

function command(spec: ExecSpec): Deno.Command {
  return new Deno.Command(spec.cmd, {
    args: spec.args ?? [],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", HOME: Deno.env.get("HOME") ?? "/root", ...spec.env },
    clearEnv: true,
    stdin: spec.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
}

async function finish(child: Deno.ChildProcess, spec: ExecSpec, started: number): Promise<ExecResult> {
  if (spec.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(spec.stdin));
    await writer.close();
  }
  const out = await child.output();
  const ms = performance.now() - started;
  const decoder = new TextDecoder();
  return { ms, code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/**
 * Starts every spec at once (all forks happen in one synchronous turn, so none waits for another's
 * stdin write) and returns their runs, each timed from its own spawn.
 */
export function spawnAll(specs: readonly ExecSpec[]): Running[] {
  const commands = specs.map(command);
  const start = (i: number) => {
    const started = performance.now();
    return { child: commands[i].spawn(), started };
  };
  const spawned = specs.map((spec, i) =>
    spec.netnsFd === undefined ? start(i) : withNetns(spec.netnsFd, () => start(i))
  );
  return spawned.map(({ child, started }, i) => ({ done: finish(child, specs[i], started) }));
}

/** Runs one spec and times it. */
export function timedExec(spec: ExecSpec): Promise<ExecResult> {
  return spawnAll([spec])[0].done;
}

/**
 * Runs one spec and throws unless it exits 0 (and, for CNI, prints no error object), so a benchmark
 * never times a failure. Returns the result.
 */
export async function execOk(what: string, spec: ExecSpec): Promise<ExecResult> {
  const result = await timedExec(spec);
  checkOk(what, result);
  return result;
}

/** @throws {Error} naming `what` with the output when `result` is a failure. */
export function checkOk(what: string, result: ExecResult): void {
  if (result.code !== 0 || /"code":\s*\d/.test(result.stdout)) {
    throw new Error(
      `${what} failed with exit code ${result.code}: ${result.stdout.trim()} ${result.stderr.trim()}`.slice(
        0,
        2000,
      ),
    );
  }
}

/** The CNI environment of one call. */
export function cniEnv(
  command: "ADD" | "DEL" | "VERSION",
  call: { containerId?: string; netns?: string; ifName?: string; podName?: string } = {},
): Record<string, string> {
  const env: Record<string, string> = { CNI_COMMAND: command, CNI_PATH: CNI_DIR };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (command !== "VERSION") env.CNI_IFNAME = call.ifName ?? "eth0";
  if (call.podName !== undefined) {
    env.CNI_ARGS = `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${call.podName}`;
  }
  return env;
}

/** An empty module for "deno's bare start", in a fresh temp dir (no deno.json found). Remove its dir. */
export async function emptyModule(): Promise<{ path: string; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "coil-bench-" });
  const path = `${dir}/empty.ts`;
  await Deno.writeTextFile(path, "");
  return { path, dir };
}

/** `deno run` of the empty module: the floor of any Deno program's exec. */
export function bareDeno(emptyPath: string, netnsFd?: number): ExecSpec {
  return { cmd: DENO, args: ["run", "--no-prompt", emptyPath], netnsFd };
}
