// The JSON values stored under the keys of keys.ts, validated once when read back from etcd so that a
// corrupt or foreign value is reported by key instead of crashing a later step.

import { IpamError } from "./errors.ts";

/** Value of a block key: who owns the block. */
export interface BlockRecord {
  node: string;
  pool: string;
  /** RFC 3339. */
  claimedAt: string;
}

/** Value of an address key: which attachment holds the address. */
export interface AddressRecord {
  network: string;
  containerId: string;
  ifName: string;
  podNamespace: string;
  podName: string;
  podUid: string;
  netns: string;
  node: string;
  pool: string;
  /** RFC 3339. */
  createdAt: string;
}

/** The coild process that holds a node name: enough to tell a crashed predecessor from another host. */
export interface NodeHolder {
  host: string;
  /** /proc/sys/kernel/random/boot_id of the holder's machine. */
  bootId: string;
  /** The holder's network namespace, e.g. `net:[4026531840]`: nodes of a lab share a boot. */
  netns: string;
  /** The holder's PID namespace: its pid means something only there. */
  pidns: string;
  pid: number;
  /** Start time in clock ticks after boot (/proc/PID/stat): tells a reused pid from the holder. */
  startTicks: string;
  /** The liveness lease's ID, in decimal. */
  leaseId: string;
}

/**
 * Value of a node key (on the node's liveness lease: coild runs) and of its fence key (on the long
 * lease: coild ran recently). `holder` is absent in records written before node names were fenced.
 */
export interface NodeRecord {
  node: string;
  startedAt: string;
  version: string;
  holder?: NodeHolder;
}

const BLOCK_FIELDS = ["node", "pool", "claimedAt"] as const;
const ADDRESS_FIELDS = [
  "network",
  "containerId",
  "ifName",
  "podNamespace",
  "podName",
  "podUid",
  "netns",
  "node",
  "pool",
  "createdAt",
] as const;
const NODE_FIELDS = ["node", "startedAt", "version"] as const;
const HOLDER_FIELDS = ["host", "bootId", "netns", "pidns", "startTicks", "leaseId"] as const;

function parseStrings<K extends string>(
  key: string,
  text: string,
  fields: readonly K[],
): Record<K, string> {
  return stringFields(key, parseJson(key, text), fields);
}

function parseJson(key: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new IpamError("invalid", `Corrupt value at "${key}": ${(err as Error).message}`);
  }
}

/** The string `fields` of the object `raw`, which is the field `within` of the value when given. */
function stringFields<K extends string>(
  key: string,
  raw: unknown,
  fields: readonly K[],
  within?: string,
): Record<K, string> {
  const name = (field: string) => within ? `${within}.${field}` : field;
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    const what = within ? `field "${within}" is not` : "not";
    throw new IpamError("invalid", `Corrupt value at "${key}": ${what} a JSON object`);
  }
  const out = {} as Record<K, string>;
  for (const field of fields) {
    const value = (raw as Record<string, unknown>)[field];
    if (typeof value !== "string") {
      throw new IpamError("invalid", `Corrupt value at "${key}": field "${name(field)}" is not a string`);
    }
    out[field] = value;
  }
  return out;
}

/** @throws {IpamError} kind "invalid", naming the key, when the value is not a BlockRecord. */
export function parseBlockRecord(key: string, text: string): BlockRecord {
  return parseStrings(key, text, BLOCK_FIELDS);
}

/** @throws {IpamError} kind "invalid", naming the key, when the value is not an AddressRecord. */
export function parseAddressRecord(key: string, text: string): AddressRecord {
  return parseStrings(key, text, ADDRESS_FIELDS);
}

/** @throws {IpamError} kind "invalid", naming the key, when the value is not a NodeRecord. */
export function parseNodeRecord(key: string, text: string): NodeRecord {
  const raw = parseJson(key, text);
  const record: NodeRecord = stringFields(key, raw, NODE_FIELDS);
  const holder = (raw as Record<string, unknown>).holder;
  if (holder === undefined) return record;
  const strings = stringFields(key, holder, HOLDER_FIELDS, "holder");
  const pid = (holder as Record<string, unknown>).pid;
  if (!Number.isSafeInteger(pid) || (pid as number) < 1) {
    throw new IpamError("invalid", `Corrupt value at "${key}": field "holder.pid" is not a pid`);
  }
  return { ...record, holder: { ...strings, pid: pid as number } };
}
