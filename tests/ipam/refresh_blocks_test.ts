// refreshBlocks() runs when coild takes its node name back after a pause or partition, while the
// requests of that time are being served: a block this node is releasing then is not "lost" (which
// would log an error, count in coil_blocks_lost_total and make coild look for pods to disconnect).

import assert from "node:assert/strict";
import { createNodeIpam } from "../../ipam/node_ipam.ts";
import { gate, MemoryStore } from "../helpers/memory_store.ts";
import { request } from "./node_ipam_fixture.ts";

Deno.test("refreshBlocks() during a release of one of the node's blocks reports nothing lost", async () => {
  const store = new MemoryStore();
  // Blocks of 8: seven pods fill the first block, the eighth opens a second.
  store.put(store.keys.pool("default"), JSON.stringify({ subnets: ["10.1.0.0/24"], blockSizeBits: 3 }));
  const events: Record<string, unknown>[] = [];
  const ipam = await createNodeIpam({ store, node: "node1", log: (e) => events.push(e) });
  try {
    for (let i = 0; i < 8; i++) await ipam.allocate(request(`c${i}`));
    await ipam.settled();
    assert.equal(ipam.ownedBlocks().length, 2);
    // DELs empty the first block, whose release commits and answers only once the gate opens.
    const answer = gate();
    store.inject("releaseBlock", { kind: "delay", until: answer.until });
    const releases = Promise.all([0, 1, 2, 3, 4, 5, 6].map((i) => ipam.release("k8s", `c${i}`, "eth0")));
    while (!store.calls.includes("releaseBlock")) await new Promise((r) => setTimeout(r, 1));
    assert.deepEqual(await ipam.refreshBlocks(), []);
    answer.open();
    await releases;
    assert.equal(ipam.ownedBlocks().length, 1);
    assert.deepEqual(events.filter((e) => e.event === "block lost"), []);
    assert.equal(events.filter((e) => e.event === "block released").length, 1);
  } finally {
    await ipam.close();
  }
});

Deno.test("refreshBlocks() whose read predates a DEL does not bring the released attachment back", async () => {
  const store = new MemoryStore();
  store.put(store.keys.pool("default"), JSON.stringify({ subnets: ["10.1.0.0/24"], blockSizeBits: 3 }));
  const ipam = await createNodeIpam({ store, node: "node1" });
  try {
    await ipam.allocate(request("c1"));
    // The refresh reads the block now (c1 in it) and gets the answer only after c1's DEL.
    const answer = gate();
    store.inject("readBlock", { kind: "delay", until: answer.until });
    const refresh = ipam.refreshBlocks();
    await ipam.release("k8s", "c1", "eth0");
    answer.open();
    assert.deepEqual(await refresh, []);
    assert.equal(ipam.find("k8s", "c1", "eth0"), undefined, "the DEL'd attachment is known again");
    // A new ADD of c1 writes a key again rather than answering from memory.
    await ipam.allocate(request("c1"));
    assert.equal(store.keysUnder(store.keys.addresses()).length, 1);
  } finally {
    await ipam.close();
  }
});
