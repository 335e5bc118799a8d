import assert from "node:assert/strict";
import {
  allocateNext,
  capacity,
  freeCount,
  isEmpty,
  isUsed,
  markFree,
  markUsed,
  MIN_BLOCK_SIZE,
  newBlockAllocator,
  reservedOffsets,
  usableAddresses,
  usedIndices,
} from "../../ipam/block_allocator.ts";

Deno.test("newBlockAllocator() starts empty and refuses a bad size", async (t) => {
  await t.step("newBlockAllocator() has every address but the reserved ones free", () => {
    const v6 = newBlockAllocator(32, 6);
    assert.equal(freeCount(v6), 31);
    assert.ok(isEmpty(v6));
    assert.equal(v6.used, 0);
    assert.deepEqual(usedIndices(v6), []);
    assert.equal(isUsed(v6, 0), false);
    const v4 = newBlockAllocator(32, 4);
    assert.equal(freeCount(v4), 30);
    assert.equal(capacity(v4), 30);
    assert.ok(isEmpty(v4));
    assert.equal(isUsed(v4, 31), false);
  });
  for (const family of [4, 6] as const) {
    await t.step(`newBlockAllocator(${MIN_BLOCK_SIZE}, ${family}) has one address to hand out`, () => {
      assert.equal(freeCount(newBlockAllocator(MIN_BLOCK_SIZE, family)), 1);
    });
  }
  for (const size of [0, 1, -1, 1.5, NaN]) {
    await t.step(`newBlockAllocator(${size}) throws RangeError`, () => {
      assert.throws(() => newBlockAllocator(size, 6), RangeError);
      assert.throws(() => newBlockAllocator(size, 4), RangeError);
    });
  }
});

Deno.test("reservedOffsets() keeps the gateway and the IPv4 broadcast address from pods", () => {
  assert.deepEqual(reservedOffsets(32, 6), [0]);
  assert.deepEqual(reservedOffsets(2, 6), [0]);
  assert.deepEqual(reservedOffsets(32, 4), [0, 31]);
  assert.deepEqual(reservedOffsets(4, 4), [0, 3]);
  // A /31 has no broadcast address (RFC 3021).
  assert.deepEqual(reservedOffsets(2, 4), [0]);
  assert.equal(usableAddresses(2, 4), 1);
  assert.equal(usableAddresses(4, 4), 2);
  assert.equal(usableAddresses(32, 4), 30);
  assert.equal(usableAddresses(32, 6), 31);
  assert.equal(usableAddresses(65536, 6), 65535);
});

Deno.test("allocateNext() hands out every address of the block but the reserved ones, then undefined", () => {
  for (const family of [4, 6] as const) {
    for (const size of [2, 4, 31, 32, 33, 64, 100]) {
      const a = newBlockAllocator(size, family);
      const want = Array.from({ length: size }, (_, i) => i).filter((i) =>
        !reservedOffsets(size, family).includes(i)
      );
      const got = want.map(() => allocateNext(a));
      assert.deepEqual(got, want, `size ${size}, IPv${family}`);
      assert.equal(allocateNext(a), undefined);
      assert.equal(freeCount(a), 0);
      assert.equal(a.used, usableAddresses(size, family));
      assert.ok(!isEmpty(a));
      assert.deepEqual(usedIndices(a), want);
    }
  }
});

Deno.test("allocateNext() is next-fit: a freed address comes back only after the rest", () => {
  const a = newBlockAllocator(8, 6);
  assert.deepEqual([allocateNext(a), allocateNext(a), allocateNext(a)], [1, 2, 3]);
  markFree(a, 2);
  assert.equal(allocateNext(a), 4);
  assert.equal(allocateNext(a), 5);
  markFree(a, 5);
  assert.deepEqual([allocateNext(a), allocateNext(a)], [6, 7]);
  // Wrapped around past the reserved offset 0: the lowest free offsets, in order, before the most
  // recently freed one.
  assert.equal(allocateNext(a), 2);
  assert.equal(allocateNext(a), 5);
  assert.equal(allocateNext(a), undefined);
});

Deno.test("allocateNext() wraps around past the reserved offsets", () => {
  const a = newBlockAllocator(8, 4);
  assert.deepEqual(Array.from({ length: 6 }, () => allocateNext(a)), [1, 2, 3, 4, 5, 6]);
  assert.equal(allocateNext(a), undefined);
  assert.equal(a.next, 7);
  markFree(a, 1);
  assert.equal(allocateNext(a), 1);
  assert.equal(allocateNext(a), undefined);
});

Deno.test("allocateNext() skips full words and finds the last free bit of a large block", () => {
  const a = newBlockAllocator(1000, 6);
  for (let i = 1; i < 1000; i++) if (i !== 999) markUsed(a, i);
  assert.equal(freeCount(a), 1);
  assert.equal(allocateNext(a), 999);
  markFree(a, 31);
  markFree(a, 32);
  assert.equal(allocateNext(a), 31);
  assert.equal(allocateNext(a), 32);
  assert.equal(allocateNext(a), undefined);
});

Deno.test("markUsed() and markFree() are idempotent and keep the count", () => {
  const a = newBlockAllocator(64, 6);
  assert.equal(markUsed(a, 63), true);
  assert.equal(markUsed(a, 63), false);
  assert.equal(markUsed(a, 31), true);
  assert.ok(isUsed(a, 31) && isUsed(a, 63) && !isUsed(a, 1));
  assert.equal(freeCount(a), 61);
  assert.deepEqual(usedIndices(a), [31, 63]);
  assert.equal(markFree(a, 31), true);
  assert.equal(markFree(a, 31), false);
  assert.equal(markFree(a, 63), true);
  assert.ok(isEmpty(a));
  assert.equal(freeCount(a), 63);
});

Deno.test("markUsed() and markFree() leave reserved offsets out of every count", () => {
  const a = newBlockAllocator(8, 4);
  for (const index of [0, 7]) {
    assert.equal(markUsed(a, index), false);
    assert.equal(isUsed(a, index), false);
    assert.equal(markFree(a, index), false);
  }
  assert.ok(isEmpty(a));
  assert.equal(freeCount(a), 6);
  // Freeing them did not make them allocatable.
  assert.deepEqual(Array.from({ length: 7 }, () => allocateNext(a)), [1, 2, 3, 4, 5, 6, undefined]);
  assert.deepEqual(usedIndices(a), [1, 2, 3, 4, 5, 6]);
});

Deno.test("markUsed() leaves the next-fit cursor alone", () => {
  const a = newBlockAllocator(4, 6);
  markUsed(a, 1);
  markUsed(a, 3);
  assert.equal(allocateNext(a), 2);
  assert.equal(allocateNext(a), undefined);
});

Deno.test("isUsed() throws RangeError outside the block", async (t) => {
  const a = newBlockAllocator(4, 4);
  for (const index of [-1, 4, 1.5]) {
    await t.step(`isUsed(${index}) throws`, () => {
      assert.throws(() => isUsed(a, index), RangeError);
      assert.throws(() => markUsed(a, index), RangeError);
      assert.throws(() => markFree(a, index), RangeError);
    });
  }
});
