// netlink's address text codec agrees with ipam/cidr.ts (the parser everything else validates with) on
// valid and invalid inputs alike, and never needs BigInt.

import assert from "node:assert/strict";
import * as cidr from "../../ipam/cidr.ts";
import { formatIp, formatPrefix, parseIp, parsePrefix } from "../../netlink/ip_text.ts";

const ADDRESSES = [
  "0.0.0.0",
  "10.64.0.1",
  "255.255.255.255",
  "169.254.1.1",
  "::",
  "::1",
  "fe80::1",
  "2001:db8::",
  "2001:DB8:0:0:1:0:0:1",
  "1:0:0:2:0:0:0:3",
  "::ffff:10.0.0.1",
  "1:2:3:4:5:6:7:8",
  "1:2:3:4:5:6:1.2.3.4",
];

const NOT_ADDRESSES = [
  "",
  "10.0.0",
  "10.0.0.256",
  "010.0.0.1",
  "10.0.0.1 ",
  "0x1.0.0.1",
  "1:2:3:4:5:6:7:8:9",
  "1::2::3",
  "1.2.3.4::",
  "12345::",
  "::g",
  "1:2:3:4:5:6:7::8",
];

Deno.test("parseIp/formatIp agree with ipam/cidr.ts", () => {
  for (const text of ADDRESSES) {
    const ours = parseIp(text);
    const theirs = cidr.parseIp(text);
    assert.equal(ours.family, theirs.family, text);
    assert.deepEqual(ours.bytes, cidr.ipToBytes(theirs), text);
    assert.equal(formatIp(ours.bytes), cidr.formatIp(theirs), text);
  }
  for (const text of NOT_ADDRESSES) {
    assert.throws(() => parseIp(text), { name: "TypeError", message: `Invalid IP address: "${text}"` }, text);
    assert.equal(cidr.tryParseIp(text), undefined, text);
  }
});

Deno.test("formatIp agrees with ipam/cidr.ts on every zero-run shape of IPv6", () => {
  // Each of the 256 patterns of zero/non-zero groups, so the longest-run choice (RFC 5952) is covered.
  for (let pattern = 0; pattern < 256; pattern++) {
    const bytes = new Uint8Array(16);
    for (let g = 0; g < 8; g++) if (pattern & (1 << g)) bytes[2 * g + 1] = g + 1;
    assert.equal(formatIp(bytes), cidr.formatIp(cidr.ipFromBytes(bytes)), `pattern ${pattern}`);
  }
});

Deno.test("parsePrefix: networks only, the same errors as ipam/cidr.ts", () => {
  for (const text of ["10.0.0.0/8", "10.64.0.32/27", "0.0.0.0/0", "10.0.0.1/32", "2001:db8::/48", "::/0"]) {
    const ours = parsePrefix(text);
    const theirs = cidr.parseCidr(text);
    assert.equal(ours.length, theirs.prefix, text);
    assert.deepEqual(ours.bytes, cidr.ipToBytes({ family: theirs.family, value: theirs.base }), text);
    assert.equal(formatPrefix(ours.bytes, ours.length), cidr.formatCidr(theirs), text);
  }
  for (
    const text of [
      "10.0.0.1/24",
      "10.64.0.33/27",
      "2001:db8::1/64",
      "10.0.0.0/33",
      "10.0.0.0",
      "::/129",
      "a/1",
    ]
  ) {
    const theirs = (() => {
      try {
        cidr.parseCidr(text);
      } catch (err) {
        return (err as Error).message;
      }
    })();
    assert.throws(() => parsePrefix(text), { name: "TypeError", message: theirs }, text);
  }
});

Deno.test("parsePrefix clears exactly the host bits at every length", () => {
  for (let length = 0; length <= 32; length++) {
    const text = `255.255.255.255/${length}`;
    if (length === 32) {
      assert.equal(formatPrefix(parsePrefix(text).bytes, 32), text);
      continue;
    }
    const network = cidr.formatCidr(cidr.parseCidr(text, { strict: false }));
    assert.throws(() => parsePrefix(text), {
      message: `Invalid CIDR "${text}": host bits set, did you mean "${network}"?`,
    });
  }
});
