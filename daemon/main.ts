// coild: wires IPAM (etcd), the kernel (netlink) and the CNI API together, in the start-up order that
// makes a restart safe: refusals first (a socket path or node name another coild holds, another node
// name's pods on this host) while nothing has changed; then state from etcd; then the kernel repaired to
// match; only then the socket, and READY=1 for systemd.

import { CommanderError } from "commander";
import { contains, formatCidr } from "../ipam/cidr.ts";
import { connectEtcd, waitForEtcd } from "../ipam/etcd_client.ts";
import { createEtcdStore } from "../ipam/etcd_store.ts";
import { IpamError } from "../ipam/errors.ts";
import { keysFor } from "../ipam/keys.ts";
import { createNodeIpam, type NodeIpam } from "../ipam/node_ipam.ts";
import { ensureSchema, SchemaError } from "../ipam/schema.ts";
import { routeDump } from "../netlink/route.ts";
import { NetlinkSocket } from "../netlink/socket.ts";
import pkg from "../package.json" with { type: "json" };
import { parseApiRequest } from "./api_request.ts";
import { createCniService } from "./cni_service.ts";
import { daemonCommand, type DaemonConfig } from "./config.ts";
import { errorReply } from "./errors.ts";
import { createEtcdHealth } from "./etcd_health.ts";
import { findForeignPods, foreignPodsMessage } from "./foreign_pods.ts";
import { enableForwarding } from "./nodenet/forwarding.ts";
import { isLoopback, serveHttp } from "./http_server.ts";
import { KeyedQueue } from "./keyed_queue.ts";
import { LinkDeleter } from "./nodenet/link_deleter.ts";
import { createLogger, type Logger } from "./log.ts";
import { createCoilMetrics, instrumentCniService } from "./metrics.ts";
import { acquireNodeIdentity, NodeNameTakenError } from "./node_identity.ts";
import { createPodNetwork, type PodNetwork } from "./nodenet/pod_network.ts";
import { allOf, etcdServes, type ReadinessCheck, socketAccepts } from "./readiness.ts";
import { reconcilePodNetworks } from "./nodenet/reconcile.ts";
import { createRouteExporter, type RouteExporter, type SyncReport } from "./nodenet/route_exporter.ts";
import { checkSocketPath, serveSocket, SocketPathError } from "./socket_server.ts";
import { startSweeper } from "./sweeper.ts";
import { startWatchdog, systemdNotifier, watchdogSchedule } from "./systemd_notify.ts";
import { createTeardown, type Teardown } from "./teardown.ts";

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

/** A reason to refuse to start, found before coild changed anything. */
class StartRefused extends Error {}

/** Runs coild; 0 after a clean stop, 1 when it refused to start, failed or lost its node name. */
async function serve(config: DaemonConfig): Promise<number> {
  const log = createLogger({ verbose: config.verbose });
  const stop = shutdownSignal();
  try {
    return await run(config, log, stop);
  } catch (err) {
    if (stop.signal.aborted && !(err instanceof StartRefused)) return 0;
    const refused = err instanceof StartRefused || err instanceof SocketPathError ||
      err instanceof NodeNameTakenError;
    log("error", refused ? "refusing to start" : "coild failed", {
      error: refused ? (err as Error).message : err,
    });
    return 1;
  } finally {
    stop.dispose();
  }
}

async function run(config: DaemonConfig, log: Logger, stop: ShutdownSignal): Promise<number> {
  // Undone in reverse order however run() ends: a failed start releases its lease and its socket too.
  await using cleanup = new AsyncDisposableStack();
  let fenced = false;
  // Set once the pods can be torn down; the node name is acquired before that.
  const hooks: { afterLeaseLoss?: () => Promise<void> } = {};
  log("info", "starting", { node: config.nodeName, socket: config.socket, etcd: config.etcd.endpoints });
  await checkSocketPath(config.socket);
  const metrics = createCoilMetrics(
    { version: pkg.version },
    (metric, err) => log("warn", "metric source failed", { metric, error: err }),
  );
  // /healthz answers from the start; /readyz says why not until the socket is open.
  let ready: ReadinessCheck = () => Promise.resolve({ ok: false, reason: "coild is starting" });
  if (config.metricsAddress) {
    if (!isLoopback(config.metricsAddress)) {
      log("warn", "serving metrics beyond loopback: anyone who reaches it sees this node's pods and blocks", {
        address: `${config.metricsAddress.hostname}:${config.metricsAddress.port}`,
      });
    }
    const http = serveHttp({ address: config.metricsAddress, metrics: metrics.render, ready: () => ready() });
    cleanup.defer(() => http.close());
  }
  // A TLS or password file that cannot be used is the operator's to fix before anything starts.
  const client = await connectEtcd({ ...config.etcd, onCall: metrics.etcdRequest }).catch((err) => {
    throw err instanceof IpamError && err.kind === "invalid" ? new StartRefused(err.message) : err;
  });
  cleanup.defer(() => client.close());
  const probeKey = keysFor(config.etcd.prefix).node(config.nodeName);
  const etcdHealth = createEtcdHealth({ client, probeKey });
  const notifier = systemdNotifier(log);
  let status = () => "waiting for etcd";
  if (notifier) {
    const watchdog = startWatchdog({
      notifier,
      ...watchdogSchedule(),
      etcdHealth,
      status: () => status(),
      log,
    });
    cleanup.defer(() => watchdog.close());
  }
  if (!await waitUntilEtcdAnswers(client, probeKey, log, stop.promise)) return 0;
  // The data in the schema this coild writes before it is read: older upgraded in place, newer refused.
  const schema = await ensureSchema(client, config.etcd.prefix).catch((err) => {
    throw err instanceof SchemaError ? new StartRefused(err.message) : err;
  });
  if (schema.upgradedFrom) {
    log("info", "etcd data upgraded", { schema: schema.version, from: schema.upgradedFrom });
  }

  // 1. State from etcd: this node's blocks and every address in them.
  const host = cleanup.use(new NetlinkSocket());
  const exporter = createRouteExporter({
    sock: host,
    table: config.exportTableId,
    protocol: config.protocolId,
  });
  cleanup.defer(() => {
    if (!config.clearRoutesOnShutdown || !stop.signal.aborted || fenced) return;
    const report = exporter.sync([]);
    log("info", "export table cleared", { table: config.exportTableId, removed: report.removed });
  });
  const ipam = await createNodeIpam({
    store: createEtcdStore(client, config.etcd.prefix),
    node: config.nodeName,
    log: (event) => {
      metrics.ipamEvent(event);
      log("info", String(event.event ?? "ipam"), event);
    },
  });
  cleanup.defer(() => ipam.close());
  const deleter = new LinkDeleter({
    onError: (link, err) => log("warn", "deleting a detached host veth failed", { link, error: err }),
  });
  cleanup.defer(() => deleter.close());
  const podNetwork = createPodNetwork({
    host,
    defaultHostRouteTable: config.podTableId,
    protocol: config.protocolId,
    deleter,
  });
  const foreign = await findForeignPods({
    host,
    podNetwork,
    allocations: ipam.allocations(),
    client,
    prefix: config.etcd.prefix,
    node: config.nodeName,
    protocol: config.protocolId,
  });
  if (foreign.length > 0) throw new StartRefused(foreignPodsMessage(config.nodeName, foreign));

  // The node name, held by this process alone (two coilds with one name hand out the same addresses).
  status = () => "acquiring the node name";
  const identity = await acquireNodeIdentity({
    client,
    prefix: config.etcd.prefix,
    node: config.nodeName,
    ttlSeconds: config.nodeLeaseTtlSeconds,
    deadAfterSeconds: config.nodeDeadAfterSeconds,
    version: pkg.version,
    log,
    signal: stop.signal,
    onReacquired: () => hooks.afterLeaseLoss?.(),
    onFenced: (message) => {
      log("error", "another coild holds this node name now; stopping", { error: message });
      fenced = true;
      stop.trigger();
    },
  });
  cleanup.use(identity);

  // 2. The kernel brought in line: forwarding, table 119, then pod veths and host routes.
  enableForwarding(log);
  const exportBlocks = () => metrics.exportSync(syncExport(exporter, ipam, log));
  ipam.onBlocksChanged(exportBlocks);
  exportBlocks();
  recoverPodNetworks(host, podNetwork, ipam, config, log);

  // 3. Garbage collection: a first sweep (empty blocks; vanished netns are noted), then periodic ones.
  const queue = new KeyedQueue();
  const teardown = createTeardown({ ipam, podNetwork, queue });
  hooks.afterLeaseLoss = () => disconnectLostBlocks(ipam, teardown, log);
  const sweeper = startSweeper({
    ipam,
    teardown,
    syncExport: exportBlocks,
    intervalSeconds: config.sweepIntervalSeconds,
    graceSeconds: config.sweepGraceSeconds,
    log,
    onReport: metrics.sweep,
  });
  cleanup.defer(() => sweeper.close());
  if (config.sweepIntervalSeconds > 0) await sweeper.sweep();

  // 4. Only now the socket: no request can see a half-recovered node.
  const service = instrumentCniService(
    createCniService({ ipam, podNetwork, queue, teardown, etcdHealth, log }),
    metrics,
  );
  const server = await serveSocket(config.socket, async (line) => {
    try {
      return await service(parseApiRequest(line));
    } catch (err) {
      return errorReply(err);
    }
  });
  cleanup.defer(() => server.close());
  metrics.attach({
    ipam,
    pods: () => podNetwork.hostLinks().size,
    // The table is Coil's alone (route_exporter.ts), so every route in it counts.
    exportedRoutes: () =>
      ([4, 6] as const).reduce(
        (n, family) => n + routeDump(host, { family, table: config.exportTableId }).length,
        0,
      ),
  });
  ready = allOf([etcdServes(etcdHealth), () => ipam.canServeAny(), socketAccepts(config.socket)]);
  status = () => `${podNetwork.hostLinks().size} pods, ${ipam.ownedBlocks().length} blocks`;
  notifier?.notify({ READY: "1", STATUS: status() });
  log("info", "ready", { blocks: ipam.ownedBlocks().length, allocations: ipam.allocations().length });
  await stop.promise;
  notifier?.notify({ STOPPING: "1", STATUS: "stopping" });
  log("info", "stopping");
  return fenced ? 1 : 0;
}

/**
 * After the node's lease was lost and won back (a pause or partition longer than its TTL), re-reads the
 * blocks: one taken meanwhile (`coil node remove --force`) may already serve another node's pods, so the
 * pods still holding its addresses are disconnected rather than left to share them.
 */
async function disconnectLostBlocks(ipam: NodeIpam, teardown: Teardown, log: Logger): Promise<void> {
  const lost = await ipam.refreshBlocks();
  if (lost.length === 0) return;
  const victims = ipam.allocations().filter((a) =>
    a.addresses.some((x) => lost.some((block) => contains(block, x.address)))
  );
  log("error", "blocks of this node were released while it was away; disconnecting their pods", {
    blocks: lost.map(formatCidr),
    pods: victims.map((a) => a.podName ? `${a.podNamespace}/${a.podName}` : a.containerId),
  });
  for (const allocation of victims) {
    await teardown.expire(allocation).catch((err) =>
      log("error", "disconnecting a pod of a lost block failed", {
        containerId: allocation.containerId,
        error: err,
      })
    );
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

function syncExport(exporter: RouteExporter, ipam: NodeIpam, log: Logger): SyncReport | undefined {
  try {
    const report = exporter.sync(ipam.ownedBlocks().map((b) => b.block), ipam.poolSubnets());
    if (report.added || report.removed) log("info", "export table synced", { ...report });
    return report;
  } catch (err) {
    log("error", "export table sync failed", { error: err });
    return undefined;
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

interface ShutdownSignal {
  promise: Promise<void>;
  /** Aborted on SIGTERM, SIGINT or trigger(). */
  signal: AbortSignal;
  /** Stops coild as SIGTERM does. */
  trigger(): void;
  dispose(): void;
}

function shutdownSignal(): ShutdownSignal {
  const { promise, resolve } = Promise.withResolvers<void>();
  const controller = new AbortController();
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  const handler = () => {
    controller.abort(new Error("coild is stopping"));
    resolve();
  };
  for (const s of signals) Deno.addSignalListener(s, handler);
  return {
    promise,
    signal: controller.signal,
    trigger: handler,
    dispose: () => signals.forEach((s) => Deno.removeSignalListener(s, handler)),
  };
}
