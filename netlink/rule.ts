// Policy routing rules (`ip rule`): the daemon's `from all lookup <table>` rule for pod routes kept
// outside the main table (Coil v2 does this so that Calico cannot rewrite them).

import { type Family, formatPrefix, parsePrefix, type PrefixBytes } from "./ip_text.ts";
import {
  CREATE_EXCL,
  FRA_DST,
  FRA_IIFNAME,
  FRA_OIFNAME,
  FRA_PRIORITY,
  FRA_PROTOCOL,
  FRA_SRC,
  FRA_TABLE,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  RT_TABLE_UNSPEC,
  RTM_DELRULE,
  RTM_GETRULE,
  RTM_NEWRULE,
} from "./constants.ts";
import { FIB_RULE_HDR, fibRuleHdr } from "./headers.ts";
import {
  type AttrSchema,
  attrString,
  attrU32,
  attrU8,
  endMessage,
  type Message,
  newMessage,
  putAttr,
  putString,
  putStruct,
  putU32,
  putU8,
  readAttrs,
  readStruct,
  structSize,
} from "./message.ts";
import { addressFamily, ipFamily } from "./names.ts";
import type { NetlinkSocket } from "./socket.ts";

/** A rule that looks up `table`. */
export interface Rule {
  family: Family;
  table: number;
  priority: number;
  /** Source network (CIDR); absent means `from all`. */
  from?: string;
  /** Destination network (CIDR); absent means `to all`. */
  to?: string;
  /** Input interface name. */
  iif?: string;
  /** Output interface name. */
  oif?: string;
  /** Who installed it (`proto`), e.g. 30; the kernel reports 0 when unset. */
  protocol?: number;
}

/** What ruleList() returns; every field given narrows the result. */
export interface RuleFilter {
  family?: Family;
  table?: number;
  priority?: number;
}

const FIB_RULE_HDR_SIZE = structSize(FIB_RULE_HDR);
const RULE_SCHEMA: AttrSchema = {
  [FRA_DST]: "ip",
  [FRA_SRC]: "ip",
  [FRA_IIFNAME]: "string",
  [FRA_OIFNAME]: "string",
  [FRA_PRIORITY]: "u32",
  [FRA_TABLE]: "u32",
  [FRA_PROTOCOL]: "u8",
};

/**
 * Adds a rule: `ip [-6] rule add [from F] [to T] [iif I] [oif O] pref P lookup T [proto N]`.
 * Not idempotent. @throws {TypeError} for a malformed network; {NetlinkError} EEXIST when the same
 * rule exists (isExists()).
 */
export function ruleAdd(sock: NetlinkSocket, rule: Rule): void {
  sock.request(ruleMessage(RTM_NEWRULE, CREATE_EXCL, rule), { op: "add rule", object: describe(rule) });
}

/**
 * Deletes the rule matching every given field: `ip [-6] rule del … pref P lookup T`.
 * @throws {NetlinkError} ENOENT (isNotFound()) when none matches.
 */
export function ruleDel(sock: NetlinkSocket, rule: Rule): void {
  sock.request(ruleMessage(RTM_DELRULE, 0, rule), { op: "delete rule", object: describe(rule) });
}

/** Lists rules (both families unless `family` is given): `ip [-6] rule show`. */
export function ruleList(sock: NetlinkSocket, filter: RuleFilter = {}): Rule[] {
  const families: Family[] = filter.family === undefined ? [4, 6] : [filter.family];
  return families.flatMap((family) => {
    const w = newMessage(RTM_GETRULE, NLM_F_REQUEST | NLM_F_DUMP);
    // Strict dump checking accepts only the family: the kernel does not filter rules.
    putStruct(w, FIB_RULE_HDR, { family: addressFamily(family) });
    return sock.dump(endMessage(w), { op: "list", object: `IPv${family} rules` }, (message) => {
      const rule = parseRule(message);
      if (rule === undefined || rule.family !== family) return undefined;
      if (filter.table !== undefined && rule.table !== filter.table) return undefined;
      if (filter.priority !== undefined && rule.priority !== filter.priority) return undefined;
      return rule;
    });
  });
}

function parseNetwork(rule: Rule, text: string | undefined): PrefixBytes | undefined {
  if (text === undefined) return undefined;
  const cidr = parsePrefix(text);
  if (cidr.family !== rule.family) throw new TypeError(`Invalid rule: ${text} is not IPv${rule.family}`);
  return cidr;
}

function ruleMessage(type: number, flags: number, rule: Rule): Uint8Array {
  const src = parseNetwork(rule, rule.from);
  const dst = parseNetwork(rule, rule.to);
  const w = newMessage(type, NLM_F_REQUEST | flags);
  putStruct(
    w,
    FIB_RULE_HDR,
    fibRuleHdr({
      family: addressFamily(rule.family),
      srcLen: src?.length ?? 0,
      dstLen: dst?.length ?? 0,
      // The 8-bit field holds small tables only; FRA_TABLE always carries the full u32.
      table: rule.table < 256 ? rule.table : RT_TABLE_UNSPEC,
    }),
  );
  putU32(w, FRA_TABLE, rule.table);
  putU32(w, FRA_PRIORITY, rule.priority);
  if (src) putAttr(w, FRA_SRC, src.bytes);
  if (dst) putAttr(w, FRA_DST, dst.bytes);
  if (rule.iif !== undefined) putString(w, FRA_IIFNAME, rule.iif);
  if (rule.oif !== undefined) putString(w, FRA_OIFNAME, rule.oif);
  if (rule.protocol !== undefined) putU8(w, FRA_PROTOCOL, rule.protocol);
  return endMessage(w);
}

function describe(rule: Rule): string {
  return `from ${rule.from ?? "all"}${
    rule.to ? ` to ${rule.to}` : ""
  } pref ${rule.priority} lookup ${rule.table}`;
}

function readNetwork(bytes: Uint8Array | undefined, prefix: number, family: Family): string | undefined {
  if (bytes === undefined || prefix === 0) return undefined;
  if (bytes.length !== (family === 4 ? 4 : 16)) {
    throw new RangeError(`Malformed rule message: ${bytes.length} address bytes in family ${family}`);
  }
  return formatPrefix(bytes, prefix);
}

/** Decodes an RTM_NEWRULE message; undefined for other messages or families. @throws {RangeError}. */
export function parseRule(message: Message): Rule | undefined {
  if (message.type !== RTM_NEWRULE) return undefined;
  const header = readStruct(message.payload, FIB_RULE_HDR);
  const family = ipFamily(header.family);
  if (family === undefined) return undefined;
  const attrs = readAttrs(message.payload, RULE_SCHEMA, FIB_RULE_HDR_SIZE);
  const rule: Rule = {
    family,
    table: attrU32(attrs, FRA_TABLE) ?? header.table,
    priority: attrU32(attrs, FRA_PRIORITY) ?? 0,
  };
  const from = readNetwork(attrs.get(FRA_SRC), header.srcLen, family);
  if (from) rule.from = from;
  const to = readNetwork(attrs.get(FRA_DST), header.dstLen, family);
  if (to) rule.to = to;
  const iif = attrString(attrs, FRA_IIFNAME);
  if (iif) rule.iif = iif;
  const oif = attrString(attrs, FRA_OIFNAME);
  if (oif) rule.oif = oif;
  const protocol = attrU8(attrs, FRA_PROTOCOL);
  if (protocol) rule.protocol = protocol;
  return rule;
}
