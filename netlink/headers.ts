// The rtnetlink family headers that follow the nlmsghdr (ifinfomsg, ifaddrmsg, rtmsg, fib_rule_hdr):
// their layouts, and one constructor with defaults each.

import {
  AF_UNSPEC,
  FR_ACT_TO_TBL,
  RT_SCOPE_NOWHERE,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTN_UNICAST,
  RTN_UNSPEC,
  RTPROT_BOOT,
  RTPROT_UNSPEC,
} from "./constants.ts";
import type { StructOf } from "./message.ts";

// Field names and sizes in order; "" is padding. From linux/rtnetlink.h and linux/fib_rules.h.
export const IFINFOMSG = [
  ["family", 1],
  ["", 1],
  ["type", 2],
  ["index", 4],
  ["flags", 4],
  ["change", 4],
] as const;
export const IFADDRMSG = [
  ["family", 1],
  ["prefixLen", 1],
  ["flags", 1],
  ["scope", 1],
  ["index", 4],
] as const;
export const RTMSG = [
  ["family", 1],
  ["dstLen", 1],
  ["srcLen", 1],
  ["tos", 1],
  ["table", 1],
  ["protocol", 1],
  ["scope", 1],
  ["type", 1],
  ["flags", 4],
] as const;
export const FIB_RULE_HDR = [
  ["family", 1],
  ["dstLen", 1],
  ["srcLen", 1],
  ["tos", 1],
  ["table", 1],
  ["", 1],
  ["", 1],
  ["action", 1],
  ["flags", 4],
] as const;

export type IfInfoMsg = StructOf<typeof IFINFOMSG>;
export type IfAddrMsg = StructOf<typeof IFADDRMSG>;
export type RtMsg = StructOf<typeof RTMSG>;
export type FibRuleHdr = StructOf<typeof FIB_RULE_HDR>;

/** An ifinfomsg (`ip link`): family unspec, everything else 0 unless given. */
export function ifInfoMsg(fields: Partial<IfInfoMsg> = {}): IfInfoMsg {
  return { family: AF_UNSPEC, type: 0, index: 0, flags: 0, change: 0, ...fields };
}

/** An ifaddrmsg (`ip addr`): scope universe, no flags unless given. */
export function ifAddrMsg(fields: Partial<IfAddrMsg> = {}): IfAddrMsg {
  return { family: AF_UNSPEC, prefixLen: 0, flags: 0, scope: RT_SCOPE_UNIVERSE, index: 0, ...fields };
}

/** An rtmsg for adding (`ip route add`): main table, protocol boot, scope universe, unicast. */
export function rtMsg(fields: Partial<RtMsg> = {}): RtMsg {
  return {
    family: AF_UNSPEC,
    dstLen: 0,
    srcLen: 0,
    tos: 0,
    table: RT_TABLE_MAIN,
    protocol: RTPROT_BOOT,
    scope: RT_SCOPE_UNIVERSE,
    type: RTN_UNICAST,
    flags: 0,
    ...fields,
  };
}

/**
 * An rtmsg for deleting (`ip route del`): scope NOWHERE, type and protocol unspec, so they match any
 * route; RTM_DELROUTE with scope universe would only match universe-scoped routes (fib_table_delete()).
 */
export function rtDelMsg(fields: Partial<RtMsg> = {}): RtMsg {
  return rtMsg({ protocol: RTPROT_UNSPEC, scope: RT_SCOPE_NOWHERE, type: RTN_UNSPEC, ...fields });
}

/** A fib_rule_hdr (`ip rule`): action "lookup table". */
export function fibRuleHdr(fields: Partial<FibRuleHdr> = {}): FibRuleHdr {
  return {
    family: AF_UNSPEC,
    dstLen: 0,
    srcLen: 0,
    tos: 0,
    table: 0,
    action: FR_ACT_TO_TBL,
    flags: 0,
    ...fields,
  };
}
