// Every etcd key Coil writes, one function each, all under the configured prefix (default `/coil/`).
// Blocks and addresses get one key each, so nodes only ever contend on the block they both want.

import { type Cidr, formatCidr, formatIp, type IpAddress } from "./cidr.ts";

/** `10.1.0.32/27` → `10.1.0.32_27`: a block's name inside keys, where `/` would nest. */
export function blockId(block: Cidr): string {
  return formatCidr(block).replace("/", "_");
}

/** Key builders for one prefix (which must end with `/`). */
export function keysFor(prefix: string) {
  return {
    /** Pool definition: Pool JSON. */
    pool: (name: string) => `${prefix}pools/${name}`,
    pools: () => `${prefix}pools/`,
    /** Bumped by every pool change, so that overlap checks across pools are serialised by one compare. */
    poolsRevision: () => `${prefix}pools-revision`,
    /** Block ownership: BlockRecord JSON. Claimed with CreateRevision == 0. */
    block: (pool: string, block: Cidr) => `${prefix}blocks/${pool}/${blockId(block)}`,
    blocksOfPool: (pool: string) => `${prefix}blocks/${pool}/`,
    blocks: () => `${prefix}blocks/`,
    /** One allocated address: AddressRecord JSON. */
    address: (block: Cidr, ip: IpAddress) => `${prefix}addresses/${blockId(block)}/${formatIp(ip)}`,
    /** All addresses of a block: the range that must be empty to release it. */
    addressesOfBlock: (block: Cidr) => `${prefix}addresses/${blockId(block)}/`,
    addresses: () => `${prefix}addresses/`,
    /** Node liveness, bound to the node's lease. */
    node: (name: string) => `${prefix}nodes/${name}`,
    nodes: () => `${prefix}nodes/`,
    /** The node was alive recently: NodeRecord JSON on a long lease that outlives coild's stops. */
    nodeFence: (name: string) => `${prefix}node-fences/${name}`,
    nodeFences: () => `${prefix}node-fences/`,
    /** The data model's version: {"version": N} (ipam/schema.ts); absent in data of version 1. */
    schema: () => `${prefix}schema`,
  };
}

export type Keys = ReturnType<typeof keysFor>;

/** The end of the etcd range holding every key that starts with `prefix` (etcd's `range_end`). */
export function prefixRangeEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}
