// Pure codec tests (no root): headers, attribute alignment and nesting, and the reader's size checks.

import assert from "node:assert/strict";
import {
  IFLA_IFNAME,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_MTU,
  NLM_F_ACK,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  RTM_NEWLINK,
  RTM_NEWROUTE,
} from "../../netlink/constants.ts";
import { RTMSG } from "../../netlink/headers.ts";
import {
  attrString,
  attrU16,
  attrU32,
  attrU8,
  endMessage,
  nestEnd,
  nestStart,
  newMessage,
  putAttr,
  putString,
  putU16,
  putU32,
  putU8,
  readAttrs,
  readStatus,
  readStruct,
  splitMessages,
  stampMessage,
} from "../../netlink/message.ts";

// Little-endian helpers for hand-written fixtures (x86-64 and arm64 hosts).
const u16 = (v: number) => [v & 0xff, v >> 8];
const u32 = (v: number) => [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24];

Deno.test("newMessage() and endMessage() encode an nlmsghdr with the final length", () => {
  const w = newMessage(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_CREATE);
  putU32(w, IFLA_MTU, 1500);
  assert.deepEqual(Array.from(endMessage(w)), [
    ...u32(24),
    ...u16(RTM_NEWLINK),
    ...u16(NLM_F_REQUEST | NLM_F_CREATE),
    ...u32(0),
    ...u32(0),
    ...u16(8),
    ...u16(IFLA_MTU),
    ...u32(1500),
  ]);
});

Deno.test("putU8() and putString() pad attributes to 4 bytes", () => {
  const w = newMessage(1, 0);
  putU8(w, 7, 0xab);
  putString(w, IFLA_IFNAME, "eth0");
  putU16(w, 9, 0x1234);
  const attrs = Array.from(endMessage(w).subarray(16));
  assert.deepEqual(attrs, [
    ...u16(5),
    ...u16(7),
    0xab,
    0,
    0,
    0,
    ...u16(9),
    ...u16(IFLA_IFNAME),
    ..."eth0".split("").map((c) => c.charCodeAt(0)),
    0,
    0,
    0,
    0,
    ...u16(6),
    ...u16(9),
    ...u16(0x1234),
    0,
    0,
  ]);
});

Deno.test("nestStart() and nestEnd() wrap attributes with NLA_F_NESTED and their total length", () => {
  const w = newMessage(RTM_NEWLINK, 0);
  const info = nestStart(w, IFLA_LINKINFO);
  putString(w, IFLA_INFO_KIND, "veth");
  const data = nestStart(w, IFLA_INFO_DATA);
  putU32(w, 1, 42);
  nestEnd(w, data);
  nestEnd(w, info);
  const bytes = endMessage(w);
  assert.deepEqual(Array.from(bytes.subarray(16, 20)), [...u16(4 + 12 + 12), ...u16(IFLA_LINKINFO | 0x8000)]);
  const outer = readAttrs(bytes.subarray(16), { [IFLA_LINKINFO]: "nested" });
  const inner = readAttrs(outer.get(IFLA_LINKINFO)!, {
    [IFLA_INFO_KIND]: "string",
    [IFLA_INFO_DATA]: "nested",
  });
  assert.equal(attrString(inner, IFLA_INFO_KIND), "veth");
  assert.equal(attrU32(readAttrs(inner.get(IFLA_INFO_DATA)!, { 1: "u32" }), 1), 42);
});

Deno.test("readStruct() rejects a payload shorter than the header", () => {
  assert.throws(() => readStruct(new Uint8Array(11), RTMSG), RangeError);
});

Deno.test("newMessage() writers throw past their buffer and beyond 64 KiB attributes", () => {
  const w = newMessage(1, 0, 32);
  putU32(w, 1, 1);
  assert.throws(() => putAttr(w, 2, new Uint8Array(16)), /exceed its 32-byte buffer/);
  assert.equal(w.length, 24);
  const big = newMessage(1, 0, 70_000);
  assert.throws(() => putAttr(big, 1, new Uint8Array(65_532)), /too large/);
  const nest = nestStart(big, 2);
  putAttr(big, 3, new Uint8Array(40_000));
  putAttr(big, 3, new Uint8Array(26_000));
  assert.throws(() => nestEnd(big, nest), /Nested netlink attribute too large/);
});

Deno.test("readAttrs() reads known attributes, masks flags and skips unknown ones", () => {
  const w = newMessage(1, 0);
  putU32(w, 1 | 0x4000, 5);
  putU8(w, 2, 9);
  putU16(w, 3, 77);
  putString(w, 99, "ignored");
  const attrs = readAttrs(endMessage(w), { 1: "u32", 2: "u8", 3: "u16" }, 16);
  assert.deepEqual([attrU32(attrs, 1), attrU8(attrs, 2), attrU16(attrs, 3)], [5, 9, 77]);
  assert.equal(attrs.has(99), false);
});

Deno.test("readAttrs() rejects malformed attributes", async (t) => {
  const cases: [string, number[], RegExp][] = [
    ["truncated (nla_len past the end)", [...u16(12), ...u16(1), ...u32(5)], /length 12 with 8 bytes left/],
    ["nla_len below the header", [...u16(3), ...u16(1), ...u32(5)], /length 3/],
    ["leftover bytes", [...u16(8), ...u16(1), ...u32(5), 0, 0], /2 leftover bytes/],
    ["oversized u32", [...u16(12), ...u16(1), ...u32(5), ...u32(0)], /8 bytes, expected 4/],
    ["undersized u32", [...u16(6), ...u16(1), 1, 2, 0, 0], /2 bytes, expected 4/],
    ["5-byte address", [...u16(9), ...u16(2), 10, 0, 0, 1, 9, 0, 0, 0], /5 bytes, expected 4 or 16/],
  ];
  for (const [name, bytes, error] of cases) {
    await t.step(name, () => {
      assert.throws(() => readAttrs(new Uint8Array(bytes), { 1: "u32", 2: "ip" }), error);
    });
  }
});

Deno.test("splitMessages() splits a datagram and rejects bad lengths", () => {
  const a = newMessage(RTM_NEWLINK, 0);
  putU8(a, 1, 1);
  const b = newMessage(NLMSG_DONE, 2);
  const one = endMessage(a), two = endMessage(b);
  const datagram = new Uint8Array([...one, ...two]);
  const messages = splitMessages(datagram);
  assert.deepEqual(messages.map((m) => [m.type, m.flags, m.payload.length]), [[RTM_NEWLINK, 0, 8], [
    NLMSG_DONE,
    2,
    0,
  ]]);
  assert.throws(() => splitMessages(datagram.subarray(0, 20)), /length 24 with 20 bytes left/);
  assert.throws(() => splitMessages(datagram.subarray(0, 30)), /6 leftover bytes/);
  assert.throws(
    () => splitMessages(new Uint8Array([...u32(8), ...new Array(12).fill(0)])),
    /length 8 with 16/,
  );
});

Deno.test("stampMessage() sets the sequence number and sets or clears NLM_F_ACK", () => {
  const message = endMessage(newMessage(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL));
  stampMessage(message, 0xfffffffe, false);
  let [m] = splitMessages(message);
  assert.deepEqual([m.seq, m.flags], [0xfffffffe, NLM_F_REQUEST | NLM_F_EXCL]);
  stampMessage(message, 3, true);
  [m] = splitMessages(message);
  assert.deepEqual([m.seq, m.flags], [3, NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL]);
});

function statusMessage(type: number, flags: number, payload: number[]) {
  return splitMessages(
    new Uint8Array([
      ...u32(16 + payload.length),
      ...u16(type),
      ...u16(flags),
      ...u32(1),
      ...u32(2),
      ...payload,
    ]),
  )[0];
}

const EXTACK = [...u16(4 + 9), ...u16(1), ..."bad thing".split("").map((c) => c.charCodeAt(0)), 0, 0, 0];

Deno.test("readStatus() reads errno and extack from NLMSG_ERROR and NLMSG_DONE", async (t) => {
  const echoed = [...u32(20), ...u16(RTM_NEWROUTE), ...u16(5), ...u32(1), ...u32(0), 1, 2, 3, 4];
  const cases = [
    ["ACK", statusMessage(NLMSG_ERROR, NLM_F_CAPPED, [...u32(0), ...echoed.slice(0, 16)]), { errno: 0 }],
    [
      "capped error with extack",
      statusMessage(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, [
        ...u32(-17 >>> 0),
        ...echoed.slice(0, 16),
        ...EXTACK,
      ]),
      { errno: 17, extack: "bad thing" },
    ],
    [
      "error echoing the whole request",
      statusMessage(NLMSG_ERROR, NLM_F_ACK_TLVS, [...u32(-22 >>> 0), ...echoed, ...EXTACK]),
      { errno: 22, extack: "bad thing" },
    ],
    ["DONE", statusMessage(NLMSG_DONE, 2, u32(0)), { errno: 0 }],
    ["DONE with error", statusMessage(NLMSG_DONE, 2 | NLM_F_ACK_TLVS, [...u32(-2 >>> 0), ...EXTACK]), {
      errno: 2,
      extack: "bad thing",
    }],
  ] as const;
  for (const [name, message, status] of cases) {
    await t.step(name, () => assert.deepEqual(readStatus(message), status));
  }
  await t.step("short error", () => {
    assert.throws(() => readStatus(statusMessage(NLMSG_ERROR, 0, [0, 0])), RangeError);
  });
});
