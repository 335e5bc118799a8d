// Removing a node from Coil's state: every block it owns goes back to its pool together with the
// addresses in it, one txn per block, refused while the node's coild is alive (its liveness key exists).

import type { Etcd3 } from "etcd3";
import type { Cidr } from "./cidr.ts";
import { unavailable } from "./etcd_client.ts";
import { createEtcdStore } from "./etcd_store.ts";
import { IpamError } from "./errors.ts";
import { keysFor } from "./keys.ts";

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
  blocks: RemovedBlock[];
}

/** A block rewritten between our read and our txn is re-read this often before giving up. */
const MAX_ATTEMPTS = 5;

/**
 * Releases every block `node` owns, with all addresses in it. Each block goes in one txn that deletes
 * the block's address range and its key if the block key's ModRevision is unchanged since read; when it
 * changed, the block is read again and released if the node still owns it. Idempotent: a node without
 * blocks gives an empty list. The liveness key is left alone: it belongs to the node's lease.
 * @throws {IpamError} "invalid" for an empty node name; "conflict" when the node is alive and `force`
 * is not set (nothing changed), or a block kept changing; "unavailable" when etcd fails (blocks
 * released until then stay released).
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
  let wasAlive: boolean;
  try {
    wasAlive = await client.get(keys.node(node)).exists();
  } catch (err) {
    throw unavailable(err);
  }
  if (wasAlive && !options.force) {
    throw new IpamError(
      "conflict",
      `Refusing to remove node "${node}": its coild is running (key "${keys.node(node)}" exists); ` +
        "stop it first, or use --force",
    );
  }
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
  return { node, wasAlive, blocks: removed };
}
