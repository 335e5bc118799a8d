// coild: wires IPAM (etcd), the kernel (netlink) and the CNI API together, in the start-up order that
// makes a restart safe: state from etcd first, then the kernel repaired to match, only then the socket.

import { CommanderError } from "commander";
import { connectEtcd, waitForEtcd } from "../ipam/etcd_client.ts";
import { keysFor } from "../ipam/keys.ts";
import { createNodeIpam, type NodeIpam } from "../ipam/node_ipam.ts";
import { NetlinkSocket } from "../netlink/socket.ts";
import pkg from "../package.json" with { type: "json" };
import { parseApiRequest } from "./api_request.ts";
import { createCniService } from "./cni_service.ts";
import { daemonCommand, type DaemonConfig } from "./config.ts";
import { errorReply } from "./errors.ts";
import { createEtcdHealth } from "./etcd_health.ts";
import { enableForwarding } from "./forwarding.ts";
import { NodeLiveness } from "./liveness.ts";
import { LinkDeleter } from "./link_deleter.ts";
import { createLogger, type Logger } from "./log.ts";
import { createPodNetwork, type PodNetwork } from "./pod_network.ts";
import { reconcilePodNetworks } from "./reconcile.ts";
import { createRouteExporter, type RouteExporter } from "./route_exporter.ts";
import { serveSocket } from "./socket_server.ts";
import { startSweeper } from "./sweeper.ts";

/** Runs coild until SIGTERM or SIGINT; returns the exit code. */
export async function runDaemon(args: string[]): Promise<number> {
  let exitCode = 0;
  const command = daemonCommand(async (config) => {
    exitCode = await serve(config);
  }).exitOverride();
  try {
    await command.parseAsync(args, { from: "user" });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    throw err;
  }
  return exitCode;
}

async function serve(config: DaemonConfig): Promise<number> {
  const log = createLogger({ verbose: config.verbose });
  const stop = shutdownSignal();
  log("info", "starting", { node: config.nodeName, socket: config.socket, etcd: config.etcd.endpoints });
  const client = await connectEtcd(config.etcd);
  try {
    const probeKey = keysFor(config.etcd.prefix).node(config.nodeName);
    if (!await waitUntilEtcdAnswers(client, probeKey, log, stop.promise)) return 0;
    // 1. State from etcd: this node's blocks and every address in them.
    const ipam = await createNodeIpam({
      client,
      prefix: config.etcd.prefix,
      node: config.nodeName,
      log: (event) => log("info", String(event.event ?? "ipam"), event),
    });
    enableForwarding(log);
    using host = new NetlinkSocket();
    // 2. The kernel brought in line: table 119, then pod veths and host routes.
    const exporter = createRouteExporter({
      sock: host,
      table: config.exportTableId,
      protocol: config.protocolId,
    });
    const exportBlocks = () => syncExport(exporter, ipam, log);
    ipam.onBlocksChanged(exportBlocks);
    exportBlocks();
    const deleter = new LinkDeleter();
    const podNetwork = createPodNetwork({
      host,
      defaultHostRouteTable: config.podTableId,
      protocol: config.protocolId,
      deleter,
    });
    recoverPodNetworks(host, podNetwork, ipam, config, log);
    // 3. Garbage collection: a first sweep (empty blocks; vanished netns are noted), then periodic ones.
    const sweeper = startSweeper({
      ipam,
      podNetwork,
      syncExport: exportBlocks,
      intervalSeconds: config.sweepIntervalSeconds,
      graceSeconds: config.sweepGraceSeconds,
      log,
    });
    if (config.sweepIntervalSeconds > 0) await sweeper.sweep();
    const liveness = new NodeLiveness({
      client,
      prefix: config.etcd.prefix,
      node: config.nodeName,
      ttlSeconds: config.nodeLeaseTtlSeconds,
      version: pkg.version,
      log,
    });
    // 4. Only now the socket: no request can see a half-recovered node.
    const etcdHealth = createEtcdHealth({
      client,
      probeKey,
    });
    const service = createCniService({ ipam, podNetwork, etcdHealth, log });
    const server = await serveSocket(config.socket, async (line) => {
      try {
        return await service(parseApiRequest(line));
      } catch (err) {
        return errorReply(err);
      }
    });
    log("info", "ready", { blocks: ipam.ownedBlocks().length, allocations: ipam.allocations().length });
    await stop.promise;
    log("info", "stopping");
    await sweeper.close();
    await server.close();
    deleter.close();
    await liveness.close();
    await ipam.close();
    if (config.clearRoutesOnShutdown) {
      const report = exporter.sync([]);
      log("info", "export table cleared", { table: config.exportTableId, removed: report.removed });
    }
    return 0;
  } finally {
    stop.dispose();
    client.close();
  }
}

/** Repairs host routes of known pods and removes stale tagged veths; a failure is logged, not fatal. */
function recoverPodNetworks(
  host: NetlinkSocket,
  podNetwork: PodNetwork,
  ipam: NodeIpam,
  config: DaemonConfig,
  log: Logger,
): void {
  try {
    const report = reconcilePodNetworks({
      host,
      podNetwork,
      allocations: ipam.allocations(),
      podTableId: config.podTableId,
      protocol: config.protocolId,
      log,
    });
    log("info", "pod networks recovered", { ...report });
  } catch (err) {
    log("error", "recovering pod networks failed", { error: err });
  }
}

function syncExport(exporter: RouteExporter, ipam: NodeIpam, log: Logger): void {
  try {
    const report = exporter.sync(ipam.ownedBlocks().map((b) => b.block));
    if (report.added || report.removed) log("info", "export table synced", { ...report });
  } catch (err) {
    log("error", "export table sync failed", { error: err });
  }
}

/** Waits for etcd, logging every failed attempt; false when told to stop first. */
async function waitUntilEtcdAnswers(
  client: Parameters<typeof waitForEtcd>[0],
  probeKey: string,
  log: Logger,
  stopped: Promise<void>,
): Promise<boolean> {
  let stop = false;
  stopped.then(() => stop = true);
  while (!stop) {
    try {
      await waitForEtcd(client, probeKey, 5000);
      return true;
    } catch (err) {
      log("warn", "waiting for etcd", { error: err });
    }
  }
  return false;
}

function shutdownSignal() {
  const { promise, resolve } = Promise.withResolvers<void>();
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  const handler = () => resolve();
  for (const s of signals) Deno.addSignalListener(s, handler);
  return {
    promise,
    dispose: () => signals.forEach((s) => Deno.removeSignalListener(s, handler)),
  };
}
