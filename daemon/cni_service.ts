// What coild does for each CNI verb: allocate then set up (undoing the allocation when setup fails),
// destroy then release, and so on. No node-wide lock: only calls for the same container are queued.

import type {
  AddRequest,
  AddResult,
  ApiReply,
  ApiRequest,
  Attachment,
  CheckRequest,
  DelRequest,
} from "../cni/api.ts";
import { formatIp } from "../ipam/cidr.ts";
import type { Allocation, NodeIpam } from "../ipam/node_ipam.ts";
import { CODE, DaemonError, errorReply } from "./errors.ts";
import type { EtcdHealth } from "./etcd_health.ts";
import { KeyedQueue } from "./keyed_queue.ts";
import type { Logger } from "./log.ts";
import type { PodNetwork } from "./pod_network.ts";

export interface CniServiceDeps {
  ipam: NodeIpam;
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
  const queue = new KeyedQueue();
  const { ipam, podNetwork, log } = deps;

  async function add(req: AddRequest): Promise<ApiReply> {
    if (req.mode === "main") podNetwork.verifyNetns(req.netns);
    const allocation = await ipam.allocate(req);
    if (req.mode === "ipam") return { ok: true, result: ipamResult(allocation) };
    try {
      return { ok: true, result: podNetwork.setup(req, allocation) };
    } catch (err) {
      await ipam.release(req.network, req.containerId, req.ifName).catch((releaseErr) =>
        log("error", "release after failed setup failed", { containerId: req.containerId, error: releaseErr })
      );
      throw err;
    }
  }

  async function del(req: DelRequest): Promise<ApiReply> {
    if (req.mode === "main") {
      // The veth name derives from the pod's name, which a DEL may lack (a runtime that lost its
      // state): the allocation remembers the identity that ADD saw.
      const known = ipam.find(req.network, req.containerId, req.ifName);
      await podNetwork.destroy(
        known ? { ...req, podNamespace: known.podNamespace, podName: known.podName } : req,
      );
    }
    await ipam.release(req.network, req.containerId, req.ifName);
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
    if (req.mode === "main") podNetwork.check(req, allocation);
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
      case "gc": {
        const released = await ipam.gc(req.network, req.validAttachments);
        for (const a of released) {
          try {
            await podNetwork.destroy(a);
          } catch (err) {
            log("warn", "gc: removing the pod network failed", { ...describe(a), error: err });
          }
          log("info", "released", { reason: "gc: not a valid attachment", ...describe(a) });
        }
        return { ok: true };
      }
      case "status": {
        const etcd = await deps.etcdHealth();
        if (!etcd.ok) throw new DaemonError(CODE.statusUnavailable, etcd.reason ?? "etcd is unreachable");
        const status = await ipam.canServe("");
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

function describe(a: Attachment | Allocation) {
  return {
    containerId: a.containerId,
    ifName: a.ifName,
    pod: a.podName ? `${a.podNamespace}/${a.podName}` : undefined,
  };
}

/**
 * IPAM-mode result. The address carries its block's prefix and the block's first address as gateway:
 * the calling plugin (e.g. ptp) installs its default route through ConfigureIface before it adds its
 * own on-link route, so the gateway must be on-link through the address's prefix. The allocator never
 * hands out a block's first address, so the gateway is nobody's pod address.
 */
function ipamResult(allocation: Allocation): AddResult {
  return {
    interfaces: [],
    ips: allocation.addresses.map((a) => ({
      address: `${formatIp(a.address)}/${a.block.prefix}`,
      gateway: formatIp({ family: a.family, value: a.block.base }),
    })),
    routes: allocation.addresses.map((a) => ({ dst: a.family === 4 ? "0.0.0.0/0" : "::/0" })),
  };
}
