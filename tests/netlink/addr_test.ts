// Address verbs against the kernel, compared with `ip -j addr` (root, throw-away namespaces).

import assert from "node:assert/strict";
import { addrAdd, addrDel, addrList } from "../../netlink/addr.ts";
import { IFA_F_NODAD, IFA_F_PERMANENT } from "../../netlink/constants.ts";
import { isExists, NetlinkError } from "../../netlink/errors.ts";
import { linkAddVeth } from "../../netlink/link.ts";
import type { Scope } from "../../netlink/names.ts";
import { createNetns, openNetnsSocket, removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";

await removeLeftoverNetns();

interface IpAddrInfo {
  family: string;
  local: string;
  prefixlen: number;
  scope: string;
  nodad?: boolean;
}

async function ipAddrs(ns: TestNetns, dev: string): Promise<IpAddrInfo[]> {
  const [link] = await ns.ipJson<{ addr_info: IpAddrInfo[] }[]>(["addr", "show", "dev", dev]);
  return link.addr_info;
}

Deno.test("addrAdd() adds an IPv4 address with scope link", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const { index } = linkAddVeth(s.sock, { name: "va", peerName: "vb" });
  addrAdd(s.sock, { index, address: "169.254.1.1", prefix: 32, scope: "link" });
  const [ip] = await ipAddrs(ns, "va");
  assert.deepEqual([ip.family, ip.local, ip.prefixlen, ip.scope], ["inet", "169.254.1.1", 32, "link"]);
  assert.deepEqual(addrList(s.sock, { index }), [
    { index, family: 4, address: "169.254.1.1", prefix: 32, scope: "link", flags: IFA_F_PERMANENT },
  ]);
});

Deno.test("addrAdd() adds an IPv6 address with nodad", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const { index } = linkAddVeth(s.sock, { name: "va", peerName: "vb" });
  addrAdd(s.sock, { index, address: "fd00:0:0:0::1", prefix: 64, nodad: true });
  addrAdd(s.sock, { index, address: "fd00::2", prefix: 64 });
  const ip = (await ipAddrs(ns, "va")).filter((a) => a.local.startsWith("fd00"));
  assert.deepEqual(ip.map((a) => [a.local, a.prefixlen, a.scope, a.nodad ?? false]).sort(), [
    ["fd00::1", 64, "global", true],
    ["fd00::2", 64, "global", false],
  ]);
  const ours = addrList(s.sock, { index, family: 6 }).filter((a) => a.address.startsWith("fd00"));
  assert.deepEqual(ours.map((a) => [a.address, a.prefix, a.scope, (a.flags & IFA_F_NODAD) !== 0]).sort(), [
    ["fd00::1", 64, "universe", true],
    ["fd00::2", 64, "universe", false],
  ]);
});

Deno.test("addrList() filters by link and family", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const a = linkAddVeth(s.sock, { name: "va", peerName: "vb" });
  const b = linkAddVeth(s.sock, { name: "vc", peerName: "vd" });
  addrAdd(s.sock, { index: a.index, address: "10.0.0.1", prefix: 24 });
  addrAdd(s.sock, { index: a.index, address: "fd00::1", prefix: 64, nodad: true });
  addrAdd(s.sock, { index: b.index, address: "10.0.1.1", prefix: 24 });
  addrAdd(s.sock, { index: 1, address: "127.0.0.1", prefix: 8, scope: "host" });
  const key = (x: { address: string; prefix: number }) => `${x.address}/${x.prefix}`;
  assert.deepEqual(addrList(s.sock, { index: a.index }).map(key), ["10.0.0.1/24", "fd00::1/64"]);
  assert.deepEqual(addrList(s.sock, { index: a.index, family: 4 }).map(key), ["10.0.0.1/24"]);
  assert.deepEqual(addrList(s.sock, { family: 4 }).map(key).sort(), [
    "10.0.0.1/24",
    "10.0.1.1/24",
    "127.0.0.1/8",
  ]);
  const all = (await ns.ipJson<{ addr_info: IpAddrInfo[] }[]>(["addr", "show"])).flatMap((l) => l.addr_info);
  assert.deepEqual(addrList(s.sock).map(key).sort(), all.map((i) => `${i.local}/${i.prefixlen}`).sort());
});

Deno.test("addrAdd() of an address the link has throws isExists", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const { index } = linkAddVeth(s.sock, { name: "va", peerName: "vb" });
  addrAdd(s.sock, { index, address: "10.0.0.1", prefix: 24 });
  assert.throws(() => addrAdd(s.sock, { index, address: "10.0.0.1", prefix: 24 }), (err) => {
    assert.ok(isExists(err));
    assert.match(err.message, /^netlink: failed to add address 10\.0\.0\.1\/24 on link index \d+: EEXIST/);
    return true;
  });
});

Deno.test("addrDel() removes the address; a second delete throws EADDRNOTAVAIL", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const { index } = linkAddVeth(s.sock, { name: "va", peerName: "vb" });
  addrAdd(s.sock, { index, address: "10.0.0.1", prefix: 24 });
  addrAdd(s.sock, { index, address: "fd00::1", prefix: 64, nodad: true });
  addrDel(s.sock, { index, address: "10.0.0.1", prefix: 24 });
  addrDel(s.sock, { index, address: "fd00::1", prefix: 64 });
  assert.deepEqual((await ipAddrs(ns, "va")).filter((a) => a.scope === "global"), []);
  assert.throws(
    () => addrDel(s.sock, { index, address: "10.0.0.1", prefix: 24 }),
    (err) => err instanceof NetlinkError && err.code === "EADDRNOTAVAIL",
  );
});

Deno.test("addrAdd() rejects malformed input before sending", async (t) => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const cases: [string, Parameters<typeof addrAdd>[1], ErrorConstructor | RangeErrorConstructor][] = [
    ["a bad address", { index: 1, address: "10.0.0.256", prefix: 32 }, TypeError],
    ["a v4 prefix over 32", { index: 1, address: "10.0.0.1", prefix: 33 }, RangeError],
    ["a fractional prefix", { index: 1, address: "fd00::1", prefix: 6.5 }, RangeError],
    ["an unknown scope", { index: 1, address: "10.0.0.1", prefix: 32, scope: "galaxy" as Scope }, TypeError],
  ];
  for (const [name, spec, error] of cases) {
    await t.step(name, () => assert.throws(() => addrAdd(s.sock, spec), error));
  }
  assert.deepEqual(addrList(s.sock), []);
});
