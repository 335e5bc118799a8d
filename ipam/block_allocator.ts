// The addresses of one block as a bitmap, handed out next-fit from the last allocation: a just-freed
// address is reused only after the rest of the block, because conntrack and iptables lag behind a DEL.
// A block's first address, and an IPv4 block's broadcast address, are reserved: no pod gets them.

import type { Family } from "./cidr.ts";

/**
 * The smallest block: its first address is reserved, so two are needed for one a pod can get.
 */
export const MIN_BLOCK_SIZE = 2;

/**
 * The offsets of a block of `size` addresses that no pod gets. In IPAM mode (e.g. Debian's `ptp` with
 * `"ipam": {"type": "coil"}`) coild answers each address with its block's prefix and the block's first
 * address as gateway, because ptp installs the default route before its own on-link route (ConfigureIface
 * in containernetworking/plugins pkg/ipam/ipam_linux.go), so the gateway must lie inside the address's
 * prefix; ptp then puts that gateway on the host veth. Were offset 0 a pod's address, other pods'
 * gateway would be that pod. And with the block's prefix on its eth0, a pod takes an IPv4 block's last
 * address for the broadcast address (ptp 1.1.1 gives `inet 10.1.0.1/27 brd 10.1.0.31`; a /31 gets none,
 * RFC 3021): a pod there could not be pinged from the pods of its block, so that offset is reserved too.
 * Both modes share blocks, so the reservation does not depend on the mode.
 */
export function reservedOffsets(size: number, family: Family): readonly number[] {
  return family === 4 && size >= 4 ? [0, size - 1] : [0];
}

/** How many addresses of a block of `size` pods can get: all but the reservedOffsets(). */
export function usableAddresses(size: number, family: Family): number {
  return size - reservedOffsets(size, family).length;
}

/** Which offsets of a block are in use. Plain data; change it only through this module's functions. */
export interface BlockAllocator {
  /** Number of addresses in the block, reserved offsets included. */
  readonly size: number;
  /** The offsets no pod gets (reservedOffsets()); their bits are always set. */
  readonly reserved: readonly number[];
  /** One bit per offset, 1 = used or reserved. */
  readonly bits: Uint32Array;
  /** How many addresses are in use; reserved offsets do not count, so 0 means empty. */
  used: number;
  /** Where the next search starts: one past the last allocated offset. */
  next: number;
}

/**
 * A bitmap for a block of `size` addresses of `family`, all free but the reserved offsets.
 * @throws {RangeError} when size is not an integer of at least MIN_BLOCK_SIZE.
 */
export function newBlockAllocator(size: number, family: Family): BlockAllocator {
  if (!Number.isSafeInteger(size) || size < MIN_BLOCK_SIZE) {
    throw new RangeError(
      `Invalid block size ${size}: at least ${MIN_BLOCK_SIZE} addresses, one being reserved`,
    );
  }
  const bits = new Uint32Array(Math.ceil(size / 32));
  const reserved = reservedOffsets(size, family);
  for (const index of reserved) bits[index >>> 5] |= 1 << (index & 31);
  return { size, reserved, bits, used: 0, next: 0 };
}

/** Addresses pods can get in this block, used or free. */
export function capacity(allocator: BlockAllocator): number {
  return allocator.size - allocator.reserved.length;
}

/**
 * Whether `index` is in use by an address; false for a reserved offset, which is never used.
 * @throws {RangeError} outside the block.
 */
export function isUsed(allocator: BlockAllocator, index: number): boolean {
  checkIndex(allocator, index);
  return bitSet(allocator, index) && !allocator.reserved.includes(index);
}

/**
 * Takes the first free offset at or after the last allocation, wrapping around and skipping reserved
 * offsets; undefined when the block is full. Moves the next-fit cursor past the returned offset.
 */
export function allocateNext(allocator: BlockAllocator): number | undefined {
  if (freeCount(allocator) <= 0) return undefined;
  const { size, bits } = allocator;
  let index = allocator.next % size;
  for (let scanned = 0; scanned < size;) {
    const word = bits[index >>> 5];
    // Skip a full word at once when the search is aligned on it.
    if ((index & 31) === 0 && word === 0xffffffff) {
      const step = Math.min(32, size - index);
      scanned += step;
      index = (index + step) % size;
      continue;
    }
    // Reserved bits are set, so the search passes over them like over used offsets.
    if ((word & (1 << (index & 31))) === 0) {
      setBit(allocator, index);
      allocator.next = (index + 1) % size;
      return index;
    }
    scanned++;
    index = (index + 1) % size;
  }
  return undefined;
}

/**
 * Marks `index` used (e.g. an address found in etcd). Idempotent; leaves the next-fit cursor alone.
 * A reserved offset is left as it is (false): an address there, written before the offset was
 * reserved, keeps its etcd key, and the block's release txn checks its address range is empty.
 * @returns whether the offset was free before.
 * @throws {RangeError} outside the block.
 */
export function markUsed(allocator: BlockAllocator, index: number): boolean {
  checkIndex(allocator, index);
  if (bitSet(allocator, index)) return false;
  setBit(allocator, index);
  return true;
}

/**
 * Marks `index` free. Idempotent; a reserved offset stays reserved (false).
 * @returns whether the offset was used before.
 * @throws {RangeError} outside the block.
 */
export function markFree(allocator: BlockAllocator, index: number): boolean {
  if (!isUsed(allocator, index)) return false;
  allocator.bits[index >>> 5] &= ~(1 << (index & 31));
  allocator.used--;
  return true;
}

/** Number of addresses that can still be handed out (reserved offsets are not). */
export function freeCount(allocator: BlockAllocator): number {
  return capacity(allocator) - allocator.used;
}

/** Whether no address is in use (the block may be released). */
export function isEmpty(allocator: BlockAllocator): boolean {
  return allocator.used === 0;
}

/** The used offsets in ascending order (never a reserved one). */
export function usedIndices(allocator: BlockAllocator): number[] {
  const out: number[] = [];
  for (let index = 0; index < allocator.size; index++) {
    if (isUsed(allocator, index)) out.push(index);
  }
  return out;
}

function bitSet(allocator: BlockAllocator, index: number): boolean {
  return (allocator.bits[index >>> 5] & (1 << (index & 31))) !== 0;
}

function setBit(allocator: BlockAllocator, index: number): void {
  allocator.bits[index >>> 5] |= 1 << (index & 31);
  allocator.used++;
}

function checkIndex(allocator: BlockAllocator, index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= allocator.size) {
    throw new RangeError(`Offset ${index} outside a block of ${allocator.size} addresses`);
  }
}
