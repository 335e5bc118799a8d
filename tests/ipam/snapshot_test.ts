// readSnapshot() against a real etcd: per-block address counts and stray addresses from count-only
// ranges, across more blocks than one count txn holds, at the revision of the pool read.

import assert from "node:assert/strict";
import { readSnapshot } from "../../ipam/admin/snapshot.ts";
import { blockAt, formatCidr, nthAddress, parseCidr } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import { startEtcd } from "../helpers/etcd.ts";

Deno.test("readSnapshot() counts each block's addresses and the stray ones, over many count txns", async () => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const prefix = etcd.newPrefix();
  try {
    const keys = keysFor(prefix);
    const subnet = parseCidr("10.30.0.0/16");
    // 300 blocks (three count txns of 120), block i holding i % 5 addresses.
    const blocks = Array.from({ length: 300 }, (_, i) => blockAt(subnet, 27, BigInt(i)));
    let expected = 0;
    for (const [i, block] of blocks.entries()) {
      const record = { node: `node-${i % 7}`, pool: "default", claimedAt: new Date(0).toISOString() };
      await client.put(keys.block("default", block)).value(JSON.stringify(record));
      for (let a = 1; a <= i % 5; a++) {
        await client.put(keys.address(block, nthAddress(block, BigInt(a)))).value("{}");
        expected++;
      }
    }
    // Stray: in an unclaimed block, and under an id that is not a block key at all.
    const unclaimed = blockAt(subnet, 27, 1000n);
    await client.put(keys.address(unclaimed, nthAddress(unclaimed, 1n))).value("{}");
    await client.put(`${keys.addresses()}garbage`).value("{}");

    const snapshot = await readSnapshot(client, prefix);
    assert.equal(snapshot.blocks.length, 300);
    const byBlock = new Map(snapshot.blocks.map((b) => [formatCidr(b.block), b]));
    for (const [i, block] of blocks.entries()) {
      const got = byBlock.get(formatCidr(block));
      assert.equal(got?.addressesUsed, i % 5, formatCidr(block));
      assert.equal(got?.node, `node-${i % 7}`);
    }
    assert.equal(snapshot.blocks.reduce((sum, b) => sum + b.addressesUsed, 0), expected);
    assert.equal(snapshot.strayAddresses, 2);
  } finally {
    await client.delete().prefix(prefix);
    client.close();
  }
});
