// Pure codec tests (no root) of routes in byte form: the one-pass encoder writes what the generic
// message writer writes, the decoder reads it back, and malformed routes or messages are refused.

import assert from "node:assert/strict";
import {
  CREATE_EXCL,
  NLM_F_REQUEST,
  RT_SCOPE_LINK,
  RT_SCOPE_NOWHERE,
  RTA_DST,
  RTA_GATEWAY,
  RTA_OIF,
  RTA_PRIORITY,
  RTA_TABLE,
  RTM_DELROUTE,
  RTM_NEWROUTE,
  RTN_UNICAST,
  RTN_UNSPEC,
} from "../../netlink/constants.ts";
import { rtDelMsg, RTMSG, rtMsg } from "../../netlink/headers.ts";
import { endMessage, newMessage, putAttr, putStruct, putU32, splitMessages } from "../../netlink/message.ts";
import { decodeRoute, encodeRoute, type RouteBytes } from "../../netlink/route_wire.ts";

const V4 = new Uint8Array([10, 1, 2, 32]);
const GW4 = new Uint8Array([169, 254, 1, 1]);
const V6 = new Uint8Array([0xfd, 0, 0, 1, ...new Array(12).fill(0)]);

Deno.test("encodeRoute() writes the bytes of the generic writer, add and delete, table above 255", () => {
  const route: RouteBytes = {
    family: 4,
    dst: V4,
    dstLen: 27,
    gateway: GW4,
    oif: 7,
    table: 1119,
    protocol: 30,
    scope: RT_SCOPE_LINK,
    priority: 5,
  };
  for (const del of [false, true]) {
    const w = newMessage(del ? RTM_DELROUTE : RTM_NEWROUTE, NLM_F_REQUEST | (del ? 0 : CREATE_EXCL));
    const fields = { family: 2, dstLen: 27, table: 0, protocol: 30, scope: RT_SCOPE_LINK };
    putStruct(w, RTMSG, del ? rtDelMsg(fields) : rtMsg(fields));
    putAttr(w, RTA_DST, V4);
    putU32(w, RTA_TABLE, 1119);
    putAttr(w, RTA_GATEWAY, GW4);
    putU32(w, RTA_OIF, 7);
    putU32(w, RTA_PRIORITY, 5);
    assert.deepEqual(encodeRoute(del ? "del" : "add", route), endMessage(w));
  }
});

Deno.test("encodeRoute() defaults: a delete matches any protocol, scope and type", () => {
  const [message] = splitMessages(encodeRoute("del", { family: 6, dst: V6, dstLen: 64 }));
  assert.deepEqual([...message.payload.subarray(0, 8)], [10, 64, 0, 0, 254, 0, RT_SCOPE_NOWHERE, RTN_UNSPEC]);
});

Deno.test("decodeRoute() reads back what encodeRoute() wrote, IPv4 and IPv6", () => {
  const routes: RouteBytes[] = [
    { family: 4, dst: V4, dstLen: 27, table: 119, protocol: 30, scope: 0, type: RTN_UNICAST, oif: 1 },
    { family: 6, dst: V6, dstLen: 64, table: 1119, protocol: 3, scope: 0, type: RTN_UNICAST, priority: 9 },
    {
      family: 4,
      dst: new Uint8Array(4),
      dstLen: 0,
      table: 254,
      protocol: 3,
      scope: 0,
      type: 1,
      gateway: GW4,
    },
  ];
  for (const route of routes) {
    const [message] = splitMessages(encodeRoute("replace", route));
    assert.deepEqual(decodeRoute(message), route);
  }
});

Deno.test("encodeRoute() refuses malformed routes", () => {
  const cases: [string, RouteBytes][] = [
    ["host bits set", { family: 4, dst: new Uint8Array([10, 0, 0, 1]), dstLen: 24 }],
    ["host bits in a partial byte", { family: 4, dst: new Uint8Array([10, 0, 0, 16]), dstLen: 27 }],
    ["a prefix too long", { family: 4, dst: V4, dstLen: 33 }],
    ["an IPv6 address in an IPv4 route", { family: 4, dst: V6, dstLen: 64 }],
    ["a gateway of the other family", { family: 6, dst: V6, dstLen: 64, gateway: GW4 }],
  ];
  for (const [name, route] of cases) assert.throws(() => encodeRoute("add", route), TypeError, name);
});

Deno.test("decodeRoute() refuses an address of the wrong size and skips other families", () => {
  const w = newMessage(RTM_NEWROUTE, 0);
  putStruct(w, RTMSG, rtMsg({ family: 10, dstLen: 64 }));
  putAttr(w, RTA_DST, V4);
  assert.throws(() => decodeRoute(splitMessages(endMessage(w))[0]), /4-byte address in an IPv6 route/);
  const bridge = newMessage(RTM_NEWROUTE, 0);
  putStruct(bridge, RTMSG, rtMsg({ family: 7 }));
  assert.equal(decodeRoute(splitMessages(endMessage(bridge))[0]), undefined);
});
