// Removing a node from Coil's state: every block it owns goes back to its pool together with the
// addresses in it, one txn per block, refused while the node's coild runs or ran recently (its node or
// fence key exists): a paused or cut-off coild comes back and keeps using its pods' addresses.

import type { Etcd3 } from "etcd3";
import type { Cidr } from "./cidr.ts";
import { unavailable } from "./etcd_client.ts";
import { createEtcdStore } from "./etcd_store.ts";
import { IpamError } from "./errors.ts";
import { keysFor } from "./keys.ts";
import { formatSeconds, type NodePresence, readNodePresence } from "./node_presence.ts";

export interface RemovedBlock {
  pool: string;
  block: Cidr;
  /** Address keys deleted with it. */
  addresses: number;
}

export interface NodeRemoval {
  node: string;
  /** Whether the node's liveness key existed (only with `force`). */
  wasAlive: boolean;
  /** Whether the node's fence key existed: alive within --node-dead-after (only with `force`). */
  wasRecentlyAlive: boolean;
  blocks: RemovedBlock[];
}

/** A block rewritten between our read and our txn is re-read this often before giving up. */
const MAX_ATTEMPTS = 5;

/**
 * Releases every block `node` owns, with all addresses in it, then deletes its fence key. Each block
 * goes in one txn that deletes the block's address range and its key if the block key's ModRevision is
 * unchanged since read; when it changed, the block is read again and released if the node still owns
 * it. Idempotent: a node without blocks gives an empty list. The node key is left alone: it belongs to
 * the running coild's lease.
 * @throws {IpamError} "invalid" for an empty node name; "conflict" when the node runs or ran recently
 * and `force` is not set (nothing changed), or a block kept changing; "unavailable" when etcd fails
 * (blocks released until then stay released).
 */
export async function removeNode(
  client: Etcd3,
  prefix: string,
  node: string,
  options: { force?: boolean } = {},
): Promise<NodeRemoval> {
  if (!node) throw new IpamError("invalid", "Invalid node name: it is empty");
  const keys = keysFor(prefix);
  const store = createEtcdStore(client, prefix);
  const presence = await readNodePresence(client, prefix, node);
  if (!options.force) refuseIfAlive(node, prefix, presence);
  const { blocks } = await store.allBlocks();
  const removed: RemovedBlock[] = [];
  for (let block of blocks.filter((b) => b.record.node === node)) {
    for (let attempt = 1;; attempt++) {
      const outcome = await store.removeBlock(block);
      if (outcome.removed) {
        removed.push({ pool: block.pool, block: block.cidr, addresses: outcome.addresses });
        break;
      }
      const fresh = (await store.readBlock(block.pool, block.cidr)).block;
      if (!fresh || fresh.record.node !== node) break;
      if (attempt >= MAX_ATTEMPTS) {
        throw new IpamError(
          "conflict",
          `Cannot release block "${block.key}" of node "${node}": it changed during each of ${attempt} attempts`,
        );
      }
      block = fresh;
    }
  }
  if (presence.recent) {
    try {
      await client.delete().key(keys.nodeFence(node));
    } catch (err) {
      throw unavailable(err);
    }
  }
  return {
    node,
    wasAlive: Boolean(presence.running),
    wasRecentlyAlive: Boolean(presence.recent),
    blocks: removed,
  };
}

const FORCE_HINT = "--force is only for a host known to be down";

/** @throws {IpamError} "conflict" naming the key that shows `node` alive, and what to do. */
function refuseIfAlive(node: string, prefix: string, presence: NodePresence): void {
  const keys = keysFor(prefix);
  const holder = presence.running?.holder;
  if (presence.running) {
    const who = holder ? `, held by host "${holder.host}" pid ${holder.pid}` : "";
    throw new IpamError(
      "conflict",
      `Refusing to remove node "${node}": its coild is running (key "${keys.node(node)}" exists${who}); ` +
        `stop it first; ${FORCE_HINT}`,
    );
  }
  if (presence.recent) {
    throw new IpamError(
      "conflict",
      `Refusing to remove node "${node}": its coild was alive recently (key "${keys.nodeFence(node)}" ` +
        "exists), so it may only be paused or cut off from etcd, and its pods still use their addresses; " +
        `the node becomes removable in ${formatSeconds(presence.recent.expiresInSeconds)}, when that key ` +
        `expires; ${FORCE_HINT}`,
    );
  }
}
