// The in-memory table of owned blocks: packing reservations, spare detection and the keep-one rule.

import assert from "node:assert/strict";
import { freeCount, markUsed } from "../../ipam/block_allocator.ts";
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

function table(...blocks: [string, string, number][]): OwnedBlockTable {
  const out: OwnedBlockTable = new Map();
  for (const [pool, cidr, used] of blocks) {
    const block = newOwnedBlock(pool, parseCidr(cidr), "7");
    for (let i = 0; i < used; i++) markUsed(block.allocator, i);
    addOwnedBlock(out, block);
  }
  return out;
}

Deno.test("reserveAddress() fills the fullest block with room and skips releasing ones", () => {
  const t = table(["p", "10.0.0.0/30", 1], ["p", "10.0.0.4/30", 3], ["p", "10.0.0.8/30", 4], [
    "q",
    "10.0.1.0/30",
    0,
  ]);
  const r = reserveAddress(t, "p", 4)!;
  assert.equal(formatIp(r.ip), "10.0.0.7");
  assert.equal(formatIp(reserveAddress(t, "p", 4)!.ip), "10.0.0.1");
  [...t.values()][0].releasing = true;
  assert.equal(reserveAddress(t, "p", 4), undefined);
  assert.equal(reserveAddress(t, "p", 6), undefined);
  undoReservations([r]);
  assert.equal(freeCount(r.block.allocator), 1);
});

Deno.test("needsSpare() is true below a quarter block free in the pool and family", () => {
  const t = table(["p", "10.0.0.0/29", 7], ["p", "fd00::/125", 0]);
  assert.equal(freeIn(t, "p", 4), 1);
  assert.equal(needsSpare(t, "p", 4, 8), true);
  assert.equal(needsSpare(t, "p", 6, 8), false);
  assert.equal(needsSpare(t, "other", 4, 8), true);
});

Deno.test("canRelease() keeps the last block and enough room per pool and family", async (t) => {
  const cases: { name: string; blocks: [string, string, number][]; want: boolean }[] = [
    { name: "the only block stays", blocks: [["p", "10.0.0.0/30", 0]], want: false },
    {
      name: "an empty block beside a full one stays",
      blocks: [["p", "10.0.0.0/30", 0], ["p", "10.0.0.4/30", 4]],
      want: false,
    },
    {
      name: "an empty block beside a roomy one goes",
      blocks: [["p", "10.0.0.0/30", 0], ["p", "10.0.0.4/30", 3]],
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
