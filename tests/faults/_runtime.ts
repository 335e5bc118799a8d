// What a container runtime does with the coil plugin, for the campaigns: netconfs for both modes, one
// exec per CNI call (helpers/cni.ts), the outcome sorted into success, "try again" (11) and failure,
// and each call recorded into the campaign's history (_history.ts) when the network has one.

import { type CniOutcome, runCni } from "../helpers/cni.ts";
import type { TestNetns } from "../helpers/netns.ts";
import { type CallResult, History, type Verb } from "./_history.ts";

/** The network all pods of a campaign attach to: both modes share its name, so one GC covers both. */
export interface Network {
  name: string;
  socket: string;
  /** Where every call through this module is recorded. */
  history?: History;
  /** The node the socket belongs to, for the history's reports. */
  node?: string;
  /** Extra environment for the plugin, e.g. COIL_CNI_TIMEOUT_MS. */
  env?: Record<string, string>;
  /** The program the runtime execs instead of coil, e.g. one that kills it at the runtime's exec timeout. */
  plugin?: string;
}

/** One attachment as the runtime knows it. */
export interface Pod {
  containerId: string;
  ifName: string;
  namespace: string;
  name: string;
  /** `main`: coil makes the veth in `netns`; `ipam`: Debian's ptp would, coil only hands out addresses. */
  mode: "main" | "ipam";
  /** CNI_NETNS. */
  netns: string;
}

/** How one CNI call ended. */
export interface CallOutcome {
  kind: "ok" | "retry" | "error";
  /** The error's code (0 on success, -1 when the output is not a CNI error). */
  cniCode: number;
  msg: string;
  /** ADD only: the first IP address, without prefix length. */
  ip?: string;
  /** ADD in IPAM mode: the gateway given with that address. */
  gateway?: string;
  /** ADD: every address, with its prefix length. */
  addresses?: string[];
  /** ADD: the result as printed, the prevResult of a later CHECK. */
  result?: Record<string, unknown>;
}

const CNI_VERSION = "1.1.0";
/** How outcomeOf() names a plugin the runtime killed: no answer, so coild may have acted. */
export const KILLED = "plugin killed by SIGKILL";

/** The netconf the runtime sends for `mode`. Main mode: coil is the plugin; IPAM mode: ptp's ipam section. */
export function netconfOf(net: Network, mode: Pod["mode"]): Record<string, unknown> {
  return mode === "main"
    ? { cniVersion: CNI_VERSION, name: net.name, type: "coil", socket: net.socket }
    : { cniVersion: CNI_VERSION, name: net.name, type: "ptp", ipam: { type: "coil", socket: net.socket } };
}

/** CNI_ARGS as kubelet's runtimes send them. */
function cniArgsOf(pod: Pod): string {
  return `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};` +
    `K8S_POD_INFRA_CONTAINER_ID=${pod.containerId}`;
}

/**
 * Execs coil for ADD or DEL of `pod`. In IPAM mode the runtime would exec ptp, which execs coil with the
 * same netconf and environment: coil is exec'd directly here, as ptp's part is not under test.
 */
export function cniCall(net: Network, command: "ADD" | "DEL", pod: Pod): Promise<CallOutcome> {
  return execRecorded(net, command, pod, netconfOf(net, pod.mode));
}

/** Execs CHECK of `pod` with `prevResult` (its ADD's result), as CRI-O does right after ADD. */
export function cniCheck(
  net: Network,
  pod: Pod,
  prevResult: Record<string, unknown>,
): Promise<CallOutcome> {
  return execRecorded(net, "CHECK", pod, { ...netconfOf(net, pod.mode), prevResult });
}

/** Execs `command` for `pod` with `netconf`, as a runtime does, and records it in the network's history. */
async function execRecorded(
  net: Network,
  command: "ADD" | "DEL" | "CHECK",
  pod: Pod,
  netconf: Record<string, unknown>,
): Promise<CallOutcome> {
  const start = History.now();
  const raw = await runCni({
    command,
    netconf,
    containerId: pod.containerId,
    netns: pod.netns,
    ifName: pod.ifName,
    args: cniArgsOf(pod),
    env: net.env,
    plugin: net.plugin,
  });
  return recorded(net, command, pod, start, outcomeOf(raw));
}

/** Execs GC for `net`, keeping exactly `keep`. */
export async function cniGc(net: Network, keep: Pod[]): Promise<CallOutcome> {
  const netconf = {
    ...netconfOf(net, "main"),
    "cni.dev/valid-attachments": keep.map((p) => ({ containerID: p.containerId, ifname: p.ifName })),
  };
  const start = History.now();
  const out = outcomeOf(await runCni({ command: "GC", netconf, env: net.env, plugin: net.plugin }));
  net.history?.record({
    verb: "GC",
    attachment: { network: net.name, containerId: "", ifName: "" },
    valid: keep.map((p) => ({ network: net.name, containerId: p.containerId, ifName: p.ifName })),
    start,
    result: resultOf(out),
    node: net.node,
  });
  return out;
}

/** Records the call into the network's history, if any, and returns `out`. */
function recorded(net: Network, verb: Verb, pod: Pod, start: number, out: CallOutcome): CallOutcome {
  net.history?.record({
    verb,
    attachment: { network: net.name, containerId: pod.containerId, ifName: pod.ifName },
    start,
    result: resultOf(out),
    node: net.node,
  });
  return out;
}

/**
 * The history's view of an outcome: `refused` when the plugin never reached coild (nothing can have
 * changed), `unknown` when coild may have acted without answering (cni/client.ts's other 11s, output
 * that is not the protocol), `error` for an answer.
 */
export function resultOf(out: CallOutcome): CallResult {
  if (out.kind === "ok") return { status: "ok", addresses: out.addresses ?? [] };
  const { cniCode: code, msg } = out;
  if (code === 11 && /the socket does not exist|connection refused/.test(msg)) {
    return { status: "refused", code, msg };
  }
  if (code === -1 || (code === 11 && /connection broke|without a reply|no reply within/.test(msg))) {
    return { status: "unknown", code, msg };
  }
  return { status: "error", code, msg };
}

/**
 * Sorts an exec's result; an exit other than 0 or 1, or output that is not the protocol, is an "error",
 * but for a plugin SIGKILLed before it printed anything (the runtime's exec timeout): a "retry".
 */
function outcomeOf(raw: CniOutcome): CallOutcome {
  const json = raw.json;
  if (raw.code === 128 + 9 && raw.stdout === "") {
    return { kind: "retry", cniCode: -1, msg: `${KILLED}: the runtime's exec timeout` };
  }
  if (raw.code === 0) {
    const ips = json?.ips as { address: string; gateway?: string }[] | undefined;
    const first = ips?.[0];
    return {
      kind: "ok",
      cniCode: 0,
      msg: "",
      ip: first?.address.split("/")[0],
      gateway: first?.gateway,
      addresses: ips?.map((i) => i.address) ?? [],
      result: json,
    };
  }
  const cniCode = typeof json?.code === "number" ? json.code : -1;
  const msg = typeof json?.msg === "string" ? json.msg : `exit ${raw.code}: ${raw.stdout}${raw.stderr}`;
  return { kind: raw.code === 1 && cniCode === 11 ? "retry" : "error", cniCode, msg };
}

/** Pings `ip` from the node, up to `attempts` times (the first echo may wait for ARP). */
export async function reachable(node: TestNetns, ip: string, attempts = 3): Promise<boolean> {
  for (let i = 0; i < attempts; i++) {
    try {
      await node.exec(["ping", "-c", "1", "-W", "2", ip]);
      return true;
    } catch { /* try again */ }
  }
  return false;
}
