// The lab's layout as plain data: namespace names, links, addresses, AS numbers and file paths, all
// derived from the options, so `up`, `status`, `ping`, `down` and the tests agree without a registry.

/** What `scripts/lab up` was asked for. */
export interface LabOptions {
  /** "default" gives namespaces `coil-lab-*`; another name gives `coil-lab-<name>-*`. */
  name: string;
  nodes: number;
  /** Pods per node. */
  pods: number;
  dualStack: boolean;
  /** False: `--no-coil`, static block routes and pods stand in for coild. */
  coil: boolean;
}

export interface LinkPlan {
  /** Interface names on each side. */
  nodeIf: string;
  peerIf: string;
  /** Node side and router side addresses, without prefix length. */
  node4: string;
  router4: string;
  prefix4: number;
  node6: string;
  router6: string;
  prefix6: number;
}

export interface NodePlan {
  index: number;
  /** Kubernetes node name, e.g. `node1`. */
  name: string;
  netns: string;
  asn: number;
  uplink: LinkPlan;
  /** The node's address on the management bridge. */
  mgmtAddress: string;
  dir: string;
  birdConfig: string;
  birdSocket: string;
  birdLog: string;
  birdPid: string;
  coildSocket: string;
  coildLog: string;
  coildPid: string;
  /** The blocks `--no-coil` writes into table 119. */
  staticBlocks: string[];
}

export interface PodPlan {
  /** Kubernetes pod name. */
  name: string;
  namespace: string;
  node: string;
  /** Pod number on its node, from 1. */
  index: number;
  netns: string;
  containerId: string;
}

export interface LabPlan {
  options: LabOptions;
  /** Prefix of every namespace of this lab, e.g. `coil-lab-` or `coil-lab-t1a2b3-`. */
  prefix: string;
  stateDir: string;
  /** The lab's record of what `up` made (pods and their addresses). */
  stateFile: string;
  router: {
    netns: string;
    asn: number;
    routerId: string;
    dir: string;
    birdConfig: string;
    birdSocket: string;
    birdLog: string;
    birdPid: string;
  };
  mgmt: {
    netns: string;
    bridge: string;
    address: string;
    prefix: number;
    etcdEndpoint: string;
    etcdDir: string;
    etcdLog: string;
    etcdPid: string;
  };
  nodes: NodePlan[];
  pods: PodPlan[];
  pools: PoolPlan[];
}

export interface PoolPlan {
  name: string;
  subnets: string[];
  blockSizeBits: number;
}

export const DEFAULT_LAB_NAME = "default";
export const NETNS_PREFIX = "coil-lab-";
export {
  DEFAULT_EXPORT_TABLE as EXPORT_TABLE_ID,
  DEFAULT_PROTOCOL as PROTOCOL_ID,
} from "../../daemon/nodenet/constants.ts";
export const ROUTER_ASN = 64600;
export const MAX_NODES = 200;
export const MAX_PODS = 30;
/** Where state lives unless COIL_LAB_STATE_DIR says otherwise: short, so socket paths fit 108 bytes. */
export const DEFAULT_STATE_ROOT = "/run/coil-lab";

const NAME_REGEXP = /^[a-z][a-z0-9]{0,11}$/;

/** The namespace prefix of a lab name. Throws on a name that is not 1-12 lowercase letters/digits. */
export function labPrefix(name: string): string {
  if (!NAME_REGEXP.test(name)) {
    throw new Error(
      `Lab name "${name}" is invalid: use 1-12 lowercase letters and digits, starting with a letter`,
    );
  }
  return name === DEFAULT_LAB_NAME ? NETNS_PREFIX : `${NETNS_PREFIX}${name}-`;
}

/**
 * Matches exactly the namespaces a lab may have made, so `down` of one lab never touches another
 * (the default lab's `coil-lab-` is a prefix of every named lab's namespaces).
 */
export function labNetnsPattern(name: string): RegExp {
  const prefix = labPrefix(name).replaceAll("-", "\\-");
  return new RegExp(`^${prefix}(tor|mgmt|node[0-9]+|pod-node[0-9]+-[0-9]+)$`);
}

/** The state directory of a lab. */
export function labStateDir(name: string, stateRoot = defaultStateRoot()): string {
  labPrefix(name);
  return `${stateRoot}/${name}`;
}

/** COIL_LAB_STATE_DIR, else /run/coil-lab. */
export function defaultStateRoot(): string {
  return Deno.env.get("COIL_LAB_STATE_DIR") ?? DEFAULT_STATE_ROOT;
}

/** The whole layout for `options`. Throws on out-of-range counts or a bad name. */
export function planLab(options: LabOptions, stateRoot = defaultStateRoot()): LabPlan {
  const prefix = labPrefix(options.name);
  if (!Number.isInteger(options.nodes) || options.nodes < 1 || options.nodes > MAX_NODES) {
    throw new Error(`Node count ${options.nodes} is invalid: use 1-${MAX_NODES}`);
  }
  if (!Number.isInteger(options.pods) || options.pods < 0 || options.pods > MAX_PODS) {
    throw new Error(`Pod count ${options.pods} is invalid: use 0-${MAX_PODS}`);
  }
  const stateDir = labStateDir(options.name, stateRoot);
  const nodes = Array.from({ length: options.nodes }, (_, i) => planNode(prefix, stateDir, i + 1, options));
  const pods = nodes.flatMap((node) =>
    Array.from({ length: options.pods }, (_, k) => planPod({ prefix, options }, node.name, k + 1))
  );
  const routerDir = `${stateDir}/tor`;
  const mgmtDir = `${stateDir}/mgmt`;
  const pools: PoolPlan[] = [
    {
      name: "default",
      subnets: options.dualStack ? ["10.100.0.0/16", "fd00:100::/48"] : ["10.100.0.0/16"],
      blockSizeBits: 5,
    },
    { name: "dmz", subnets: ["10.200.0.0/24"], blockSizeBits: 5 },
  ];
  return {
    options,
    prefix,
    stateDir,
    stateFile: `${stateDir}/lab.json`,
    router: {
      netns: `${prefix}tor`,
      asn: ROUTER_ASN,
      routerId: "10.255.0.1",
      dir: routerDir,
      birdConfig: `${routerDir}/bird.conf`,
      birdSocket: `${routerDir}/bird.ctl`,
      birdLog: `${routerDir}/bird.log`,
      birdPid: `${routerDir}/bird.pid`,
    },
    mgmt: {
      netns: `${prefix}mgmt`,
      bridge: "br0",
      address: "10.254.0.1",
      prefix: 24,
      etcdEndpoint: "http://10.254.0.1:2379",
      etcdDir: `${mgmtDir}/etcd`,
      etcdLog: `${mgmtDir}/etcd.log`,
      etcdPid: `${mgmtDir}/etcd.pid`,
    },
    nodes,
    pods,
    pools,
  };
}

// Node i: uplink 10.255.<i>.0/31 (router .0, node .1) and fd10:255:<i>::/64 (router ::1, node ::2);
// management 10.254.0.<10+i>/24. These ranges exist only inside the lab's namespaces.
function planNode(prefix: string, stateDir: string, index: number, options: LabOptions): NodePlan {
  const name = `node${index}`;
  const dir = `${stateDir}/${name}`;
  const hex = index.toString(16);
  const staticBlocks = [`10.100.${index}.0/27`];
  if (options.dualStack) staticBlocks.push(`fd00:100:0:${hex}::/123`);
  return {
    index,
    name,
    netns: `${prefix}${name}`,
    asn: ROUTER_ASN + index,
    uplink: {
      nodeIf: "tor0",
      peerIf: name,
      node4: `10.255.${index}.1`,
      router4: `10.255.${index}.0`,
      prefix4: 31,
      node6: `fd10:255:${hex}::2`,
      router6: `fd10:255:${hex}::1`,
      prefix6: 64,
    },
    mgmtAddress: `10.254.0.${10 + index}`,
    dir,
    birdConfig: `${dir}/bird.conf`,
    birdSocket: `${dir}/bird.ctl`,
    birdLog: `${dir}/bird.log`,
    birdPid: `${dir}/bird.pid`,
    coildSocket: `${dir}/coild.sock`,
    coildLog: `${dir}/coild.log`,
    coildPid: `${dir}/coild.pid`,
    staticBlocks,
  };
}

/**
 * Pod `index` of `node`. Without `namespace`, with coild every second pod lives in namespace `dmz`, so
 * both pools are used; static pods all take addresses from their node's one static block.
 */
export function planPod(
  plan: Pick<LabPlan, "prefix" | "options">,
  node: string,
  index: number,
  namespace = plan.options.coil && index % 2 === 0 ? "dmz" : "default",
): PodPlan {
  const name = `pod-${node}-${index}`;
  const id = `${plan.options.name}.${namespace}.${name}`;
  return {
    name,
    namespace,
    node,
    index,
    netns: `${plan.prefix}pod-${node}-${index}`,
    containerId: hexId(id),
  };
}

// A 64-hex-digit container ID, as runtimes use, derived from the pod so reruns repeat it.
function hexId(text: string): string {
  let out = "";
  let h = 0x811c9dc5;
  for (let round = 0; out.length < 64; round++) {
    for (const ch of `${round}:${text}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    out += h.toString(16).padStart(8, "0");
  }
  return out;
}
