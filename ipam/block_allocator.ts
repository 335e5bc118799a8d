// The addresses of one block as a bitmap, handed out next-fit from the last allocation: a just-freed
// address is reused only after the rest of the block, because conntrack and iptables lag behind a DEL.

/** Which offsets of a block are in use. Plain data; change it only through this module's functions. */
export interface BlockAllocator {
  /** Number of addresses in the block; every one is usable (pods get /32 and /128). */
  readonly size: number;
  /** One bit per offset, 1 = used. */
  readonly bits: Uint32Array;
  /** How many bits are set. */
  used: number;
  /** Where the next search starts: one past the last allocated offset. */
  next: number;
}

/**
 * A bitmap for `size` addresses, all free.
 * @throws {RangeError} when size is not a positive integer.
 */
export function newBlockAllocator(size: number): BlockAllocator {
  if (!Number.isSafeInteger(size) || size < 1) {
    throw new RangeError(`Invalid block size: ${size}`);
  }
  return { size, bits: new Uint32Array(Math.ceil(size / 32)), used: 0, next: 0 };
}

/** Whether `index` is in use. @throws {RangeError} outside the block. */
export function isUsed(allocator: BlockAllocator, index: number): boolean {
  checkIndex(allocator, index);
  return (allocator.bits[index >>> 5] & (1 << (index & 31))) !== 0;
}

/**
 * Takes the first free offset at or after the last allocation, wrapping around; undefined when the
 * block is full. Moves the next-fit cursor past the returned offset.
 */
export function allocateNext(allocator: BlockAllocator): number | undefined {
  if (allocator.used >= allocator.size) return undefined;
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
 * @returns whether the offset was free before.
 * @throws {RangeError} outside the block.
 */
export function markUsed(allocator: BlockAllocator, index: number): boolean {
  if (isUsed(allocator, index)) return false;
  setBit(allocator, index);
  return true;
}

/**
 * Marks `index` free. Idempotent.
 * @returns whether the offset was used before.
 * @throws {RangeError} outside the block.
 */
export function markFree(allocator: BlockAllocator, index: number): boolean {
  if (!isUsed(allocator, index)) return false;
  allocator.bits[index >>> 5] &= ~(1 << (index & 31));
  allocator.used--;
  return true;
}

/** Number of free addresses. */
export function freeCount(allocator: BlockAllocator): number {
  return allocator.size - allocator.used;
}

/** Whether no address is in use (the block may be released). */
export function isEmpty(allocator: BlockAllocator): boolean {
  return allocator.used === 0;
}

/** The used offsets in ascending order. */
export function usedIndices(allocator: BlockAllocator): number[] {
  const out: number[] = [];
  for (let index = 0; index < allocator.size; index++) {
    if ((allocator.bits[index >>> 5] & (1 << (index & 31))) !== 0) out.push(index);
  }
  return out;
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
