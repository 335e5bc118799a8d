// Shared by the coild lifecycle tests: a node (netns + real coild + etcd prefix) that can be stopped,
// killed and started again with the same flags, pods in their own netns, and CNI calls as a runtime
// makes them.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { type Keys, keysFor } from "../../ipam/keys.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { type CniOutcome, runCni } from "../helpers/cni.ts";
import { startCoild, type TestCoild } from "../helpers/coild.ts";
import type { TestEtcd } from "../helpers/etcd.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";

export const NETWORK = "k8s-pod-network";

/** A node: its netns, a coild in it (replaced by restarts) and its etcd prefix. */
export interface TestNode extends AsyncDisposable {
  ns: TestNetns;
  readonly coild: TestCoild;
  prefix: string;
  keys: Keys;
  /** SIGTERM; asserts a clean exit. */
  stop(): Promise<void>;
  /** SIGKILL (a crash). */
  kill(): Promise<void>;
  /** A new coild with the same flags (plus `extraArgs`), once the previous one is gone. */
  start(extraArgs?: string[]): Promise<void>;
}

export interface NodeOptions {
  etcd: TestEtcd;
  client: Etcd3;
  /** Pool `default` with these subnets (none: no pool). */
  subnets?: string[];
  args?: string[];
  nodeName?: string;
  /** Runs in the node netns before coild starts, e.g. to add an uplink. */
  setup?: (ns: TestNetns) => Promise<void>;
}

/** Creates the node netns (lo up; coild itself turns forwarding on), the pool, and starts coild. */
export async function startNode(options: NodeOptions): Promise<TestNode> {
  const { etcd, client } = options;
  const prefix = etcd.newPrefix();
  if (options.subnets) {
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: options.subnets, blockSizeBits: 5 }),
    );
  }
  const ns = await createNetns();
  try {
    await ns.exec(["ip", "link", "set", "lo", "up"]);
    await options.setup?.(ns);
    const args = options.args ?? [];
    const run = (extra: string[] = []) =>
      startCoild({ etcd, prefix, node: ns, nodeName: options.nodeName, args: [...args, ...extra] });
    let coild = await run();
    let running = true;
    return {
      ns,
      get coild() {
        return coild;
      },
      prefix,
      keys: keysFor(prefix),
      async stop() {
        running = false;
        const status = await coild.stop();
        assert.equal(status.code, 0, `coild exited with ${status.code}:\n${coild.log()}`);
      },
      async kill() {
        running = false;
        await coild.kill();
      },
      async start(extraArgs = []) {
        coild = await run(extraArgs);
        running = true;
      },
      async [Symbol.asyncDispose]() {
        try {
          if (running) await coild.stop();
        } finally {
          await ns[Symbol.asyncDispose]();
        }
      },
    };
  } catch (err) {
    await ns[Symbol.asyncDispose]();
    throw err;
  }
}

/** A pod: its own netns and identity. */
export interface TestPod extends AsyncDisposable {
  ns: TestNetns;
  path: string;
  containerId: string;
  namespace: string;
  name: string;
  /** The last successful ADD's result: CHECK sends it as prevResult. */
  result?: Record<string, unknown>;
  /** Deletes the netns now (idempotent), as a runtime that crashed before DEL leaves it. */
  remove(): Promise<void>;
}

let podCounter = 0;

/** Creates a pod netns with lo up, a fresh container ID, and the given identity. */
export async function createPod(name = `pod-${podCounter++}`, namespace = "default"): Promise<TestPod> {
  const ns = await createNetns();
  let removed = false;
  const remove = async () => {
    if (removed) return;
    removed = true;
    await ns[Symbol.asyncDispose]();
  };
  try {
    // The runtime's loopback plugin does this in a real pod.
    await ns.exec(["ip", "link", "set", "lo", "up"]);
  } catch (err) {
    await remove();
    throw err;
  }
  return {
    ns,
    path: ns.path,
    containerId: `ctr-${crypto.randomUUID()}`,
    namespace,
    name,
    remove,
    [Symbol.asyncDispose]: remove,
  };
}

/** One CNI call for `pod` through the node's coild, as the node's runtime makes it (CHECK with prevResult). */
export function cni(
  node: TestNode,
  command: "ADD" | "DEL" | "CHECK" | "STATUS",
  pod?: TestPod,
  extra: Record<string, unknown> = {},
): Promise<CniOutcome> {
  return runCni({
    command,
    netconf: {
      cniVersion: "1.1.0",
      name: NETWORK,
      type: "coil",
      socket: node.coild.socket,
      ...(command === "CHECK" && pod?.result ? { prevResult: pod.result } : {}),
      ...extra,
    },
    ...(pod
      ? {
        containerId: pod.containerId,
        netns: pod.path,
        ifName: "eth0",
        args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name}`,
      }
      : {}),
    inNetns: node.ns.name,
  });
}

/** ADD that must succeed; returns the pod's addresses without prefix length (IPv4 first). */
export async function addPod(node: TestNode, pod: TestPod): Promise<string[]> {
  const out = await cni(node, "ADD", pod);
  assert.equal(out.code, 0, `ADD ${pod.name}: ${out.stdout}${out.stderr}\n${node.coild.log()}`);
  pod.result = out.json;
  const ips = (out.json as { ips: { address: string }[] }).ips;
  return ips.map((ip) => ip.address.split("/")[0]);
}

/** The address keys under the node's prefix: address → AddressRecord JSON. */
export async function addressKeys(client: Etcd3, node: TestNode): Promise<Map<string, string>> {
  const all = await client.getAll().prefix(node.keys.addresses()).strings();
  return new Map(Object.entries(all).map(([key, value]) => [key.slice(key.lastIndexOf("/") + 1), value]));
}

/**
 * Polls `check` until it returns true; a liveness guard (`limitMs`, far above the expected time on a
 * loaded 2-core machine), not a timing assertion. @throws naming `what`, with `context()` appended.
 */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean> | boolean,
  context: () => string = () => "",
  limitMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`Gave up waiting until ${what}\n${context()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Log lines of coild (JSON objects). */
export function logEntries(coild: TestCoild): Record<string, unknown>[] {
  return coild.log().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}
