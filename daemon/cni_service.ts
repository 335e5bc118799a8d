// What coild does for each CNI verb: allocate then set up (undoing only what the call itself made when
// setup fails), and every teardown (DEL, GC) in one order: the pod network, then the addresses. No
// node-wide lock: only calls for the same container are queued.

import type {
  AddRequest,
  ApiReply,
  ApiRequest,
  Attachment,
  CheckRequest,
  DelRequest,
  GcRequest,
} from "../cni/api.ts";
import { formatIp } from "../ipam/cidr.ts";
import { isIpamError } from "../ipam/errors.ts";
import type { Allocation, NodeIpam } from "../ipam/node_ipam.ts";
import { ipamResult } from "./cni_results.ts";
import { CODE, DaemonError, errorReply } from "./errors.ts";
import type { EtcdHealth } from "./etcd_health.ts";
import type { KeyedQueue } from "./keyed_queue.ts";
import type { Logger } from "./log.ts";
import type { PodNetwork } from "./nodenet/pod_network.ts";
import type { Teardown } from "./teardown.ts";
import { aliasesOf } from "./nodenet/veth_name.ts";

export interface CniServiceDeps {
  ipam: NodeIpam;
  /** Calls for one container run one at a time; shared with the sweep, which tears down too. */
  queue: KeyedQueue;
  teardown: Teardown;
  /** The pod's veth and routes, in main-plugin mode. */
  podNetwork: PodNetwork;
  /**
   * Whether etcd answers (cached). STATUS needs it: the pool check alone is served from a cache that
   * outlives an etcd outage.
   */
  etcdHealth: () => Promise<EtcdHealth>;
  log: Logger;
}

/** Answers one request; never throws. */
export type CniService = (req: ApiRequest) => Promise<ApiReply>;

/** Builds the request handler of coild. */
export function createCniService(deps: CniServiceDeps): CniService {
  const { ipam, podNetwork, queue, teardown, log } = deps;

  async function add(req: AddRequest): Promise<ApiReply> {
    if (req.mode === "main") podNetwork.verifyNetns(req.netns, req.ifName);
    const earlier = ipam.find(req.network, req.containerId, req.ifName);
    const allocation = await allocateSettling(ipam, req);
    if (req.mode === "ipam") return { ok: true, result: ipamResult(allocation) };
    // A repeated ADD names the veth after the pod the first ADD saw, whatever CNI_ARGS it carries now.
    const pod = asRecorded(req, earlier);
    const intact = earlier && podNetwork.existing(pod, allocation);
    if (intact) return { ok: true, result: intact };
    try {
      return { ok: true, result: podNetwork.setup(pod, allocation, isStaleAlias) };
    } catch (err) {
      // Only what this call made is undone: an earlier ADD's allocation stays with its pod.
      if (!earlier) {
        await ipam.release(req.network, req.containerId, req.ifName).catch((releaseErr) =>
          log("error", "release after failed setup failed", {
            containerId: req.containerId,
            error: releaseErr,
          })
        );
      }
      throw err;
    }
  }

  /**
   * Whether a host veth tagged `alias` may be replaced by another attachment's ADD: no allocation holds
   * it, or the one that does has lost its netns (a sandbox whose DEL has not come yet).
   */
  function isStaleAlias(alias: string): boolean {
    const owner = ipam.allocations().find((a) => aliasesOf(a).includes(alias));
    return !owner || !netnsExists(owner.netns);
  }

  async function del(req: DelRequest): Promise<ApiReply> {
    const known = ipam.find(req.network, req.containerId, req.ifName);
    if (req.mode === "main") await teardown.now(asRecorded(req, known));
    else await ipam.release(req.network, req.containerId, req.ifName);
    return { ok: true };
  }

  function check(req: CheckRequest): ApiReply {
    const allocation = ipam.find(req.network, req.containerId, req.ifName);
    if (!allocation) {
      throw new DaemonError(
        CODE.unknownContainer,
        `No address is allocated to container "${req.containerId}" interface "${req.ifName}"`,
      );
    }
    const allocated = allocation.addresses.map((a) => formatIp(a.address));
    const listed = req.prevIps.map((cidr) => cidr.split("/")[0]);
    const differ = allocated.length !== listed.length || allocated.some((ip) => !listed.includes(ip));
    if (differ) {
      throw new DaemonError(
        CODE.checkFailed,
        `CHECK failed: prevResult lists ${listed.join(", ") || "no address"}, but the allocation is ${
          allocated.join(", ")
        }`,
      );
    }
    if (req.mode === "main") podNetwork.check(asRecorded(req, allocation), allocation);
    return { ok: true };
  }

  /** GC: every allocation of the network that the runtime does not list goes, pod network first. */
  async function gc(req: GcRequest): Promise<ApiReply> {
    const kept = new Set(req.validAttachments.map((a) => `${a.containerId}\n${a.ifName}`));
    const victims = ipam.allocations().filter((a) =>
      a.network === req.network && !kept.has(`${a.containerId}\n${a.ifName}`)
    );
    const results = await Promise.allSettled(victims.map(async (a) => {
      if (await teardown.expire(a)) {
        log("info", "released", { reason: "gc: not a valid attachment", ...describe(a) });
      }
    }));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    return { ok: true };
  }

  async function dispatch(req: ApiRequest): Promise<ApiReply> {
    switch (req.verb) {
      case "add":
        return await add(req);
      case "del":
        return await del(req);
      case "check":
        return check(req);
      case "gc":
        return await gc(req);
      case "status": {
        const etcd = await deps.etcdHealth();
        if (!etcd.ok) throw new DaemonError(CODE.statusUnavailable, etcd.reason ?? "etcd is unreachable");
        if (etcd.alarm) throw new DaemonError(CODE.statusUnavailable, etcd.alarm);
        const status = await ipam.canServeAny();
        if (!status.ok) {
          throw new DaemonError(CODE.statusUnavailable, status.reason ?? "coild cannot serve ADD");
        }
        return { ok: true };
      }
    }
  }

  return async (req) => {
    const started = performance.now();
    let reply: ApiReply;
    try {
      reply = "containerId" in req
        ? await queue.run(req.containerId, () => dispatch(req))
        : await dispatch(req);
    } catch (err) {
      reply = errorReply(err);
    }
    const fields: Record<string, unknown> = {
      verb: req.verb,
      ...("containerId" in req ? describe(req) : { network: req.network }),
      result: reply.ok ? "ok" : "error",
      durationMs: Math.round((performance.now() - started) * 100) / 100,
    };
    if (!reply.ok) Object.assign(fields, { code: reply.code, error: reply.msg });
    else if (reply.result) fields.ips = reply.result.ips.map((ip) => ip.address);
    log(reply.ok ? "info" : "warn", "request", fields);
    return reply;
  };
}

/**
 * ipam.allocate(), tried once more when it failed with a write in doubt: the second call settles that
 * write first (a fence makes a late copy fail, and what etcd holds is adopted or freed), so an etcd
 * member that stalls costs the ADD time rather than an 11; etcd_client.ts does not re-send the write.
 */
async function allocateSettling(ipam: NodeIpam, req: AddRequest): Promise<Allocation> {
  try {
    return await ipam.allocate(req);
  } catch (err) {
    if (!isIpamError(err, "unavailable") || !ipam.writesInDoubt()) throw err;
    return await ipam.allocate(req);
  }
}

/** The request with the pod identity that the attachment's ADD recorded, when there is one. */
function asRecorded<T extends Attachment>(req: T, recorded: Allocation | undefined): T {
  return recorded ? { ...req, podNamespace: recorded.podNamespace, podName: recorded.podName } : req;
}

/** Whether a netns path exists; only "not found" counts as gone (lstat does not open, so never blocks). */
function netnsExists(path: string): boolean {
  if (!path) return false;
  try {
    Deno.lstatSync(path);
    return true;
  } catch (err) {
    return !(err instanceof Deno.errors.NotFound);
  }
}

function describe(a: Attachment | Allocation) {
  return {
    containerId: a.containerId,
    ifName: a.ifName,
    pod: a.podName ? `${a.podNamespace}/${a.podName}` : undefined,
  };
}
