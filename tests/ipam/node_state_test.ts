// Bringing a node's memory in line with etcd reads (pure: the reads are plain data).

import assert from "node:assert/strict";
import { isUsed } from "../../ipam/block_allocator.ts";
import { formatIp, parseCidr, parseIp } from "../../ipam/cidr.ts";
import type { BlockState, StoredAddress } from "../../ipam/etcd_values.ts";
import { keysFor } from "../../ipam/keys.ts";
import {
  absorbAddresses,
  addClaimedBlock,
  applyBlockState,
  newNodeState,
  type NodeState,
} from "../../ipam/node_state.ts";
import type { AddressRecord } from "../../ipam/records.ts";

const keys = keysFor("/coil/");
// A /29: an IPv4 block's last address is reserved (its pods' broadcast address), so offsets 1 to 3 are usable.
const V4 = parseCidr("10.1.0.0/29");
const V6 = parseCidr("fd00::/126");

function state(busy: string[] = []): NodeState & { events: Record<string, unknown>[]; changes: number } {
  const events: Record<string, unknown>[] = [];
  const s = Object.assign(newNodeState("n1", (e) => events.push(e), (k) => busy.includes(k)), {
    events,
    changes: 0,
  });
  s.listeners.push(() => s.changes++);
  return s;
}

function found(ip: string, containerId: string, problem?: string): StoredAddress {
  const address = parseIp(ip);
  const block = address.family === 4 ? V4 : V6;
  const record: AddressRecord = {
    network: "k8s",
    containerId,
    ifName: "eth0",
    podNamespace: "ns",
    podName: "p",
    podUid: "u",
    netns: "",
    node: "n1",
    pool: "default",
    createdAt: "2024-01-01T00:00:00Z",
  };
  const key = keys.address(block, address);
  return problem
    ? { key, block, ip: address, revision: "5", problem }
    : { key, block, ip: address, revision: "5", record };
}

function read(cidr = V4, node = "n1", addresses: StoredAddress[] = []): BlockState {
  const record = { node, pool: "default", claimedAt: "" };
  return {
    cidr,
    block: { pool: "default", cidr, key: keys.block("default", cidr), record, revision: "3" },
    addresses,
  };
}

Deno.test("absorbAddresses() groups the addresses of one attachment, IPv4 first, and marks them used", () => {
  const s = state();
  addClaimedBlock(s, { pool: "default", cidr: V4, revision: "2", addresses: [] });
  addClaimedBlock(s, { pool: "default", cidr: V6, revision: "2", addresses: [] });
  assert.equal(s.changes, 2);
  absorbAddresses(s, [found("fd00::1", "c1"), found("10.1.0.2", "c1"), found("10.1.0.3", "c2")]);
  const c1 = [...s.attachments.values()].find((e) => e.allocation.containerId === "c1")!;
  assert.deepEqual(c1.allocation.addresses.map((a) => formatIp(a.address)), ["10.1.0.2", "fd00::1"]);
  assert.equal(c1.stored.length, 2);
  assert.equal(s.attachments.size, 2);
  assert.ok(isUsed(s.blocks.get("10.1.0.0_29")!.allocator, 2));
  assert.ok(isUsed(s.blocks.get("fd00::_126")!.allocator, 1));
  // Reading the same keys again changes nothing.
  absorbAddresses(s, [found("10.1.0.2", "c1")]);
  assert.equal(c1.stored.length, 2);
});

Deno.test("absorbAddresses() reports bad keys and a second address per family, keeping addresses taken", () => {
  const s = state();
  addClaimedBlock(s, { pool: "default", cidr: V4, revision: "2", addresses: [] });
  absorbAddresses(s, [found("10.1.0.1", "c1"), found("10.1.0.2", "c1"), found("10.1.0.3", "x", "Corrupt")]);
  const allocator = s.blocks.get("10.1.0.0_29")!.allocator;
  assert.ok(isUsed(allocator, 1) && isUsed(allocator, 2) && isUsed(allocator, 3));
  assert.deepEqual(s.events.map((e) => e.event).filter((e) => e !== "block claimed"), [
    "second address for one attachment",
    "bad address key",
  ]);
  assert.equal(s.attachments.size, 1);
});

Deno.test("absorbAddresses() leaves attachments with a request in flight to that request", () => {
  const s = state(['["k8s","c1","eth0"]']);
  absorbAddresses(s, [found("10.1.0.1", "c1")]);
  assert.equal(s.attachments.size, 0);
});

Deno.test("applyBlockState() drops a block gone or taken, and adopts one only when loading", () => {
  const s = state();
  applyBlockState(s, read(V4, "n1", [found("10.1.0.1", "c1")]));
  assert.equal(s.blocks.size, 0, "not adopted outside loading");
  applyBlockState(s, read(V4, "n1", [found("10.1.0.1", "c1")]), true);
  assert.equal(s.blocks.get("10.1.0.0_29")?.revision, "3");
  assert.equal(s.attachments.size, 1);
  applyBlockState(s, read(V4, "n2"));
  assert.equal(s.blocks.size, 0);
  assert.ok(s.events.some((e) => e.event === "block lost" && e.owner === "n2"));
  addClaimedBlock(s, { pool: "default", cidr: V4, revision: "2", addresses: [] });
  const changes = s.changes;
  applyBlockState(s, { cidr: V4, addresses: [] });
  assert.equal(s.blocks.size, 0);
  assert.equal(s.changes, changes + 1);
});

Deno.test("notifyBlocksChanged() logs a failing listener and still calls the others", () => {
  const s = state();
  s.listeners.unshift(() => {
    throw new Error("boom");
  });
  addClaimedBlock(s, { pool: "default", cidr: V4, revision: "2", addresses: [] });
  assert.equal(s.changes, 1);
  assert.ok(s.events.some((e) => e.event === "blocks listener failed" && String(e.error).includes("boom")));
});
