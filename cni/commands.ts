// The verbs: each builds coild's request from the environment and the netconf, sends it, and returns
// what to print. coild does the work and makes every verb safe to repeat (DEL after DEL, DEL without netns).

import type { AddResult, ApiRequest, Attachment } from "./api.ts";
import { callCoild } from "./client.ts";
import {
  CniError,
  ERR_INTERNAL,
  ERR_INVALID_CONFIG,
  ERR_LIMITED_CONNECTIVITY,
  ERR_NOT_AVAILABLE,
} from "./errors.ts";
import { formatResult, parseResult } from "./result.ts";
import type { CniCall } from "./skel.ts";

/** Sends one request to coild: its ADD result, or undefined. Throws CniError as callCoild does. */
export type Coild = (request: ApiRequest) => Promise<AddResult | undefined>;

/** The real coild: the netconf's socket and the environment's timeout. */
export function coildOf(call: CniCall): Coild {
  return (request) => callCoild(call.conf.socket, request, call.env.timeoutMs);
}

/** ADD: coild allocates (and in main mode sets up the veth); prints the result in the netconf's version. */
export async function add(call: CniCall, coild: Coild = coildOf(call)): Promise<Record<string, unknown>> {
  const { mode, mtu, hostRouteTable, cniVersion } = call.conf;
  const result = await coild({ verb: "add", ...attachment(call), mode, mtu, hostRouteTable });
  if (result === undefined) throw new CniError(ERR_INTERNAL, "Invalid reply from coild to ADD: no result");
  return formatResult(result, cniVersion, mode);
}

/**
 * DEL: coild releases the address (and the veth). It succeeds when repeated, when nothing was
 * allocated and when the netns is gone; when coild is unreachable the 11 stands, for the runtime retries.
 */
export async function del(call: CniCall, coild: Coild = coildOf(call)): Promise<undefined> {
  const { mode, hostRouteTable } = call.conf;
  await coild({ verb: "del", ...attachment(call), mode, hostRouteTable });
}

/**
 * CHECK: coild verifies its allocation, that prevResult lists exactly those addresses, and (main mode)
 * the pod's network. The runtime must send a valid prevResult.
 */
export async function check(call: CniCall, coild: Coild = coildOf(call)): Promise<undefined> {
  if (call.conf.prevResult === undefined) {
    throw new CniError(
      ERR_INVALID_CONFIG,
      "Netconf key prevResult is missing: CHECK needs the result of ADD",
    );
  }
  const prev = parseResult(call.conf.prevResult, ERR_INVALID_CONFIG, "netconf key prevResult");
  const { mode, hostRouteTable } = call.conf;
  const prevIps = prev.ips.map((ip) => ip.address);
  await coild({ verb: "check", ...attachment(call), mode, hostRouteTable, prevIps });
}

/** GC: coild releases this network's allocations that are not in the valid attachments (an empty list too). */
export async function gc(call: CniCall, coild: Coild = coildOf(call)): Promise<undefined> {
  const { name, validAttachments } = call.conf;
  if (validAttachments === undefined) {
    // Without the list, "release everything else" would release everything: refuse instead.
    throw new CniError(ERR_INVALID_CONFIG, "Netconf key cni.dev/valid-attachments is missing: GC needs it");
  }
  await coild({ verb: "gc", network: name, validAttachments });
}

/**
 * STATUS: asks coild whether it can serve ADD. Every failure is reported as 50 (with its reason), unless
 * coild said 51; an unreachable coild is a 50, not the 11 of the other verbs.
 */
export async function status(call: CniCall, coild: Coild = coildOf(call)): Promise<undefined> {
  try {
    await coild({ verb: "status", network: call.conf.name });
  } catch (err) {
    if (
      !(err instanceof CniError) || err.code === ERR_NOT_AVAILABLE || err.code === ERR_LIMITED_CONNECTIVITY
    ) {
      throw err;
    }
    throw new CniError(ERR_NOT_AVAILABLE, `Coil cannot serve ADD: ${err.msg}`, err.details, { cause: err });
  }
}

function attachment({ env, conf }: CniCall): Attachment {
  return {
    network: conf.name,
    containerId: env.containerId,
    ifName: env.ifName,
    netns: env.netns,
    podNamespace: env.args.podNamespace,
    podName: env.args.podName,
    podUid: env.args.podUid,
  };
}
