// Runs the coil binary as a CNI plugin exactly as a container runtime does: a separate process with
// the CNI_* environment and the netconf on stdin, optionally inside the node's netns.

import { COIL } from "./coild.ts";

export interface CniCall {
  command: "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" | "VERSION";
  netconf: Record<string, unknown>;
  containerId?: string;
  netns?: string;
  ifName?: string;
  /** CNI_ARGS, e.g. "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1". */
  args?: string;
  /** Run inside this netns (the node), as the runtime on that node would. */
  inNetns?: string;
  /** The plugin to exec; default: coil. E.g. /usr/lib/cni/ptp, which then delegates IPAM to coil. */
  plugin?: string;
  env?: Record<string, string>;
}

export interface CniOutcome {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, when it is JSON. */
  json?: Record<string, unknown>;
}

const SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

/** Where runtimes find IPAM plugins: a dir holding `coil` (our wrapper) and Debian's plugins. */
export const CNI_PATH = `${new URL("../../scripts/cni-bin", import.meta.url).pathname}:/usr/lib/cni`;

/** Executes one CNI call and returns its exit code and output. */
export async function runCni(call: CniCall): Promise<CniOutcome> {
  const env: Record<string, string> = {
    PATH: SYSTEM_PATH,
    CNI_COMMAND: call.command,
    CNI_PATH,
    ...(call.containerId !== undefined ? { CNI_CONTAINERID: call.containerId } : {}),
    ...(call.netns !== undefined ? { CNI_NETNS: call.netns } : {}),
    ...(call.ifName !== undefined ? { CNI_IFNAME: call.ifName } : {}),
    ...(call.args !== undefined ? { CNI_ARGS: call.args } : {}),
    ...call.env,
  };
  const plugin = call.plugin ?? COIL;
  const [cmd, args] = call.inNetns
    ? ["ip", [
      "netns",
      "exec",
      call.inNetns,
      "env",
      "-i",
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      plugin,
    ]]
    : [plugin, []];
  const out = await exec(cmd, args, env, JSON.stringify(call.netconf));
  let json: Record<string, unknown> | undefined;
  try {
    json = out.stdout.trim() ? JSON.parse(out.stdout) : undefined;
  } catch { /* not JSON: the caller looks at stdout */ }
  return { ...out, json };
}

/**
 * Runs coil in CNI mode with exactly `env` (PATH defaults to the system dirs) and raw `stdin`, for calls
 * runCni() cannot express: a missing CNI_COMMAND, bytes that are not JSON, env of the caller's choice.
 */
export function runCoil(env: Record<string, string>, stdin: string | Uint8Array = ""): Promise<CniOutcome> {
  return exec(COIL, [], { PATH: SYSTEM_PATH, ...env }, stdin);
}

/** Spawns `cmd` with exactly `env`, writes `stdin`, and collects its exit code and output. */
async function exec(
  cmd: string,
  args: string[],
  env: Record<string, string>,
  stdin: string | Uint8Array,
): Promise<CniOutcome> {
  const child = new Deno.Command(cmd, {
    args,
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  try {
    await writer.write(typeof stdin === "string" ? new TextEncoder().encode(stdin) : stdin);
    await writer.close();
  } catch (err) {
    // coil may exit before reading stdin (VERSION, an environment error); runtimes ignore EPIPE too.
    if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}
