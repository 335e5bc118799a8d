// Address pools: a name, subnets of one or both families, and a block size. Validated once, here,
// whether the definition comes from the CLI or from etcd.

import { type Cidr, type Family, familyBits } from "./cidr.ts";

/** The pool serving every namespace that has no pool of its own. */
export const DEFAULT_POOL = "default";

/** Default block size: 2^5 addresses, a /27 (IPv4) or /123 (IPv6). */
export const DEFAULT_BLOCK_SIZE_BITS = 5;

export interface Pool {
  name: string;
  subnets: Cidr[];
  /** log2 of the number of addresses per block. */
  blockSizeBits: number;
}

/** Prefix length of this pool's blocks in the given family. */
export function blockPrefix(pool: Pool, family: Family): number {
  return familyBits(family) - pool.blockSizeBits;
}
