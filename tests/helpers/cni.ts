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

/** Where runtimes find IPAM plugins: a dir holding `coil` (our wrapper) and Debian's plugins. */
export const CNI_PATH = `${new URL("../../scripts/cni-bin", import.meta.url).pathname}:/usr/lib/cni`;

/** Executes one CNI call and returns its exit code and output. */
export async function runCni(call: CniCall): Promise<CniOutcome> {
  const env: Record<string, string> = {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
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
  const child = new Deno.Command(cmd, {
    args,
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(call.netconf)));
  await writer.close();
  const out = await child.output();
  const decoder = new TextDecoder();
  const stdout = decoder.decode(out.stdout);
  let json: Record<string, unknown> | undefined;
  try {
    json = stdout.trim() ? JSON.parse(stdout) : undefined;
  } catch { /* not JSON: the caller looks at stdout */ }
  return { code: out.code, stdout, stderr: decoder.decode(out.stderr), json };
}
