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

/** Value of a node key (bound to the node's lease): the node is alive. */
export interface NodeRecord {
  node: string;
  startedAt: string;
  version: string;
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

function parseStrings<K extends string>(
  key: string,
  text: string,
  fields: readonly K[],
): Record<K, string> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new IpamError("invalid", `Corrupt value at "${key}": ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new IpamError("invalid", `Corrupt value at "${key}": not a JSON object`);
  }
  const out = {} as Record<K, string>;
  for (const field of fields) {
    const value = (raw as Record<string, unknown>)[field];
    if (typeof value !== "string") {
      throw new IpamError("invalid", `Corrupt value at "${key}": field "${field}" is not a string`);
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
  return parseStrings(key, text, NODE_FIELDS);
}
