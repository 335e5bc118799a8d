// Whether a node's coild runs (its node key exists, on the short liveness lease) or ran recently (its
// fence key exists, on a long lease that outlives clean stops), and when the fence expires: etcd's
// own clock decides when a silent node counts as gone.

import { Buffer } from "node:buffer";
import type { Etcd3, IKeyValue } from "etcd3";
import { unavailable } from "./etcd_client.ts";
import { keysFor } from "./keys.ts";
import { type NodeRecord, parseNodeRecord } from "./records.ts";

export interface NodePresence {
  /** The node key's record: its coild runs (or died less than a liveness TTL ago). */
  running?: NodeRecord;
  /** The fence key's record and how long until it expires: the node may only be paused. */
  recent?: { record: NodeRecord; expiresInSeconds: number };
}

/**
 * Reads both keys of `node` in one txn, then the fence lease's remaining TTL.
 * @throws {IpamError} "unavailable" when etcd fails; "invalid" for a corrupt record, naming its key.
 */
export async function readNodePresence(client: Etcd3, prefix: string, node: string): Promise<NodePresence> {
  const keys = keysFor(prefix);
  const names = [keys.node(node), keys.nodeFence(node)];
  let kvs: (IKeyValue | undefined)[];
  try {
    const res = await client.kv.txn({
      success: names.map((key) => ({ request_range: { key: Buffer.from(key) } })),
    });
    kvs = res.responses.map((r) => r.response_range.kvs[0]);
  } catch (err) {
    throw unavailable(err);
  }
  const [nodeKv, fenceKv] = kvs;
  const presence: NodePresence = {};
  if (nodeKv) presence.running = parseNodeRecord(names[0], nodeKv.value.toString());
  if (fenceKv) {
    presence.recent = {
      record: parseNodeRecord(names[1], fenceKv.value.toString()),
      expiresInSeconds: await leaseRemainingSeconds(client, fenceKv.lease),
    };
  }
  return presence;
}

/**
 * Seconds until lease `id` expires unless renewed (0 when already gone; Infinity for no lease, "0").
 * @throws {IpamError} "unavailable" when etcd fails.
 */
export async function leaseRemainingSeconds(client: Etcd3, id: string): Promise<number> {
  if (id === "0") return Infinity;
  try {
    const res = await client.leaseClient.leaseTimeToLive({ ID: id });
    return Math.max(0, Number(res.TTL));
  } catch (err) {
    throw unavailable(err);
  }
}

/** 551 → "9m11s"; 42 → "42s"; 7300 → "2h1m40s". */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return "never (the key has no lease)";
  const s = Math.round(seconds);
  const parts = [[Math.floor(s / 3600), "h"], [Math.floor(s / 60) % 60, "m"], [s % 60, "s"]] as const;
  const text = parts.filter(([n], i) => n > 0 || (i === 2 && s < 60)).map(([n, unit]) => `${n}${unit}`);
  return text.join("");
}
