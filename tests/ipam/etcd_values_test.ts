// Decoding block and address keys read from etcd: bad keys and values are reported, never thrown.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { IKeyValue } from "etcd3";
import { parseCidr, parseIp } from "../../ipam/cidr.ts";
import { decodeAddresses, decodeBlock, decodeBlockKey, parseBlockId } from "../../ipam/etcd_values.ts";
import { keysFor } from "../../ipam/keys.ts";

const keys = keysFor("/coil/");
const BLOCK = parseCidr("10.1.0.32/27");

function kv(key: string, value: string, modRevision = "9"): IKeyValue {
  return {
    key: Buffer.from(key),
    value: Buffer.from(value),
    create_revision: "1",
    mod_revision: modRevision,
    version: "1",
    lease: "0",
  };
}

const OWNER = JSON.stringify({ node: "n1", pool: "default", claimedAt: "2024-01-01T00:00:00Z" });

Deno.test("parseBlockId() reads block ids and refuses others", () => {
  assert.deepEqual(parseBlockId("10.1.0.32_27"), BLOCK);
  assert.deepEqual(parseBlockId("fd00::20_123"), parseCidr("fd00::20/123"));
  for (const bad of ["10.1.0.1_27", "10.1.0.0/27", "junk", ""]) {
    assert.equal(parseBlockId(bad), undefined, bad);
  }
});

Deno.test("decodeBlockKey() returns the block or why the key is bad", () => {
  const good = decodeBlockKey(keys, kv(keys.block("default", BLOCK), OWNER));
  assert.ok(!("problem" in good));
  assert.deepEqual(good.cidr, BLOCK);
  assert.equal(good.pool, "default");
  assert.equal(good.record.node, "n1");
  assert.equal(good.revision, "9");
  const bad = [
    kv("/coil/blocks/default/junk", OWNER),
    kv("/coil/blocks/default/10.1.0.32_27/extra", OWNER),
    kv("/coil/blocks/default", OWNER),
    kv(keys.block("default", BLOCK), '{"node":1}'),
  ];
  for (const item of bad) assert.ok("problem" in decodeBlockKey(keys, item), item.key.toString());
});

Deno.test("decodeBlock() treats a corrupt owner as nobody's", () => {
  assert.equal(decodeBlock(keys, "default", BLOCK, kv(keys.block("default", BLOCK), "{")), undefined);
  assert.equal(
    decodeBlock(keys, "default", BLOCK, kv(keys.block("default", BLOCK), OWNER))?.record.node,
    "n1",
  );
});

Deno.test("decodeAddresses() keeps bad keys with a problem, since they still hold the range", () => {
  const record = {
    network: "k8s",
    containerId: "c",
    ifName: "eth0",
    podNamespace: "ns",
    podName: "p",
    podUid: "u",
    netns: "",
    node: "n1",
    pool: "default",
    createdAt: "2024-01-01T00:00:00Z",
  };
  const ip = parseIp("10.1.0.33");
  const [good, corrupt, outside, junk] = decodeAddresses(keys, BLOCK, [
    kv(keys.address(BLOCK, ip), JSON.stringify(record)),
    kv(keys.address(BLOCK, parseIp("10.1.0.34")), "nope"),
    kv(`${keys.addressesOfBlock(BLOCK)}10.1.0.1`, JSON.stringify(record)),
    kv(`${keys.addressesOfBlock(BLOCK)}junk`, ""),
  ]);
  assert.deepEqual(good, { key: keys.address(BLOCK, ip), block: BLOCK, ip, revision: "9", record });
  assert.deepEqual(corrupt.ip, parseIp("10.1.0.34"));
  assert.equal(corrupt.record, undefined);
  assert.match(corrupt.problem!, /Corrupt value/);
  for (const item of [outside, junk]) {
    assert.equal(item.ip, undefined);
    assert.equal(item.problem, "not an address of the block");
  }
});
