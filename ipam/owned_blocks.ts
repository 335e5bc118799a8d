// The blocks this node owns, in memory: per block its address bitmap, the ModRevision of its key as we
// claimed or loaded it (every address write compares it), and whether its release is in flight.

import {
  allocateNext,
  type BlockAllocator,
  capacity,
  freeCount,
  isEmpty,
  markFree,
  newBlockAllocator,
  usableAddresses,
} from "./block_allocator.ts";
import { type Cidr, cidrSize, type Family, type IpAddress, nthAddress } from "./cidr.ts";
import { blockId } from "./keys.ts";

export interface OwnedBlockState {
  readonly pool: string;
  readonly cidr: Cidr;
  revision: string;
  readonly allocator: BlockAllocator;
  /** A release txn is in flight: no new reservation may land here. */
  releasing: boolean;
}

/** Owned blocks by block id (`10.1.0.0_27`); pools never overlap, so the id alone names a block. */
export type OwnedBlockTable = Map<string, OwnedBlockState>;

/** An address taken in memory and not yet written to etcd. */
export interface Reservation {
  block: OwnedBlockState;
  index: number;
  ip: IpAddress;
}

/**
 * A block just claimed or loaded, every address free.
 * @throws {RangeError} for a single-address block, which has nothing to hand out (see MIN_BLOCK_SIZE_BITS).
 */
export function newOwnedBlock(pool: string, cidr: Cidr, revision: string): OwnedBlockState {
  return {
    pool,
    cidr,
    revision,
    allocator: newBlockAllocator(Number(cidrSize(cidr)), cidr.family),
    releasing: false,
  };
}

export function addOwnedBlock(table: OwnedBlockTable, block: OwnedBlockState): void {
  table.set(blockId(block.cidr), block);
}

/** The blocks of one pool and family, by address. */
export function blocksOf(table: OwnedBlockTable, pool: string, family: Family): OwnedBlockState[] {
  return [...table.values()]
    .filter((b) => b.pool === pool && b.cidr.family === family)
    .sort((a, b) => (a.cidr.base < b.cidr.base ? -1 : a.cidr.base > b.cidr.base ? 1 : 0));
}

/** Free addresses in the usable (not releasing) blocks of one pool and family. */
export function freeIn(table: OwnedBlockTable, pool: string, family: Family): number {
  return blocksOf(table, pool, family)
    .filter((b) => !b.releasing)
    .reduce((sum, b) => sum + freeCount(b.allocator), 0);
}

/**
 * Takes an address next-fit in the fullest usable block that has room, so that spare blocks stay
 * empty and can be released; undefined when no block has room.
 */
export function reserveAddress(
  table: OwnedBlockTable,
  pool: string,
  family: Family,
): Reservation | undefined {
  let best: OwnedBlockState | undefined;
  for (const block of blocksOf(table, pool, family)) {
    const free = freeCount(block.allocator);
    if (block.releasing || free === 0) continue;
    if (!best || free < freeCount(best.allocator)) best = block;
  }
  if (!best) return undefined;
  const index = allocateNext(best.allocator)!;
  return { block: best, index, ip: nthAddress(best.cidr, BigInt(index)) };
}

/** Gives reserved addresses back. */
export function undoReservations(reservations: Reservation[]): void {
  for (const r of reservations) markFree(r.block.allocator, r.index);
}

/**
 * Whether free addresses of the pool+family dropped below a quarter of what a block of `blockSize`
 * addresses can hand out (reserved offsets excluded, as canRelease() counts them).
 */
export function needsSpare(table: OwnedBlockTable, pool: string, family: Family, blockSize: number): boolean {
  return freeIn(table, pool, family) * 4 < usableAddresses(blockSize, family);
}

/**
 * Whether this block can go now: it is empty, and the rest of its pool+family keeps at least a quarter
 * of a block free (so one block per pool+family stays, and no spare is claimed right after).
 */
export function canRelease(table: OwnedBlockTable, block: OwnedBlockState): boolean {
  if (block.releasing || !isEmpty(block.allocator)) return false;
  const usable = capacity(block.allocator);
  const rest = freeIn(table, block.pool, block.cidr.family) - usable;
  return rest * 4 >= usable;
}

/**
 * The empty blocks of one pool+family that can go. With `keepSpare`, a block stays when the others
 * would be left with less than a quarter of it free, which keeps one block per pool+family and avoids
 * releasing a block only to claim a spare right after; without, every empty block goes (pool deleted).
 */
export function releasable(
  table: OwnedBlockTable,
  pool: string,
  family: Family,
  keepSpare: boolean,
): OwnedBlockState[] {
  const candidates = blocksOf(table, pool, family).filter((b) => !b.releasing);
  let free = candidates.reduce((sum, b) => sum + freeCount(b.allocator), 0);
  const out: OwnedBlockState[] = [];
  for (const block of candidates.reverse()) {
    if (!isEmpty(block.allocator)) continue;
    const usable = capacity(block.allocator);
    if (keepSpare && (free - usable) * 4 < usable) continue;
    out.push(block);
    free -= usable;
  }
  return out;
}
