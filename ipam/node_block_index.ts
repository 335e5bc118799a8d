// The per-node index of block ownership: one key per block a node owns, put in the claim txn and deleted
// in the txns that delete the block, so that a starting coild reads its own blocks, not every block key
// of the cluster. Data written before the index existed has none: a node's `complete` key says that its
// index lists every block it owns (its first load builds it from one full scan, then writes that key).
// The index is a hint: a load reads each listed block and trusts only the owner recorded there.

import type { Cidr } from "./cidr.ts";
import type { BadKey } from "./etcd_values.ts";
import { parseBlockId } from "./etcd_values.ts";
import { blockId } from "./keys.ts";

/** A block by pool, as the index names it. */
export interface BlockRef {
  pool: string;
  cidr: Cidr;
}

/** Key builders of the index for one prefix (which must end with `/`). */
export function nodeIndexKeys(prefix: string) {
  return {
    /** One block of the node: empty value. */
    entry: (node: string, pool: string, block: Cidr) =>
      `${prefix}node-blocks/${node}/${pool}/${blockId(block)}`,
    /** Every entry of the node. */
    entries: (node: string) => `${prefix}node-blocks/${node}/`,
    /** Present once the node's index is complete: the RFC 3339 time it was built. */
    complete: (node: string) => `${prefix}node-blocks-complete/${node}`,
  };
}

export type NodeIndexKeys = ReturnType<typeof nodeIndexKeys>;

/** An entry key read back under `entries(node)`: the block it names, or why it names none. */
export function decodeIndexEntry(keys: NodeIndexKeys, node: string, key: string): BlockRef | BadKey {
  const [pool, id, ...rest] = key.slice(keys.entries(node).length).split("/");
  const cidr = id === undefined || rest.length > 0 || !pool ? undefined : parseBlockId(id);
  return cidr ? { pool, cidr } : { key, problem: "not a node index entry (<pool>/<block>)" };
}
