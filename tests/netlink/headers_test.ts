// The family header layouts and constructors (pure, no root).

import assert from "node:assert/strict";
import {
  AF_INET,
  RT_SCOPE_NOWHERE,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTM_NEWROUTE,
  RTN_UNICAST,
  RTN_UNSPEC,
  RTPROT_BOOT,
  RTPROT_UNSPEC,
} from "../../netlink/constants.ts";
import {
  FIB_RULE_HDR,
  fibRuleHdr,
  IFADDRMSG,
  ifAddrMsg,
  IFINFOMSG,
  ifInfoMsg,
  rtDelMsg,
  RTMSG,
  rtMsg,
} from "../../netlink/headers.ts";
import {
  endMessage,
  newMessage,
  putStruct,
  readStruct,
  splitMessages,
  structSize,
} from "../../netlink/message.ts";

Deno.test("putStruct() and readStruct() round-trip every family header", async (t) => {
  const cases = [
    ["ifinfomsg", IFINFOMSG, ifInfoMsg({ family: AF_INET, type: 1, index: 7, flags: 0x1003, change: 1 }), 16],
    [
      "ifaddrmsg",
      IFADDRMSG,
      ifAddrMsg({ family: AF_INET, prefixLen: 24, flags: 2, scope: 253, index: 9 }),
      8,
    ],
    ["rtmsg", RTMSG, rtMsg({ family: AF_INET, dstLen: 27, table: 119, protocol: 30, flags: 0x100 }), 12],
    ["fib_rule_hdr", FIB_RULE_HDR, fibRuleHdr({ family: AF_INET, srcLen: 8, table: 116 }), 12],
  ] as const;
  for (const [name, layout, value, size] of cases) {
    await t.step(name, () => {
      assert.equal(structSize(layout), size);
      const w = newMessage(RTM_NEWROUTE, 0);
      putStruct(w, layout, value);
      const [message] = splitMessages(endMessage(w));
      assert.equal(message.payload.length, size);
      assert.deepEqual(readStruct(message.payload, layout), value);
    });
  }
});

Deno.test("rtMsg() defaults to main, boot, universe, unicast; rtDelMsg() to scope nowhere and any type", () => {
  const add = rtMsg();
  assert.deepEqual([add.table, add.protocol, add.scope, add.type], [
    RT_TABLE_MAIN,
    RTPROT_BOOT,
    RT_SCOPE_UNIVERSE,
    RTN_UNICAST,
  ]);
  const del = rtDelMsg({ table: 119 });
  assert.deepEqual([del.table, del.protocol, del.scope, del.type], [
    119,
    RTPROT_UNSPEC,
    RT_SCOPE_NOWHERE,
    RTN_UNSPEC,
  ]);
});
