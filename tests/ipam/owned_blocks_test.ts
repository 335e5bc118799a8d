// The in-memory table of owned blocks: packing reservations, spare detection and the keep-one rule.

import assert from "node:assert/strict";
import { freeCount, markFree, markUsed } from "../../ipam/block_allocator.ts";
import { formatCidr, formatIp, parseCidr } from "../../ipam/cidr.ts";
import {
  addOwnedBlock,
  canRelease,
  freeIn,
  needsSpare,
  newOwnedBlock,
  type OwnedBlockTable,
  releasable,
  reserveAddress,
  undoReservations,
} from "../../ipam/owned_blocks.ts";

// Each block with its first `used` offsets after the reserved offset 0 in use. An IPv4 /30 holds 2 pods
// (its first and last addresses are reserved), an IPv6 /126 holds 3.
function table(...blocks: [string, string, number][]): OwnedBlockTable {
  const out: OwnedBlockTable = new Map();
  for (const [pool, cidr, used] of blocks) {
    const block = newOwnedBlock(pool, parseCidr(cidr), "7");
    for (let i = 1; i <= used; i++) assert.ok(markUsed(block.allocator, i));
    addOwnedBlock(out, block);
  }
  return out;
}

Deno.test("reserveAddress() fills the fullest block with room and skips releasing ones", () => {
  const t = table(["p", "10.0.0.0/30", 0], ["p", "10.0.0.4/30", 1], ["p", "10.0.0.8/30", 2], [
    "q",
    "10.0.1.0/30",
    0,
  ]);
  const r = reserveAddress(t, "p", 4)!;
  assert.equal(formatIp(r.ip), "10.0.0.6");
  assert.equal(formatIp(reserveAddress(t, "p", 4)!.ip), "10.0.0.1");
  [...t.values()][0].releasing = true;
  assert.equal(reserveAddress(t, "p", 4), undefined);
  assert.equal(reserveAddress(t, "p", 6), undefined);
  undoReservations([r]);
  assert.equal(freeCount(r.block.allocator), 1);
});

Deno.test("needsSpare() is true below a quarter block free in the pool and family", () => {
  const t = table(["p", "10.0.0.0/29", 5], ["p", "fd00::/125", 0]);
  assert.equal(freeIn(t, "p", 4), 1);
  assert.equal(freeIn(t, "p", 6), 7, "an IPv6 block of 8 hands out 7");
  // A quarter of the 6 usable addresses of an IPv4 block of 8 is 1.5.
  assert.equal(needsSpare(t, "p", 4, 8), true);
  assert.equal(needsSpare(t, "p", 6, 8), false);
  assert.equal(needsSpare(t, "other", 4, 8), true);
  markFree([...t.values()][0].allocator, 5);
  assert.equal(needsSpare(t, "p", 4, 8), false);
});

Deno.test("reserveAddress() never hands out a block's first address, and a /32 block is refused", () => {
  const t = table(["p", "10.0.0.0/31", 0]);
  assert.equal(formatIp(reserveAddress(t, "p", 4)!.ip), "10.0.0.1");
  assert.equal(reserveAddress(t, "p", 4), undefined);
  // An IPv4 /30: neither its first (gateway) nor its last (broadcast) address.
  addOwnedBlock(t, newOwnedBlock("p", parseCidr("10.0.0.4/30"), "7"));
  assert.deepEqual([reserveAddress(t, "p", 4), reserveAddress(t, "p", 4)].map((r) => formatIp(r!.ip)), [
    "10.0.0.5",
    "10.0.0.6",
  ]);
  assert.equal(reserveAddress(t, "p", 4), undefined);
  // An IPv6 block has no broadcast address: only its first is kept back.
  addOwnedBlock(t, newOwnedBlock("p", parseCidr("fd00::/126"), "7"));
  const v6 = [1, 2, 3].map(() => formatIp(reserveAddress(t, "p", 6)!.ip));
  assert.deepEqual(v6, ["fd00::1", "fd00::2", "fd00::3"]);
  assert.equal(reserveAddress(t, "p", 6), undefined);
  assert.throws(() => newOwnedBlock("p", parseCidr("10.0.0.0/32"), "7"), RangeError);
});

Deno.test("canRelease() keeps the last block and enough room per pool and family", async (t) => {
  const cases: { name: string; blocks: [string, string, number][]; want: boolean }[] = [
    { name: "the only block stays", blocks: [["p", "10.0.0.0/30", 0]], want: false },
    {
      name: "an empty block beside a full one stays",
      blocks: [["p", "10.0.0.0/30", 0], ["p", "10.0.0.4/30", 2]],
      want: false,
    },
    {
      name: "an empty block beside one with a quarter of its 2 usable addresses free goes",
      blocks: [["p", "10.0.0.0/30", 0], ["p", "10.0.0.4/30", 1]],
      want: true,
    },
    {
      name: "another pool's room does not count",
      blocks: [["p", "10.0.0.0/30", 0], ["q", "10.0.0.4/30", 0]],
      want: false,
    },
    { name: "a block in use stays", blocks: [["p", "10.0.0.0/30", 1], ["p", "10.0.0.4/30", 0]], want: false },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const tab = table(...c.blocks);
      assert.equal(canRelease(tab, [...tab.values()][0]), c.want);
    });
  }
});

Deno.test("releasable() keeps one empty block, or none when the pool is gone", () => {
  const t = table(["p", "10.0.0.0/30", 0], ["p", "10.0.0.4/30", 0], ["p", "10.0.0.8/30", 0], [
    "p",
    "fd00::/126",
    0,
  ]);
  const keep = releasable(t, "p", 4, true);
  assert.equal(keep.length, 2);
  assert.deepEqual(releasable(t, "p", 4, false).map((b) => formatCidr(b.cidr)).sort(), [
    "10.0.0.0/30",
    "10.0.0.4/30",
    "10.0.0.8/30",
  ]);
  assert.deepEqual(releasable(t, "p", 6, true), []);
});
