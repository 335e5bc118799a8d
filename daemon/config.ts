// coild's command line: every flag also from a COIL_* variable (systemd units and DaemonSets set those),
// validated while parsing so that a typo is a usage error at start, not a failure at the first ADD.

import { Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_SOCKET } from "../cni/api.ts";
import type { EtcdOptions } from "../ipam/etcd_client.ts";
import { type ListenAddress, parseListenAddress } from "./http_server.ts";
import { addEtcdOptions, type EtcdFlagValues, etcdOptionsFrom } from "../ipam/admin/etcd_flags.ts";
import { DEFAULT_EXPORT_TABLE, DEFAULT_PROTOCOL } from "./nodenet/constants.ts";

export interface DaemonConfig {
  nodeName: string;
  socket: string;
  etcd: EtcdOptions;
  exportTableId: number;
  protocolId: number;
  /** 0: pod host routes go to the main table. */
  podTableId: number;
  /** How often to sweep for leaked allocations and empty blocks, in seconds; 0 disables. */
  sweepIntervalSeconds: number;
  /** A netns must be seen missing this long (and on two sweeps) before its allocation is released. */
  sweepGraceSeconds: number;
  /** TTL of the lease that keeps this node's liveness key: how long a crashed coild still looks alive. */
  nodeLeaseTtlSeconds: number;
  /**
   * TTL of the lease behind this node's fence key, which outlives clean stops: how long after coild's
   * last sign of life `coil node remove` still refuses the node without --force.
   */
  nodeDeadAfterSeconds: number;
  clearRoutesOnShutdown: boolean;
  /** `--metrics-address`: where /metrics, /healthz and /readyz are served; undefined: disabled. */
  metricsAddress?: ListenAddress;
  verbose: boolean;
}

function uint32(name: string, max = 0xffffffff) {
  return (text: string) => {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(text) || Number(text) > max) {
      throw new InvalidArgumentError(`${name} must be a whole number from 0 to ${max}, not "${text}"`);
    }
    return Number(text);
  };
}

function positive(name: string) {
  const parse = uint32(name);
  return (text: string) => {
    const n = parse(text);
    if (n === 0) throw new InvalidArgumentError(`${name} must be at least 1, not "${text}"`);
    return n;
  };
}

function table(text: string): number {
  const id = uint32("a table id")(text);
  if (id === 0 || (id >= 253 && id <= 255)) {
    throw new InvalidArgumentError(`table ${id} is reserved (0 unspec, 253 default, 254 main, 255 local)`);
  }
  return id;
}

/** The coild command, ready to parse; `action` runs with the validated configuration. */
export function daemonCommand(action: (config: DaemonConfig) => Promise<void>): Command {
  const env = (flags: string, description: string, variable: string) =>
    new Option(flags, description).env(variable);
  const command = new Command("coil daemon")
    .description(
      "Run coild, the Coil node daemon: serves the CNI plugin over a root-only UNIX socket, hands out pod " +
        "addresses from blocks this node claims in etcd, sets up pod veths and routes, and keeps the blocks " +
        "it owns in a kernel routing table for BIRD (or another routing daemon) to advertise.",
    )
    .addOption(
      env("--node-name <name>", "this node's name in etcd (default: the host name)", "COIL_NODE_NAME"),
    )
    .addOption(env("--socket <path>", "UNIX socket of the CNI API", "COIL_SOCKET").default(DEFAULT_SOCKET))
    .addOption(
      env(
        "--export-table-id <id>",
        "kernel table that holds the owned blocks, aggregated (fewest prefixes)",
        "COIL_EXPORT_TABLE_ID",
      )
        .argParser(table).default(DEFAULT_EXPORT_TABLE),
    )
    .addOption(
      env("--protocol-id <id>", "route protocol stamped on Coil's routes", "COIL_PROTOCOL_ID")
        .argParser(uint32("a protocol id", 255)).default(DEFAULT_PROTOCOL),
    )
    .addOption(
      env(
        "--pod-table-id <id>",
        "table for per-pod host routes, reached by an ip rule (default: main)",
        "COIL_POD_TABLE_ID",
      ).argParser(table),
    )
    .addOption(
      env(
        "--sweep-interval <seconds>",
        "period of the sweep that releases the addresses of pods whose netns is gone, releases empty " +
          "blocks and re-syncs the export table; 0 disables",
        "COIL_SWEEP_INTERVAL",
      )
        .argParser(uint32("the sweep interval")).default(60),
    )
    .addOption(
      env(
        "--sweep-grace <seconds>",
        "how long a pod netns must be gone before the sweep releases its addresses",
        "COIL_SWEEP_GRACE",
      ).argParser(uint32("the sweep grace")).default(60),
    )
    .addOption(
      env(
        "--node-lease-ttl <seconds>",
        "TTL of the etcd lease behind this node's liveness key (how long a crashed coild looks alive)",
        "COIL_NODE_LEASE_TTL",
      ).argParser(positive("the node lease TTL")).default(10),
    )
    .addOption(
      env(
        "--node-dead-after <seconds>",
        "how long after coild was last alive (running, paused or cut off from etcd) its node may be " +
          "removed without --force: far longer than any pause or restart",
        "COIL_NODE_DEAD_AFTER",
      ).argParser(positive("the node dead-after time")).default(600),
    )
    .addOption(
      env(
        "--clear-routes-on-shutdown",
        "empty the export table when coild stops (for decommissioning a node)",
        "COIL_CLEAR_ROUTES_ON_SHUTDOWN",
      ),
    )
    .addOption(
      env(
        "--metrics-address <host:port>",
        "where to serve /metrics, /healthz and /readyz (HTTP); empty disables",
        "COIL_METRICS_ADDRESS",
      )
        .argParser((text: string) => {
          try {
            return text === "" ? "" : parseListenAddress(text);
          } catch (err) {
            throw new InvalidArgumentError((err as Error).message);
          }
        })
        .default(parseListenAddress("127.0.0.1:9384"), "127.0.0.1:9384"),
    )
    .addOption(env("--verbose", "log debug events too", "COIL_VERBOSE"))
    .showHelpAfterError()
    .allowExcessArguments(false);
  addEtcdOptions(command);
  command.action(async (opts) => {
    const values = opts as EtcdFlagValues & Record<string, unknown>;
    let etcd: EtcdOptions;
    try {
      etcd = etcdOptionsFrom(values);
    } catch (err) {
      command.error(`error: ${(err as Error).message}`, { exitCode: 2 });
    }
    await action({
      nodeName: (values.nodeName as string | undefined) || Deno.hostname(),
      socket: values.socket as string,
      etcd: etcd!,
      exportTableId: values.exportTableId as number,
      protocolId: values.protocolId as number,
      podTableId: (values.podTableId as number | undefined) ?? 0,
      sweepIntervalSeconds: values.sweepInterval as number,
      sweepGraceSeconds: values.sweepGrace as number,
      nodeLeaseTtlSeconds: values.nodeLeaseTtl as number,
      nodeDeadAfterSeconds: values.nodeDeadAfter as number,
      clearRoutesOnShutdown: Boolean(values.clearRoutesOnShutdown),
      metricsAddress: (values.metricsAddress as ListenAddress | "") || undefined,
      verbose: Boolean(values.verbose),
    });
  });
  return command;
}
