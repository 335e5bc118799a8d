// Route verbs against the kernel, compared with `ip -j route` (root, throw-away namespaces): tables
// above 255, protocol 30, `dev lo`, both families, filters, delete by scope, batches.

import assert from "node:assert/strict";
import { addrAdd } from "../../netlink/addr.ts";
import { RTPROT_BOOT } from "../../netlink/constants.ts";
import { isExists, isNotFound, NetlinkError } from "../../netlink/errors.ts";
import { linkAddVeth, linkSetUp } from "../../netlink/link.ts";
import {
  type Route,
  routeAdd,
  routeBatch,
  routeBatchBytes,
  routeDel,
  routeDump,
  routeDumpBytes,
  routeReplace,
} from "../../netlink/route.ts";
import type { NetlinkSocket } from "../../netlink/socket.ts";
import { createNetns, openNetnsSocket, removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";

await removeLeftoverNetns();

const LO = 1;
const COIL = 30;

interface IpRoute {
  type?: string;
  dst: string;
  dev?: string;
  gateway?: string;
  protocol?: string;
  scope?: string;
  metric?: number;
}

async function ipRoutes(ns: TestNetns, family: 4 | 6, table: number): Promise<IpRoute[]> {
  return await ns.ipJson<IpRoute[]>([`-${family}`, "route", "show", "table", String(table)]);
}

// A namespace whose lo is up: routes through a down device are refused (ENETDOWN).
async function withLoUp(fn: (ns: TestNetns, sock: NetlinkSocket) => void | Promise<void>): Promise<void> {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  linkSetUp(s.sock, LO);
  await fn(ns, s.sock);
}

Deno.test("routeAdd() adds dev lo routes in tables above 255 with protocol 30, IPv4 and IPv6", async () => {
  await withLoUp(async (ns, sock) => {
    routeAdd(sock, { dst: "10.0.0.0/27", oif: LO, table: 119, protocol: COIL });
    routeAdd(sock, { dst: "10.0.0.32/27", oif: LO, table: 1119, protocol: COIL });
    routeAdd(sock, { dst: "fd00:1::/64", oif: LO, table: 1119, protocol: COIL });
    assert.deepEqual(await ipRoutes(ns, 4, 119), [{
      dst: "10.0.0.0/27",
      dev: "lo",
      protocol: "30",
      flags: [],
    }]);
    assert.deepEqual(await ipRoutes(ns, 4, 1119), [{
      dst: "10.0.0.32/27",
      dev: "lo",
      protocol: "30",
      flags: [],
    }]);
    const [v6] = await ipRoutes(ns, 6, 1119);
    assert.deepEqual([v6.dst, v6.dev, v6.protocol], ["fd00:1::/64", "lo", "30"]);
    assert.deepEqual(routeDump(sock, { table: 1119 }), [
      { dst: "10.0.0.32/27", table: 1119, protocol: COIL, scope: "universe", type: "unicast", oif: LO },
      {
        dst: "fd00:1::/64",
        table: 1119,
        protocol: COIL,
        scope: "universe",
        type: "unicast",
        oif: LO,
        priority: v6.metric,
      },
    ]);
  });
});

Deno.test("routeAdd() adds gateway, scope link and blackhole routes as ip shows them", async () => {
  await withLoUp(async (ns, sock) => {
    const veth = linkAddVeth(sock, { name: "va", peerName: "vb" });
    linkSetUp(sock, veth.index);
    addrAdd(sock, { index: veth.index, address: "192.0.2.1", prefix: 24 });
    routeAdd(sock, { dst: "198.51.100.0/24", gateway: "192.0.2.2", table: 119, protocol: COIL, priority: 7 });
    routeAdd(sock, { dst: "10.1.0.5/32", oif: veth.index, table: 119, scope: "link" });
    routeAdd(sock, { dst: "203.0.113.0/24", type: "blackhole", table: 119 });
    const strip = (r: IpRoute) => ({ ...r, flags: undefined });
    assert.deepEqual((await ipRoutes(ns, 4, 119)).map(strip), [
      { dst: "10.1.0.5", dev: "va", scope: "link", flags: undefined },
      {
        dst: "198.51.100.0/24",
        gateway: "192.0.2.2",
        dev: "va",
        protocol: "30",
        metric: 7,
        flags: undefined,
      },
      { type: "blackhole", dst: "203.0.113.0/24", flags: undefined },
    ]);
    const dumped = routeDump(sock, { table: 119, family: 4 });
    assert.deepEqual(dumped.find((r) => r.dst === "198.51.100.0/24"), {
      dst: "198.51.100.0/24",
      table: 119,
      protocol: COIL,
      scope: "universe",
      type: "unicast",
      gateway: "192.0.2.2",
      oif: veth.index,
      priority: 7,
    });
    assert.equal(dumped.find((r) => r.dst === "10.1.0.5/32")?.scope, "link");
    assert.equal(dumped.find((r) => r.dst === "10.1.0.5/32")?.protocol, RTPROT_BOOT);
    assert.equal(dumped.find((r) => r.dst === "203.0.113.0/24")?.type, "blackhole");
  });
});

Deno.test("routeAdd() of an existing route throws isExists", async () => {
  await withLoUp((_ns, sock) => {
    const route: Route = { dst: "10.0.0.0/27", oif: LO, table: 119, protocol: COIL };
    routeAdd(sock, route);
    assert.throws(() => routeAdd(sock, route), (err) => {
      assert.ok(isExists(err));
      assert.equal(err.message, "netlink: failed to add route 10.0.0.0/27 table 119: EEXIST (File exists)");
      return true;
    });
  });
});

Deno.test("routeAdd() through a down device throws ENETDOWN with the kernel's reason", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  assert.throws(() => routeAdd(s.sock, { dst: "10.0.0.0/27", oif: LO, table: 119 }), (err) => {
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.code, "ENETDOWN");
    assert.match(err.extack ?? "", /not up/);
    return true;
  });
});

Deno.test("routeReplace() creates, then replaces the route of the same prefix", async () => {
  await withLoUp(async (ns, sock) => {
    routeReplace(sock, { dst: "10.0.0.0/27", oif: LO, table: 1119, protocol: COIL });
    routeReplace(sock, { dst: "10.0.0.0/27", type: "blackhole", table: 1119, protocol: 31 });
    assert.deepEqual(await ipRoutes(ns, 4, 1119), [
      { type: "blackhole", dst: "10.0.0.0/27", protocol: "31", flags: [] },
    ]);
  });
});

Deno.test("routeDel() without a scope deletes a scope link route (scope NOWHERE matches any)", async () => {
  await withLoUp(async (ns, sock) => {
    routeAdd(sock, { dst: "10.0.0.0/27", oif: LO, table: 119, scope: "link" });
    // The exact wrong scope does not match: this is what SCOPE_NOWHERE avoids.
    assert.throws(() => routeDel(sock, { dst: "10.0.0.0/27", table: 119, scope: "universe" }), isNotFound);
    routeDel(sock, { dst: "10.0.0.0/27", table: 119 });
    assert.deepEqual(await ipRoutes(ns, 4, 119), []);
  });
});

Deno.test("routeDel() with a protocol leaves other programs' routes alone", async () => {
  await withLoUp(async (ns, sock) => {
    routeAdd(sock, { dst: "10.0.0.0/27", oif: LO, table: 119, protocol: 31 });
    assert.throws(() => routeDel(sock, { dst: "10.0.0.0/27", table: 119, protocol: COIL }), isNotFound);
    assert.equal((await ipRoutes(ns, 4, 119)).length, 1);
  });
});

Deno.test("routeDel() of a missing route throws isNotFound (ESRCH), IPv4 and IPv6", async () => {
  await withLoUp((_ns, sock) => {
    for (const dst of ["10.9.0.0/24", "fd00:9::/64"]) {
      assert.throws(() => routeDel(sock, { dst, table: 119 }), (err) => {
        assert.ok(isNotFound(err));
        assert.equal(err.code, "ESRCH");
        return true;
      });
    }
  });
});

Deno.test("routeDump() filters by table, protocol, device and family", async () => {
  await withLoUp(async (ns, sock) => {
    const veth = linkAddVeth(sock, { name: "va", peerName: "vb" });
    linkSetUp(sock, veth.index);
    routeAdd(sock, { dst: "10.0.0.0/27", oif: LO, table: 119, protocol: COIL });
    routeAdd(sock, { dst: "10.0.0.32/27", oif: LO, table: 119, protocol: 31 });
    routeAdd(sock, { dst: "10.0.0.64/27", oif: veth.index, table: 119, protocol: COIL });
    routeAdd(sock, { dst: "fd00:1::/64", oif: LO, table: 119, protocol: COIL });
    routeAdd(sock, { dst: "10.0.1.0/27", oif: LO, table: 1119, protocol: COIL });
    const dsts = (routes: Route[]) => routes.map((r) => r.dst);
    assert.deepEqual(dsts(routeDump(sock, { table: 119 })), [
      "10.0.0.0/27",
      "10.0.0.32/27",
      "10.0.0.64/27",
      "fd00:1::/64",
    ]);
    assert.deepEqual(dsts(routeDump(sock, { table: 119, protocol: COIL })), [
      "10.0.0.0/27",
      "10.0.0.64/27",
      "fd00:1::/64",
    ]);
    assert.deepEqual(dsts(routeDump(sock, { table: 119, protocol: COIL, family: 4 })), [
      "10.0.0.0/27",
      "10.0.0.64/27",
    ]);
    const ip = await ns.ipJson<IpRoute[]>(["-4", "route", "show", "table", "119", "proto", "30"]);
    assert.deepEqual(ip.map((r) => r.dst), ["10.0.0.0/27", "10.0.0.64/27"]);
    assert.deepEqual(dsts(routeDump(sock, { table: 119, oif: veth.index })), ["10.0.0.64/27"]);
    assert.deepEqual(dsts(routeDump(sock, { table: 1119 })), ["10.0.1.0/27"]);
    assert.deepEqual(routeDump(sock, { table: 4000 }), []);
    const all = routeDump(sock, { family: 4 });
    assert.ok(all.some((r) => r.table === 255 && r.type === "local"));
    assert.ok(all.some((r) => r.table === 1119));
  });
});

Deno.test("routeAdd() rejects malformed routes before sending", async (t) => {
  await withLoUp(async (_ns, sock) => {
    const cases: [string, Route][] = [
      ["host bits in dst", { dst: "10.0.0.1/24", oif: LO, table: 119 }],
      ["a bad dst", { dst: "10.0.0/24", oif: LO, table: 119 }],
      ["a gateway of the other family", { dst: "10.0.0.0/24", gateway: "fd00::1", table: 119 }],
      ["an unknown type", { dst: "10.0.0.0/24", type: "wormhole" as Route["type"], table: 119 }],
    ];
    for (const [name, route] of cases) {
      await t.step(name, () => assert.throws(() => routeAdd(sock, route), TypeError));
    }
    assert.deepEqual(routeDump(sock, { table: 119 }), []);
  });
});

function blockRoutes(count: number): Route[] {
  return Array.from({ length: count }, (_, i) => ({
    dst: `10.${(i >> 11) & 255}.${(i >> 3) & 255}.${(i & 7) * 32}/27`,
    oif: LO,
    table: 119,
    protocol: COIL,
  }));
}

Deno.test("routeBatch() adds 10,000 routes, which a dump then shows, and deletes them", async () => {
  await withLoUp(async (ns, sock) => {
    const routes = blockRoutes(10_000);
    const added = routeBatch(sock, routes.map((route) => ({ op: "add", route })));
    assert.equal(added.filter((e) => e !== undefined).length, 0);
    const dumped = routeDump(sock, { table: 119, protocol: COIL });
    assert.equal(dumped.length, 10_000);
    assert.deepEqual(new Set(dumped.map((r) => r.dst)), new Set(routes.map((r) => r.dst)));
    assert.equal((await ipRoutes(ns, 4, 119)).length, 10_000);
    const deleted = routeBatch(sock, routes.map((route) => ({ op: "del", route })));
    assert.equal(deleted.filter((e) => e !== undefined).length, 0);
    assert.deepEqual(routeDump(sock, { table: 119 }), []);
  });
});

Deno.test("routeBatch() reports the one failing change at its index and applies the rest", async () => {
  await withLoUp(async (ns, sock) => {
    routeAdd(sock, { dst: "10.0.0.64/27", oif: LO, table: 1119, protocol: COIL });
    const results = routeBatch(sock, [
      { op: "add", route: { dst: "10.0.0.0/27", oif: LO, table: 1119, protocol: COIL } },
      { op: "add", route: { dst: "10.0.0.32/27", oif: LO, table: 1119, protocol: COIL } },
      { op: "add", route: { dst: "10.0.0.64/27", oif: LO, table: 1119, protocol: COIL } },
      { op: "del", route: { dst: "10.0.0.96/27", table: 1119 } },
      { op: "replace", route: { dst: "fd00:1::/64", oif: LO, table: 1119, protocol: COIL } },
    ]);
    assert.deepEqual(results.map((e) => e?.code), [undefined, undefined, "EEXIST", "ESRCH", undefined]);
    assert.equal(
      results[2]?.message,
      "netlink: failed to add route 10.0.0.64/27 table 1119: EEXIST (File exists)",
    );
    assert.match(
      results[3]?.message ?? "",
      /^netlink: failed to delete route 10\.0\.0\.96\/27 table 1119: ESRCH/,
    );
    assert.deepEqual((await ipRoutes(ns, 4, 1119)).map((r) => r.dst), [
      "10.0.0.0/27",
      "10.0.0.32/27",
      "10.0.0.64/27",
    ]);
    assert.equal((await ipRoutes(ns, 6, 1119)).length, 1);
  });
});

Deno.test("routeBatch() reports failures in every chunk of a large batch", async () => {
  await withLoUp((_ns, sock) => {
    const routes = blockRoutes(6_000);
    routeAdd(sock, routes[10]);
    routeAdd(sock, routes[5_990]);
    const results = routeBatch(sock, routes.map((route) => ({ op: "add", route })));
    const failed = results.flatMap((e, i) => e === undefined ? [] : [[i, e.code]]);
    assert.deepEqual(failed, [[10, "EEXIST"], [5_990, "EEXIST"]]);
    assert.equal(routeDump(sock, { table: 119 }).length, 6_000);
  });
});

Deno.test("routeBatchBytes() and routeDumpBytes() carry addresses as bytes, as ip shows them", async () => {
  await withLoUp(async (ns, sock) => {
    const v4 = { family: 4 as const, dst: new Uint8Array([10, 9, 0, 32]), dstLen: 27, oif: LO, table: 1119 };
    const v6 = {
      family: 6 as const,
      dst: new Uint8Array([0xfd, 0, 0, 9, ...new Array(12).fill(0)]),
      dstLen: 64,
    };
    const added = routeBatchBytes(sock, [
      { op: "add", route: { ...v4, protocol: COIL } },
      { op: "add", route: { ...v6, oif: LO, table: 1119, protocol: COIL } },
      { op: "add", route: { ...v4, protocol: COIL } },
    ]);
    assert.deepEqual(added.map((e) => e?.code), [undefined, undefined, "EEXIST"]);
    assert.equal(
      added[2]?.message,
      "netlink: failed to add route 10.9.0.32/27 table 1119: EEXIST (File exists)",
    );
    assert.deepEqual((await ipRoutes(ns, 4, 1119)).map((r) => [r.dst, r.protocol]), [["10.9.0.32/27", "30"]]);
    assert.deepEqual((await ipRoutes(ns, 6, 1119)).map((r) => r.dst), ["fd00:9::/64"]);
    const dumped = routeDumpBytes(sock, { table: 1119, protocol: COIL });
    assert.deepEqual(dumped.map((r) => [r.family, [...r.dst], r.dstLen, r.oif]), [
      [4, [...v4.dst], 27, LO],
      [6, [...v6.dst], 64, LO],
    ]);
    const deleted = routeBatchBytes(sock, dumped.map((route) => ({ op: "del", route })));
    assert.deepEqual(deleted, [undefined, undefined]);
    assert.deepEqual(routeDump(sock, { table: 1119 }), []);
  });
});
