// The export table against the kernel (root, throw-away namespace): sync() grows, shrinks and clears
// tables 119 and 1119 with IPv4 and IPv6 blocks, removes foreign routes, leaves other tables alone,
// round-trips 10,000 blocks, read back with `ip -j route`, and aggregates buddy blocks: merged as they
// come, split again as they go, with the table checked after each sync and a fabric's longest-prefix
// match checked while a block moves from one node to another.

import assert from "node:assert/strict";
import { aggregate } from "../../../ipam/aggregate.ts";
import { type Cidr, contains, formatCidr, parseCidr } from "../../../ipam/cidr.ts";
import { createRouteExporter } from "../../../daemon/nodenet/route_exporter.ts";
import { linkSetUp } from "../../../netlink/link.ts";
import type { NetlinkSocket } from "../../../netlink/socket.ts";
import { createNetns, openNetnsSocket, removeLeftoverNetns, type TestNetns } from "../../helpers/netns.ts";

await removeLeftoverNetns();

const LO = 1;
const PROTOCOL = 30;
const TABLES = [119, 1119];

interface IpRoute {
  type?: string;
  dst: string;
  dev?: string;
  gateway?: string;
  protocol?: string;
  metric?: number;
}

/** What `ip -j route show table T` lists, both families, as `dst dev proto [type]` lines, sorted. */
async function shown(ns: TestNetns, table: number): Promise<string[]> {
  const lines: string[] = [];
  for (const family of ["-4", "-6"]) {
    const routes = await ns.ipJson<IpRoute[]>([family, "route", "show", "table", String(table)]).catch(
      (err) => {
        // A table that never held a route of the family does not exist yet: it is empty.
        if (/FIB table does not exist/.test(err.message)) return [];
        throw err;
      },
    );
    for (const r of routes) {
      // ip prints host routes without their length.
      const dst = r.dst.includes("/") ? r.dst : `${r.dst}/${family === "-4" ? 32 : 128}`;
      lines.push(
        [r.type, dst, r.gateway && `via ${r.gateway}`, r.dev && `dev ${r.dev}`, `proto ${r.protocol}`]
          .filter(Boolean).join(" "),
      );
    }
  }
  return lines.sort();
}

/** The lines shown() gives for our routes of `blocks`. */
function ours(blocks: string[]): string[] {
  return blocks.map((b) => `${b} dev lo proto ${PROTOCOL}`).sort();
}

function cidrs(texts: string[]): Cidr[] {
  return texts.map((t) => parseCidr(t));
}

async function withNode(fn: (ns: TestNetns, sock: NetlinkSocket) => Promise<void>): Promise<void> {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  // Routes through a down device are refused (ENETDOWN); a node's lo is always up.
  linkSetUp(s.sock, LO);
  await fn(ns, s.sock);
}

Deno.test("sync() grows, shrinks and clears the table with IPv4 and IPv6 blocks", async (t) => {
  for (const table of TABLES) {
    await t.step(`table ${table}`, async () => {
      await withNode(async (ns, sock) => {
        const exporter = createRouteExporter({ sock, table, protocol: PROTOCOL });
        const first = ["10.0.0.0/27", "fd00:1::/123"];
        assert.deepEqual(exporter.sync(cidrs(first)), { added: 2, removed: 0 });
        assert.deepEqual(await shown(ns, table), ours(first));

        // No two of these are buddies: each is a route of its own.
        const grown = [
          ...first,
          "10.0.0.64/27",
          "10.9.0.0/16",
          "192.168.1.7/32",
          "fd00:1::40/123",
          "fd00:2::/64",
        ];
        assert.deepEqual(exporter.sync(cidrs(grown)), { added: 5, removed: 0 });
        assert.deepEqual(await shown(ns, table), ours(grown));

        const shrunk = ["10.0.0.64/27", "fd00:2::/64"];
        assert.deepEqual(exporter.sync(cidrs(shrunk)), { added: 0, removed: 5 });
        assert.deepEqual(await shown(ns, table), ours(shrunk));

        const swapped = ["10.0.0.128/27", "fd00:2::/64"];
        assert.deepEqual(exporter.sync(cidrs(swapped)), { added: 1, removed: 1 });
        assert.deepEqual(await shown(ns, table), ours(swapped));

        assert.deepEqual(exporter.sync([]), { added: 0, removed: 2 });
        assert.deepEqual(await shown(ns, table), []);
      });
    });
  }
});

Deno.test("sync() is idempotent: a second sync with the same blocks changes nothing", async (t) => {
  for (const table of TABLES) {
    await t.step(`table ${table}`, async () => {
      await withNode(async (ns, sock) => {
        const exporter = createRouteExporter({ sock, table, protocol: PROTOCOL });
        const blocks = ["10.0.0.0/27", "10.0.1.0/27", "fd00:1::/123"];
        assert.deepEqual(exporter.sync(cidrs(blocks)), { added: 3, removed: 0 });
        assert.deepEqual(exporter.sync(cidrs(blocks)), { added: 0, removed: 0 });
        // Order and duplicates in the input do not matter.
        assert.deepEqual(exporter.sync(cidrs([...blocks].reverse().concat(blocks))), {
          added: 0,
          removed: 0,
        });
        assert.deepEqual(await shown(ns, table), ours(blocks));
        assert.deepEqual(exporter.sync([]), { added: 0, removed: 3 });
        assert.deepEqual(exporter.sync([]), { added: 0, removed: 0 });
      });
    });
  }
});

Deno.test("sync() removes foreign routes from the table and replaces look-alikes of ours", async (t) => {
  for (const table of TABLES) {
    await t.step(`table ${table}`, async () => {
      await withNode(async (ns, sock) => {
        const T = String(table);
        await ns.exec(["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"]);
        await ns.exec(["ip", "link", "set", "va", "up"]);
        await ns.exec(["ip", "addr", "add", "192.0.2.1/24", "dev", "va"]);
        const foreign = [
          // Another protocol, for a block we own and for one we do not.
          ["10.0.0.0/27", "dev", "lo", "proto", "static"],
          ["10.7.0.0/24", "dev", "lo", "proto", "boot"],
          // Our protocol but another device, or a gateway.
          ["10.0.0.64/27", "dev", "va", "proto", String(PROTOCOL)],
          ["10.8.0.0/24", "via", "192.0.2.2", "proto", String(PROTOCOL)],
          // Our protocol but a blackhole, for a block we own and one we do not.
          ["blackhole", "10.0.0.128/27", "proto", String(PROTOCOL)],
          ["blackhole", "10.9.0.0/24", "proto", String(PROTOCOL)],
          ["unreachable", "10.10.0.0/24", "proto", String(PROTOCOL)],
        ];
        for (const route of foreign) await ns.exec(["ip", "route", "add", ...route, "table", T]);
        const foreign6 = [
          ["fd00:1::/123", "dev", "lo", "proto", "static"],
          ["fd00:7::/64", "dev", "va", "proto", String(PROTOCOL)],
          ["blackhole", "fd00:8::/64", "proto", String(PROTOCOL)],
          // Ours, twice: the same prefix at another metric.
          ["fd00:1::40/123", "dev", "lo", "proto", String(PROTOCOL), "metric", "5"],
          ["fd00:1::40/123", "dev", "lo", "proto", String(PROTOCOL), "metric", "6"],
        ];
        for (const route of foreign6) await ns.exec(["ip", "-6", "route", "add", ...route, "table", T]);
        const blocks = ["10.0.0.0/27", "10.0.0.64/27", "10.0.0.128/27", "fd00:1::/123", "fd00:1::40/123"];

        const exporter = createRouteExporter({ sock, table, protocol: PROTOCOL });
        // Added: our four look-alikes. Removed: 12 foreign routes minus the one kept duplicate.
        assert.deepEqual(exporter.sync(cidrs(blocks)), { added: 4, removed: 11 });
        const after = await shown(ns, table);
        assert.deepEqual(after, ours(blocks));
        assert.deepEqual(exporter.sync(cidrs(blocks)), { added: 0, removed: 0 });
      });
    });
  }
});

Deno.test("sync() leaves routes in other tables alone, ours included", async () => {
  await withNode(async (ns, sock) => {
    const P = String(PROTOCOL);
    await ns.exec(["ip", "route", "add", "10.0.0.0/27", "dev", "lo", "proto", P, "table", "120"]);
    await ns.exec(["ip", "route", "add", "10.5.0.0/24", "dev", "lo", "proto", P]);
    await ns.exec(["ip", "route", "add", "10.0.0.32/27", "dev", "lo", "proto", P, "table", "1119"]);
    await ns.exec(["ip", "-6", "route", "add", "fd00:1::/123", "dev", "lo", "proto", P, "table", "118"]);
    const before = {
      main: await shown(ns, 254),
      t118: await shown(ns, 118),
      t120: await shown(ns, 120),
      t1119: await shown(ns, 1119),
    };
    const exporter = createRouteExporter({ sock, table: 119, protocol: PROTOCOL });
    assert.deepEqual(exporter.sync(cidrs(["10.0.0.0/27", "fd00:1::/123"])), { added: 2, removed: 0 });
    assert.deepEqual(exporter.sync([]), { added: 0, removed: 2 });
    assert.deepEqual({
      main: await shown(ns, 254),
      t118: await shown(ns, 118),
      t120: await shown(ns, 120),
      t1119: await shown(ns, 1119),
    }, before);
    assert.deepEqual(before.t120, ours(["10.0.0.0/27"]));
  });
});

Deno.test("sync() repairs hand edits: a deleted route comes back, a foreign one goes", async () => {
  await withNode(async (ns, sock) => {
    const exporter = createRouteExporter({ sock, table: 119, protocol: PROTOCOL });
    const blocks = ["10.0.0.0/27", "10.0.0.64/27", "fd00:1::/123"];
    exporter.sync(cidrs(blocks));
    await ns.exec(["ip", "route", "del", "10.0.0.64/27", "table", "119"]);
    await ns.exec(["ip", "route", "add", "10.6.0.0/24", "dev", "lo", "table", "119"]);
    await ns.exec(["ip", "-6", "route", "del", "fd00:1::/123", "table", "119"]);
    assert.deepEqual(exporter.sync(cidrs(blocks)), { added: 2, removed: 1 });
    assert.deepEqual(await shown(ns, 119), ours(blocks));
  });
});

Deno.test("sync() fails, naming the route, when lo is down, and succeeds once it is up", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const exporter = createRouteExporter({ sock: s.sock, table: 119, protocol: PROTOCOL });
  assert.throws(() => exporter.sync(cidrs(["10.0.0.0/27"])), /10\.0\.0\.0\/27 table 119.*ENETDOWN/);
  linkSetUp(s.sock, LO);
  assert.deepEqual(exporter.sync(cidrs(["10.0.0.0/27"])), { added: 1, removed: 0 });
  assert.deepEqual(await shown(ns, 119), ours(["10.0.0.0/27"]));
});

Deno.test("sync() writes 10,000 blocks that ip reads back, then shrinks and clears them", async () => {
  await withNode(async (ns, sock) => {
    const exporter = createRouteExporter({ sock, table: 119, protocol: PROTOCOL });
    // 8,000 IPv4 /27s across 10.0.0.0/13 and 2,000 IPv6 /123s, every other block, so that none merge.
    const v4 = Array.from({ length: 8000 }, (_, i) => `10.${i >> 10}.${(i >> 2) & 0xff}.${(i & 3) * 64}/27`);
    const v6 = Array.from(
      { length: 2000 },
      (_, i) =>
        formatCidr(parseCidr(`fd00:5::${(i >> 10).toString(16)}:${((i & 1023) * 64).toString(16)}/123`)),
    );
    const blocks = [...v4, ...v6];
    assert.equal(new Set(blocks).size, 10_000);
    assert.deepEqual(exporter.sync(cidrs(blocks)), { added: 10_000, removed: 0 });
    assert.deepEqual(await shown(ns, 119), ours(blocks));
    assert.deepEqual(exporter.sync(cidrs(blocks)), { added: 0, removed: 0 });

    const half = blocks.filter((_, i) => i % 2 === 0);
    assert.deepEqual(exporter.sync(cidrs(half)), { added: 0, removed: 5_000 });
    assert.deepEqual(await shown(ns, 119), ours(half));

    assert.deepEqual(exporter.sync([]), { added: 0, removed: 5_000 });
    assert.deepEqual(await shown(ns, 119), []);
  });
});

/** Fails unless table `table` holds exactly the aggregate of `owned` and covers no address of `released`. */
async function assertExports(ns: TestNetns, table: number, owned: string[], released: string[]) {
  const present = await shown(ns, table);
  assert.deepEqual(present, ours(aggregate(cidrs(owned)).map(formatCidr)));
  for (const line of present) {
    const route = parseCidr(line.split(" ")[0]);
    for (const gone of cidrs(released)) {
      const ip = { family: gone.family, value: gone.base };
      assert.ok(!contains(route, ip), `${line} still covers the released ${formatCidr(gone)}`);
    }
  }
}

Deno.test("sync() merges buddy blocks as they come and splits the aggregate as they go", async (t) => {
  await withNode(async (ns, sock) => {
    const exporter = createRouteExporter({ sock, table: 119, protocol: PROTOCOL });
    const [A, B, C, D] = ["10.0.0.0/27", "10.0.0.32/27", "10.0.0.64/27", "10.0.0.96/27"];
    const [A6, B6] = ["fd00:1::/123", "fd00:1::20/123"];
    // [blocks owned, blocks released so far, routes added, routes removed]
    const steps: [string, string[], string[], number, number][] = [
      ["one block: its own route", [A, A6], [], 2, 0],
      ["its buddy: one /26 and one /122 replace them", [A, B, A6, B6], [], 2, 2],
      ["the next two: one /25", [A, B, C, D, A6, B6], [], 1, 1],
      ["B released: A and the C+D /26, never B", [A, C, D, A6, B6], [B], 2, 1],
      ["B6 released: A6 alone", [A, C, D, A6], [B, B6], 1, 1],
      ["B back: the /25 again", [A, B, C, D, A6], [B6], 1, 2],
      ["A and C released: B and D, not buddies, two routes", [B, D, A6], [A, C, B6], 2, 1],
      ["everything released", [], [A, B, C, D, A6, B6], 0, 3],
    ];
    for (const [name, owned, released, added, removed] of steps) {
      await t.step(name, async () => {
        assert.deepEqual(exporter.sync(cidrs(owned)), { added, removed });
        await assertExports(ns, 119, owned, released);
        assert.deepEqual(exporter.sync(cidrs(owned)), { added: 0, removed: 0 }, "idempotent");
      });
    }
  });
});

Deno.test("sync() keeps a moving block safe by longest-prefix match at the fabric", async (t) => {
  // One namespace holds node1's table (119), node2's (1119) and, in its main table, the fabric: each
  // node's routes via that node's address, as the router learns them over BGP.
  await withNode(async (ns, sock) => {
    await ns.exec(["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    await ns.exec(["ip", "link", "set", "va", "up"]);
    await ns.exec(["ip", "addr", "add", "192.0.2.1/24", "dev", "va"]);
    const nodes = [
      { name: "node1", table: 119, via: "192.0.2.11" },
      { name: "node2", table: 1119, via: "192.0.2.12" },
    ].map((n) => ({ ...n, exporter: createRouteExporter({ sock, table: n.table, protocol: PROTOCOL }) }));
    const relearn = async () => {
      await ns.exec(["ip", "route", "flush", "proto", "bird"]).catch(() => "");
      for (const node of nodes) {
        for (const line of await shown(ns, node.table)) {
          const dst = line.split(" ")[0];
          await ns.exec(["ip", "route", "add", dst, "via", node.via, "proto", "bird"]);
        }
      }
    };
    const nextHop = async (address: string) =>
      (await ns.ipJson<{ gateway?: string }[]>(["route", "get", address]))[0].gateway;
    const [node1, node2] = nodes;
    const [A, B] = ["10.0.0.0/27", "10.0.0.32/27"];

    await t.step("node1 owns A and B: the fabric sends both to node1 over one /26", async () => {
      node1.exporter.sync(cidrs([A, B]));
      await relearn();
      assert.deepEqual(await shown(ns, 119), ours(["10.0.0.0/26"]));
      assert.equal(await nextHop("10.0.0.5"), node1.via);
      assert.equal(await nextHop("10.0.0.40"), node1.via);
    });

    await t.step("B moves to node2 before node1 syncs: its /27 wins over node1's stale /26", async () => {
      node2.exporter.sync(cidrs([B]));
      await relearn();
      assert.deepEqual(await shown(ns, 119), ours(["10.0.0.0/26"]), "node1 has not synced yet");
      assert.equal(await nextHop("10.0.0.40"), node2.via);
      assert.equal(await nextHop("10.0.0.5"), node1.via);
    });

    await t.step("node1 syncs: it splits to A alone and nothing changes for the traffic", async () => {
      assert.deepEqual(node1.exporter.sync(cidrs([A])), { added: 1, removed: 1 });
      await relearn();
      await assertExports(ns, 119, [A], [B]);
      assert.equal(await nextHop("10.0.0.40"), node2.via);
      assert.equal(await nextHop("10.0.0.5"), node1.via);
    });
    node1.exporter.sync([]);
    node2.exporter.sync([]);
  });
});

Deno.test("sync() announces the blocks kept before it withdraws the aggregate it splits", async () => {
  await withNode(async (ns, sock) => {
    const exporter = createRouteExporter({ sock, table: 119, protocol: PROTOCOL });
    exporter.sync(cidrs(["10.0.0.0/27", "10.0.0.32/27", "10.0.0.64/27", "10.0.0.96/27"]));
    // The kernel's own account of the order: `ip monitor` prints each change as it is made.
    const monitor = new Deno.Command("ip", {
      args: ["-n", ns.name, "-o", "monitor", "route"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(exporter.sync(cidrs(["10.0.0.0/27", "10.0.0.64/27", "10.0.0.96/27"])), {
        added: 2,
        removed: 1,
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
    } finally {
      monitor.kill();
    }
    const events = new TextDecoder().decode((await monitor.output()).stdout).trim().split("\n")
      .map((line) =>
        `${line.startsWith("Deleted") ? "del" : "add"} ${/(\d+\.\d+\.\d+\.\d+\/\d+)/.exec(line)?.[1]}`
      );
    assert.deepEqual(events, ["add 10.0.0.0/27", "add 10.0.0.64/26", "del 10.0.0.0/25"]);
  });
});

Deno.test("sync() with the pool subnets as bounds writes no route wider than a subnet", async () => {
  await withNode(async (ns, sock) => {
    const exporter = createRouteExporter({ sock, table: 119, protocol: PROTOCOL });
    const blocks = Array.from({ length: 16 }, (_, i) => `10.0.${i >> 3}.${(i & 7) * 32}/27`);
    assert.deepEqual(exporter.sync(cidrs(blocks)), { added: 1, removed: 0 });
    assert.deepEqual(await shown(ns, 119), ours(["10.0.0.0/23"]));
    assert.deepEqual(exporter.sync(cidrs(blocks), cidrs(["10.0.0.0/24", "10.0.1.0/24"])), {
      added: 2,
      removed: 1,
    });
    assert.deepEqual(await shown(ns, 119), ours(["10.0.0.0/24", "10.0.1.0/24"]));
  });
});
