// NetlinkSocket against the kernel, inside throw-away namespaces (root): request/ACK, errors with
// extack, dumps across datagrams, draining, batches with per-message errors, close.

import assert from "node:assert/strict";
import {
  IFF_UP,
  IFLA_EXT_MASK,
  IFLA_IFNAME,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  RTEXT_FILTER_SKIP_STATS,
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWLINK,
} from "../../netlink/constants.ts";
import { isDumpInterrupted, isNotFound, NetlinkError } from "../../netlink/errors.ts";
import { IFINFOMSG } from "../../netlink/headers.ts";
import {
  attrString,
  endMessage,
  type Message,
  nestEnd,
  nestStart,
  newMessage,
  putString,
  putStruct,
  putU32,
  readAttrs,
  structSize,
} from "../../netlink/message.ts";
import { NetlinkSocket } from "../../netlink/socket.ts";
import { createNetns, openNetnsSocket, removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";

await removeLeftoverNetns();

const context = { op: "test", object: "links" };

function linkName(message: Message): string | undefined {
  if (message.type !== RTM_NEWLINK) return undefined;
  return attrString(
    readAttrs(message.payload, { [IFLA_IFNAME]: "string" }, structSize(IFINFOMSG)),
    IFLA_IFNAME,
  );
}

function getLink(name: string): Uint8Array {
  const w = newMessage(RTM_GETLINK, NLM_F_REQUEST);
  putStruct(w, IFINFOMSG, {});
  putString(w, IFLA_IFNAME, name);
  return endMessage(w);
}

function dumpLinks(): Uint8Array {
  const w = newMessage(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
  putStruct(w, IFINFOMSG, {});
  putU32(w, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  return endMessage(w);
}

function delLink(name: string): Uint8Array {
  const w = newMessage(RTM_DELLINK, NLM_F_REQUEST);
  putStruct(w, IFINFOMSG, {});
  putString(w, IFLA_IFNAME, name);
  return endMessage(w);
}

function setLinkUp(name: string): Uint8Array {
  const w = newMessage(RTM_NEWLINK, NLM_F_REQUEST);
  putStruct(w, IFINFOMSG, { flags: IFF_UP, change: IFF_UP });
  putString(w, IFLA_IFNAME, name);
  return endMessage(w);
}

// A veth whose peer the kernel names.
function addVeth(name: string): Uint8Array {
  const w = newMessage(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
  putStruct(w, IFINFOMSG, {});
  putString(w, IFLA_IFNAME, name);
  const info = nestStart(w, IFLA_LINKINFO);
  putString(w, IFLA_INFO_KIND, "veth");
  nestEnd(w, info);
  return endMessage(w);
}

async function ipLinkNames(ns: TestNetns): Promise<string[]> {
  return (await ns.ipJson<{ ifname: string }[]>(["link", "show"])).map((l) => l.ifname).sort();
}

// `count` veth pairs tN/pN, made with one `ip -batch` so the fixture does not use the code under test.
async function addVeths(ns: TestNetns, count: number): Promise<void> {
  const file = await Deno.makeTempFile({ prefix: "coil-t-batch-" });
  try {
    const lines = Array.from({ length: count }, (_, i) => `link add t${i} type veth peer name p${i}`);
    await Deno.writeTextFile(file, lines.join("\n") + "\n");
    await ns.exec(["ip", "-batch", file]);
  } finally {
    await Deno.remove(file);
  }
}

Deno.test("NetlinkSocket opens inside the given namespace", async () => {
  await using ns = await createNetns();
  await addVeths(ns, 1);
  using s = openNetnsSocket(ns);
  const names = s.sock.dump(dumpLinks(), context, linkName).sort();
  assert.deepEqual(names, ["lo", "p0", "t0"]);
  assert.deepEqual(names, await ipLinkNames(ns));
});

Deno.test("request() returns the replies that come before the ACK, none for a bare ACK", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  assert.deepEqual(s.sock.request(getLink("lo"), context, linkName), ["lo"]);
  assert.deepEqual(s.sock.request(setLinkUp("lo"), context), []);
  const [lo] = await ns.ipJson<{ flags: string[] }[]>(["link", "show", "lo"]);
  assert.ok(lo.flags.includes("UP"));
});

Deno.test("request() throws the kernel's errno with its extack message", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  assert.throws(() => s.sock.request(getLink("nope0"), { op: "get", object: "link nope0" }), (err) => {
    assert.ok(err instanceof NetlinkError && isNotFound(err));
    assert.match(err.message, /^netlink: failed to get link nope0: ENODEV \(No such device\)/);
    return true;
  });
  assert.throws(() => s.sock.request(addVeth("a-name-longer-than-ifnamsiz"), context), (err) => {
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.code, "ERANGE");
    assert.match(err.extack ?? "", /policy/);
    assert.ok(err.message.endsWith(`: ${err.extack}`));
    return true;
  });
});

Deno.test("dump() reads a dump that spans several datagrams up to NLMSG_DONE", async () => {
  await using ns = await createNetns();
  await addVeths(ns, 60); // ~1 KiB per link: more than one 32 KiB datagram
  using s = openNetnsSocket(ns);
  const names = s.sock.dump(dumpLinks(), context, linkName).sort();
  assert.equal(names.length, 121);
  assert.deepEqual(names, await ipLinkNames(ns));
});

Deno.test("dump() drains the dump when parse throws, so the socket stays usable", async () => {
  await using ns = await createNetns();
  await addVeths(ns, 60);
  using s = openNetnsSocket(ns);
  assert.throws(() =>
    s.sock.dump(dumpLinks(), context, () => {
      throw new Error("parse failed");
    }), /parse failed/);
  // A dump left running would make this one fail with EBUSY, and a request would read stale replies.
  assert.equal(s.sock.dump(dumpLinks(), context, linkName).length, 121);
  assert.deepEqual(s.sock.request(getLink("t59"), context, linkName), ["t59"]);
});

Deno.test("dump() reports a dump the kernel flags as interrupted, after draining it", async () => {
  await using ns = await createNetns();
  await addVeths(ns, 60);
  using s = openNetnsSocket(ns);
  using other = new NetlinkSocket({ netnsFd: s.fd });
  let calls = 0;
  // Adding a link between two parts of the dump changes dev_base_seq: the kernel sets NLM_F_DUMP_INTR.
  const parse = (message: Message) => {
    if (calls++ === 0) other.request(addVeth("mid0"), context);
    return linkName(message);
  };
  assert.throws(() => s.sock.dump(dumpLinks(), { op: "dump", object: "links" }, parse), (err) => {
    assert.ok(isDumpInterrupted(err));
    assert.match(err.message, /^netlink: failed to dump links: EINTR .*retry/);
    return true;
  });
  assert.ok(calls >= 121, "the interrupted dump was still read to its end");
  assert.equal(s.sock.dump(dumpLinks(), context, linkName).length, 123);
});

Deno.test("batch() reports each message's error at its index and applies the others", async () => {
  await using ns = await createNetns();
  await addVeths(ns, 3);
  using s = openNetnsSocket(ns);
  const names = ["t0", "missing0", "t2", "t0"];
  const results = s.sock.batch(names.map(delLink), (i) => ({ op: "delete", object: `link ${names[i]}` }));
  assert.deepEqual(results.map((r) => r?.code), [undefined, "ENODEV", undefined, "ENODEV"]);
  assert.match(results[1]!.message, /^netlink: failed to delete link missing0: ENODEV/);
  assert.deepEqual(await ipLinkNames(ns), ["lo", "p1", "t1"]);
  assert.deepEqual(s.sock.batch([], () => context), []);
});

Deno.test("close() is idempotent and a closed socket throws EBADF", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  s.sock.close();
  s.sock.close();
  assert.throws(
    () => s.sock.request(getLink("lo"), context),
    (err) => err instanceof NetlinkError && err.code === "EBADF",
  );
});

Deno.test("NetlinkSocket in a missing netns fd throws instead of opening at home", () => {
  assert.throws(
    () => new NetlinkSocket({ netnsFd: 987654 }),
    (err) => err instanceof NetlinkError && err.code === "EBADF",
  );
});
