import assert from "node:assert/strict";
import {
  allocateNext,
  freeCount,
  isEmpty,
  isUsed,
  markFree,
  markUsed,
  newBlockAllocator,
  usedIndices,
} from "../../ipam/block_allocator.ts";

Deno.test("newBlockAllocator() starts empty and refuses a bad size", async (t) => {
  await t.step("newBlockAllocator() has every address free", () => {
    const a = newBlockAllocator(32);
    assert.equal(freeCount(a), 32);
    assert.ok(isEmpty(a));
    assert.deepEqual(usedIndices(a), []);
  });
  for (const size of [0, -1, 1.5, NaN]) {
    await t.step(`newBlockAllocator(${size}) throws RangeError`, () => {
      assert.throws(() => newBlockAllocator(size), RangeError);
    });
  }
});

Deno.test("allocateNext() hands out every address of the block, then undefined", () => {
  for (const size of [1, 4, 31, 32, 33, 64, 100]) {
    const a = newBlockAllocator(size);
    const got = Array.from({ length: size }, () => allocateNext(a));
    assert.deepEqual(got, Array.from({ length: size }, (_, i) => i), `size ${size}`);
    assert.equal(allocateNext(a), undefined);
    assert.equal(freeCount(a), 0);
    assert.ok(!isEmpty(a));
  }
});

Deno.test("allocateNext() is next-fit: a freed address comes back only after the rest", () => {
  const a = newBlockAllocator(8);
  for (let i = 0; i < 3; i++) allocateNext(a);
  markFree(a, 1);
  assert.equal(allocateNext(a), 3);
  assert.equal(allocateNext(a), 4);
  markFree(a, 4);
  assert.deepEqual([allocateNext(a), allocateNext(a), allocateNext(a)], [5, 6, 7]);
  // Wrapped around: the lowest free offsets, in order, before the most recently freed one.
  assert.equal(allocateNext(a), 1);
  assert.equal(allocateNext(a), 4);
  assert.equal(allocateNext(a), undefined);
});

Deno.test("allocateNext() skips full words and finds the last free bit of a large block", () => {
  const a = newBlockAllocator(1000);
  for (let i = 0; i < 1000; i++) if (i !== 999) markUsed(a, i);
  assert.equal(allocateNext(a), 999);
  markFree(a, 31);
  markFree(a, 32);
  assert.equal(allocateNext(a), 31);
  assert.equal(allocateNext(a), 32);
  assert.equal(allocateNext(a), undefined);
});

Deno.test("markUsed() and markFree() are idempotent and keep the count", () => {
  const a = newBlockAllocator(64);
  assert.equal(markUsed(a, 63), true);
  assert.equal(markUsed(a, 63), false);
  assert.equal(markUsed(a, 31), true);
  assert.ok(isUsed(a, 31) && isUsed(a, 63) && !isUsed(a, 0));
  assert.equal(freeCount(a), 62);
  assert.deepEqual(usedIndices(a), [31, 63]);
  assert.equal(markFree(a, 31), true);
  assert.equal(markFree(a, 31), false);
  assert.equal(markFree(a, 63), true);
  assert.ok(isEmpty(a));
});

Deno.test("markUsed() leaves the next-fit cursor alone", () => {
  const a = newBlockAllocator(4);
  markUsed(a, 0);
  markUsed(a, 2);
  assert.equal(allocateNext(a), 1);
  assert.equal(allocateNext(a), 3);
});

Deno.test("isUsed() throws RangeError outside the block", async (t) => {
  const a = newBlockAllocator(4);
  for (const index of [-1, 4, 1.5]) {
    await t.step(`isUsed(${index}) throws`, () => {
      assert.throws(() => isUsed(a, index), RangeError);
      assert.throws(() => markUsed(a, index), RangeError);
      assert.throws(() => markFree(a, index), RangeError);
    });
  }
});
