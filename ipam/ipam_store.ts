// The narrow store NodeIpam works through: one method per etcd decision (a read or one txn), so that
// etcd (etcd_store.ts) or an in-memory model for deterministic tests can stand behind it.

import type { Cidr, IpAddress } from "./cidr.ts";
import type { BadKey, BlockState, StoredAddress, StoredBlock } from "./etcd_values.ts";
import type { Keys } from "./keys.ts";
import type { BlockRef } from "./node_block_index.ts";
import type { AddressRecord, BlockRecord } from "./records.ts";

/** The ModRevision a block key must still have for a write to go ahead. */
export interface BlockGuard {
  pool: string;
  cidr: Cidr;
  revision: string;
}

export interface NewAddress {
  block: Cidr;
  ip: IpAddress;
  record: AddressRecord;
}

export type ClaimOutcome =
  | { claimed: true; revision: string; addresses: StoredAddress[] }
  | { claimed: false; owner?: BlockRecord };

export type WriteOutcome = { ok: true; revision: string } | { ok: false; states: BlockState[] };

/** Every method rejects with IpamError "unavailable" when etcd fails (the txn may still have committed). */
export interface IpamStore {
  readonly keys: Keys;
  /** Every pool value by name, and the revision of the read (a watch continues after it). */
  readPools(): Promise<{ values: Map<string, string>; revision: string }>;
  /** One pool's value, or undefined. */
  readPool(name: string): Promise<string | undefined>;
  /**
   * Calls `onChange` for each later pool put (value) or delete (undefined), and `onLost` once if etcd
   * cancels the watch (e.g. its revision was compacted during an outage); the result stops it.
   */
  watchPools(
    afterRevision: string,
    onChange: (name: string, value?: string) => void,
    onLost: (err: Error) => void,
  ): Promise<() => Promise<void>>;
  /** The blocks of the pool that someone owns (keys only). Unreadable keys are left out. */
  claimedBlocks(pool: string): Promise<Cidr[]>;
  /**
   * One txn: If CreateRevision(block)==0 Then put the record and the owner's index entry and read the
   * block's addresses Else read the owner.
   */
  claimBlock(pool: string, cidr: Cidr, record: BlockRecord): Promise<ClaimOutcome>;
  /** Every block key with its owner; those that are not valid blocks come back in `bad`. */
  allBlocks(): Promise<{ blocks: StoredBlock[]; bad: BadKey[] }>;
  /**
   * The blocks `node`'s index lists (node_block_index.ts), keys only, and whether the index is complete
   * (false for data written before the index existed). Entries may be stale: read the blocks.
   */
  readNodeIndex(node: string): Promise<{ complete: boolean; blocks: BlockRef[]; bad: BadKey[] }>;
  /**
   * Puts `add` into `node`'s index and deletes `remove` (and the `bad` keys) from it, then marks the
   * index complete. Several txns when the change exceeds one; the mark comes in the last.
   */
  updateNodeIndex(
    node: string,
    change: { add: BlockRef[]; remove: BlockRef[]; bad?: string[] },
  ): Promise<void>;
  /** The block key (if any) and every address key of the block. */
  readBlock(pool: string, cidr: Cidr): Promise<BlockState>;
  /**
   * One txn: If ModRevision(block)==guard.revision Then re-put the block key with its own value (its
   * ModRevision moves on, so a write still in flight that compares the old one can never commit) Else
   * nothing; in both branches, read the block key and its addresses after that.
   */
  fenceBlock(guard: BlockGuard): Promise<{ fenced: boolean; state: BlockState }>;
  /** One txn putting every address (each CreateRevision==0) if every guarded block is unchanged. */
  putAddresses(guards: BlockGuard[], addresses: NewAddress[]): Promise<WriteOutcome>;
  /**
   * Deletes each address whose ModRevision is unchanged; one txn when none changed. Idempotent.
   * @returns the keys left alone because someone else rewrote them.
   */
  releaseAddresses(addresses: { key: string; revision: string }[]): Promise<string[]>;
  /**
   * One txn deleting the block and its owner's index entry if its ModRevision is unchanged and its
   * address range is empty.
   */
  releaseBlock(guard: BlockGuard): Promise<{ released: true } | { released: false; state: BlockState }>;
  /**
   * One txn deleting the block, every address in it and its owner's index entry if its ModRevision is
   * unchanged (`coil node remove`, for a dead node). @returns how many address keys went, or false when the block changed.
   */
  removeBlock(guard: BlockGuard): Promise<{ removed: true; addresses: number } | { removed: false }>;
}
