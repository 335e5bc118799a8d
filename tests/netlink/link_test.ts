// Link verbs against the kernel, compared with `ip -j link` (root, throw-away namespaces).

import assert from "node:assert/strict";
import { isExists, isNotFound } from "../../netlink/errors.ts";
import {
  linkAddVeth,
  linkByIndex,
  linkByName,
  linkDel,
  linkList,
  linkSetAlias,
  linkSetMtu,
  linkSetUp,
} from "../../netlink/link.ts";
import { createNetns, openNetnsSocket, removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";

await removeLeftoverNetns();

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  address: string;
  flags: string[];
  ifalias?: string;
  linkinfo?: { info_kind: string };
}

async function ipLink(ns: TestNetns, name: string): Promise<IpLink | undefined> {
  const links = await ns.ipJson<IpLink[]>(["-d", "link", "show"]);
  return links.find((l) => l.ifname === name);
}

Deno.test("linkAddVeth() creates the peer directly in another namespace", async () => {
  await using host = await createNetns();
  await using pod = await createNetns();
  using h = openNetnsSocket(host);
  using p = openNetnsSocket(pod);
  const link = linkAddVeth(h.sock, { name: "vethhost0", peerName: "eth0", peerNetnsFd: p.fd, mtu: 1400 });
  const ipHost = await ipLink(host, "vethhost0");
  assert.deepEqual(link, {
    index: ipHost?.ifindex,
    name: "vethhost0",
    mtu: 1400,
    mac: ipHost?.address,
    up: false,
    kind: "veth",
  });
  assert.equal(ipHost?.linkinfo?.info_kind, "veth");
  const ipPeer = await ipLink(pod, "eth0");
  assert.equal(ipPeer?.mtu, 1400);
  assert.equal(ipPeer?.linkinfo?.info_kind, "veth");
  assert.equal(await ipLink(host, "eth0"), undefined);
  assert.equal(linkByName(p.sock, "eth0")?.index, ipPeer?.ifindex);
});

Deno.test("linkAddVeth() gives the peer its own MTU and keeps both ends local without a netns", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  linkAddVeth(s.sock, { name: "va", peerName: "vb", mtu: 9000, peerMtu: 1280 });
  assert.equal((await ipLink(ns, "va"))?.mtu, 9000);
  assert.equal((await ipLink(ns, "vb"))?.mtu, 1280);
});

Deno.test("linkAddVeth() of a taken name throws isExists", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  linkAddVeth(s.sock, { name: "va", peerName: "vb" });
  assert.throws(() => linkAddVeth(s.sock, { name: "va", peerName: "vc" }), (err) => {
    assert.ok(isExists(err));
    assert.match(err.message, /^netlink: failed to add veth va peer vc: EEXIST \(File exists\)/);
    return true;
  });
});

Deno.test("linkSetUp(), linkSetMtu() and linkSetAlias() change the link as ip shows it", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const { index } = linkAddVeth(s.sock, { name: "va", peerName: "vb" });
  linkSetUp(s.sock, index);
  linkSetMtu(s.sock, index, 1450);
  linkSetAlias(s.sock, index, "COIL:default:0123456789ab:eth0");
  const ip = await ipLink(ns, "va");
  assert.ok(ip?.flags.includes("UP"));
  assert.equal(ip?.mtu, 1450);
  assert.equal(ip?.ifalias, "COIL:default:0123456789ab:eth0");
  assert.deepEqual(linkByIndex(s.sock, index), {
    index,
    name: "va",
    mtu: 1450,
    mac: ip?.address,
    up: true,
    kind: "veth",
    alias: "COIL:default:0123456789ab:eth0",
  });
  linkSetUp(s.sock, index);
  linkSetAlias(s.sock, index, "");
  assert.equal((await ipLink(ns, "va"))?.ifalias, undefined);
  assert.equal(linkByIndex(s.sock, index)?.alias, undefined);
});

Deno.test("linkByName() and linkByIndex() return undefined for a missing link", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  assert.equal(linkByName(s.sock, "nope0"), undefined);
  assert.equal(linkByIndex(s.sock, 4242), undefined);
  assert.deepEqual(linkByName(s.sock, "lo"), {
    index: 1,
    name: "lo",
    mtu: 65536,
    mac: "00:00:00:00:00:00",
    up: false,
  });
});

Deno.test("linkList() lists the links ip lists", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  linkAddVeth(s.sock, { name: "va", peerName: "vb" });
  linkAddVeth(s.sock, { name: "vc", peerName: "vd" });
  const ours = linkList(s.sock).map((l) => [l.index, l.name, l.mtu, l.mac]);
  const ip = (await ns.ipJson<IpLink[]>(["link", "show"])).map((
    l,
  ) => [l.ifindex, l.ifname, l.mtu, l.address]);
  assert.deepEqual(ours, ip);
  assert.equal(ours.length, 5);
});

Deno.test("linkDel() deletes both ends of a veth, by name or index", async () => {
  await using host = await createNetns();
  await using pod = await createNetns();
  using h = openNetnsSocket(host);
  using p = openNetnsSocket(pod);
  linkAddVeth(h.sock, { name: "va", peerName: "eth0", peerNetnsFd: p.fd });
  linkDel(h.sock, "va");
  assert.equal(await ipLink(host, "va"), undefined);
  assert.equal(await ipLink(pod, "eth0"), undefined);
  const { index } = linkAddVeth(h.sock, { name: "vb", peerName: "eth0", peerNetnsFd: p.fd });
  linkDel(h.sock, index);
  assert.equal(await ipLink(host, "vb"), undefined);
});

Deno.test("linkDel() of a missing link throws isNotFound", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  assert.throws(() => linkDel(s.sock, "nope0"), (err) => {
    assert.ok(isNotFound(err));
    assert.equal(err.code, "ENODEV");
    assert.match(err.message, /^netlink: failed to delete link nope0: ENODEV/);
    return true;
  });
  assert.throws(() => linkDel(s.sock, 4242), isNotFound);
});
