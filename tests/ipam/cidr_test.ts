// Strict parsing and BigInt maths of ipam/cidr.ts, including the inputs std's isIPv4 wrongly accepts.

import assert from "node:assert/strict";
import {
  blockAt,
  blockCount,
  blockOf,
  type Cidr,
  cidrSize,
  contains,
  familyBits,
  formatCidr,
  formatIp,
  ipFromBytes,
  ipToBytes,
  nthAddress,
  offsetOf,
  overlaps,
  parseCidr,
  parseIp,
  tryParseCidr,
  tryParseIp,
} from "../../ipam/cidr.ts";

const V4_GOOD: [string, bigint][] = [
  ["0.0.0.0", 0n],
  ["255.255.255.255", 0xffffffffn],
  ["10.1.2.3", 0x0a010203n],
  ["192.168.0.1", 0xc0a80001n],
  ["1.0.0.0", 0x01000000n],
];

Deno.test("tryParseIp() reads dotted-decimal IPv4", async (t) => {
  for (const [text, value] of V4_GOOD) {
    await t.step(text, () => assert.deepEqual(tryParseIp(text), { family: 4, value }));
  }
});

// Every one of these passes a Number()-based octet check (std's isIPv4) or a loose split.
const V4_BAD = [
  "01.1.1.1",
  "1.1.1.01",
  "1..2.3",
  "0x10.1.1.1",
  "1e2.0.0.1",
  " 1.2.3.4",
  "1.2.3.4 ",
  "1.2.3.4\n",
  "+1.2.3.4",
  "-1.2.3.4",
  "1.2.3.4.",
  ".1.2.3.4",
  "1.2.3",
  "1.2.3.4.5",
  "256.0.0.0",
  "1.2.3.999",
  "1.2.3.1000",
  "1.2.3.١",
  "1.2.3.0b1",
  "1.2.3.",
  "",
  "1.2.3.4/32",
];

Deno.test("tryParseIp() refuses malformed IPv4, including std isIPv4's false positives", async (t) => {
  for (const text of V4_BAD) {
    await t.step(JSON.stringify(text), () => assert.equal(tryParseIp(text), undefined));
  }
});

const V6_GOOD: [string, bigint][] = [
  ["::", 0n],
  ["::1", 1n],
  ["1::", 1n << 112n],
  ["fd00::", 0xfd00n << 112n],
  ["FD00::AB", (0xfd00n << 112n) | 0xabn],
  ["2001:db8:0:0:0:0:0:1", (0x20010db8n << 96n) | 1n],
  ["2001:0db8:0000:0000:0000:0000:0000:0001", (0x20010db8n << 96n) | 1n],
  ["1:2:3:4:5:6:7:8", 0x00010002000300040005000600070008n],
  ["1:2:3:4:5:6:7::", 0x00010002000300040005000600070000n],
  ["::2:3:4:5:6:7:8", 0x00000002000300040005000600070008n],
  ["::ffff:1.2.3.4", 0xffff01020304n],
  ["::1.2.3.4", 0x01020304n],
  ["64:ff9b::192.0.2.33", (0x0064ff9bn << 96n) | 0xc0000221n],
  ["1:2:3:4:5:6:1.2.3.4", 0x00010002000300040005000601020304n],
];

Deno.test("tryParseIp() reads IPv6 with ::, leading zeros and embedded IPv4", async (t) => {
  for (const [text, value] of V6_GOOD) {
    await t.step(text, () => assert.deepEqual(tryParseIp(text), { family: 6, value }));
  }
});

const V6_BAD = [
  ":::",
  "1:::2",
  "1::2::3",
  ":1:2:3:4:5:6:7",
  "1:2:3:4:5:6:7:",
  "1:2:3:4:5:6:7",
  "1:2:3:4:5:6:7:8:9",
  "1:2:3:4:5:6:7::8",
  "::1:2:3:4:5:6:7:8",
  "12345::",
  "g::",
  "fe80::1%eth0",
  " ::1",
  "::1 ",
  "1.2.3.4::",
  "1.2.3.4::5",
  "::1.2.3.4:5",
  "::01.2.3.4",
  "::1.2.3",
  "::256.1.1.1",
  "1:2:3:4:5:6:7:1.2.3.4",
  "[::1]",
  "::/64",
  "0x1::",
];

Deno.test("tryParseIp() refuses malformed IPv6", async (t) => {
  for (const text of V6_BAD) {
    await t.step(JSON.stringify(text), () => assert.equal(tryParseIp(text), undefined));
  }
});

Deno.test("tryParseIp() returns undefined for non-strings instead of throwing", () => {
  assert.equal(tryParseIp(42 as unknown as string), undefined);
  assert.equal(tryParseIp(undefined as unknown as string), undefined);
});

Deno.test("parseIp() throws a TypeError quoting the input", () => {
  assert.throws(() => parseIp("1..2.3"), { name: "TypeError", message: 'Invalid IP address: "1..2.3"' });
});

const FORMAT_CASES: [string, string][] = [
  ["0.0.0.0", "0.0.0.0"],
  ["10.1.2.3", "10.1.2.3"],
  ["2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
  ["::", "::"],
  ["::1", "::1"],
  ["1::", "1::"],
  // RFC 5952 4.2.2: a single zero group is not shortened.
  ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
  // RFC 5952 4.2.3: the longest run is shortened; on a tie, the first.
  ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
  ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
  ["1:0:0:2:0:0:3:4", "1::2:0:0:3:4"],
  ["fd00:0:0:0:0:0:0:0", "fd00::"],
  ["0:0:0:0:0:0:0:1", "::1"],
  ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
  ["ABCD:EF01::", "abcd:ef01::"],
  ["::ffff:1.2.3.4", "::ffff:102:304"],
];

Deno.test("formatIp() writes dotted IPv4 and RFC 5952 IPv6", async (t) => {
  for (const [input, expected] of FORMAT_CASES) {
    await t.step(`${input} → ${expected}`, () => assert.equal(formatIp(parseIp(input)), expected));
  }
});

Deno.test("formatIp() output parses back to the same address", async (t) => {
  for (const [input] of [...V4_GOOD, ...V6_GOOD, ...FORMAT_CASES]) {
    await t.step(input, () => {
      const ip = parseIp(input);
      assert.deepEqual(parseIp(formatIp(ip)), ip);
    });
  }
});

Deno.test("parseCidr() reads prefixes of both families", async (t) => {
  const cases: [string, Cidr][] = [
    ["10.0.0.0/8", { family: 4, base: 0x0a000000n, prefix: 8 }],
    ["0.0.0.0/0", { family: 4, base: 0n, prefix: 0 }],
    ["10.1.2.3/32", { family: 4, base: 0x0a010203n, prefix: 32 }],
    ["fd00::/48", { family: 6, base: 0xfd00n << 112n, prefix: 48 }],
    ["::/0", { family: 6, base: 0n, prefix: 0 }],
    ["::1/128", { family: 6, base: 1n, prefix: 128 }],
  ];
  for (const [text, cidr] of cases) {
    await t.step(text, () => assert.deepEqual(parseCidr(text), cidr));
  }
});

Deno.test("parseCidr() refuses host bits by default and suggests the network", async (t) => {
  await t.step("IPv4", () => {
    assert.throws(() => parseCidr("10.0.0.1/24"), {
      name: "TypeError",
      message: 'Invalid CIDR "10.0.0.1/24": host bits set, did you mean "10.0.0.0/24"?',
    });
  });
  await t.step("IPv6", () => {
    assert.throws(() => parseCidr("fd00::1/64"), { message: /did you mean "fd00::\/64"/ });
  });
  await t.step("an empty options object is still strict", () => {
    assert.throws(() => parseCidr("10.0.0.1/24", {}), { message: /host bits set/ });
  });
  await t.step("strict: false masks the host bits", () => {
    assert.equal(formatCidr(parseCidr("10.0.0.1/24", { strict: false })), "10.0.0.0/24");
  });
});

Deno.test("tryParseCidr() refuses malformed prefixes", async (t) => {
  const bad = [
    "10.0.0.0",
    "10.0.0.0/",
    "10.0.0.0/33",
    "fd00::/129",
    "10.0.0.0/08",
    "10.0.0.0/-1",
    "10.0.0.0/ 8",
    "10.0.0.0/8 ",
    "10.0.0.0/8/8",
    "10.0.0.0/1e1",
    "10.0.0.0/0x8",
    "01.0.0.0/8",
    "/8",
    "10.0.0.0/1000",
  ];
  for (const text of bad) {
    await t.step(JSON.stringify(text), () => {
      assert.equal(tryParseCidr(text), undefined);
      assert.throws(() => parseCidr(text), { name: "TypeError", message: `Invalid CIDR: "${text}"` });
    });
  }
});

Deno.test("cidrSize() counts addresses with BigInt for every prefix length", () => {
  assert.equal(cidrSize(parseCidr("10.0.0.0/8")), 1n << 24n);
  assert.equal(cidrSize(parseCidr("10.0.0.0/32")), 1n);
  assert.equal(cidrSize(parseCidr("0.0.0.0/0")), 1n << 32n);
  assert.equal(cidrSize(parseCidr("::/0")), 1n << 128n);
  assert.equal(cidrSize(parseCidr("fd00::/48")), 1n << 80n);
});

Deno.test("contains() checks family and bounds", () => {
  const net = parseCidr("10.1.0.0/16");
  assert.equal(contains(net, parseIp("10.1.0.0")), true);
  assert.equal(contains(net, parseIp("10.1.255.255")), true);
  assert.equal(contains(net, parseIp("10.2.0.0")), false);
  assert.equal(contains(net, parseIp("10.0.255.255")), false);
  // Same integer value, other family.
  assert.equal(contains(parseCidr("::/96"), parseIp("10.1.0.1")), false);
});

Deno.test("overlaps() detects shared addresses only within one family", async (t) => {
  const cases: [string, string, boolean][] = [
    ["10.0.0.0/16", "10.0.0.0/16", true],
    ["10.0.0.0/16", "10.0.128.0/17", true],
    ["10.0.128.0/17", "10.0.0.0/16", true],
    ["10.0.0.0/17", "10.0.128.0/17", false],
    ["10.0.0.0/24", "10.0.1.0/24", false],
    ["10.0.0.255/32", "10.0.0.0/24", true],
    ["fd00::/48", "fd00:0:0:1::/64", true],
    ["fd00::/48", "fd00:1::/48", false],
    ["::/96", "0.0.0.0/0", false],
  ];
  for (const [a, b, expected] of cases) {
    await t.step(`${a} ${b}`, () => assert.equal(overlaps(parseCidr(a), parseCidr(b)), expected));
  }
});

Deno.test("nthAddress() and offsetOf() are inverses and refuse outside offsets", () => {
  const net = parseCidr("fd00::/48");
  const last = cidrSize(net) - 1n;
  assert.equal(formatIp(nthAddress(net, last)), "fd00::ffff:ffff:ffff:ffff:ffff");
  assert.equal(offsetOf(net, nthAddress(net, last)), last);
  assert.equal(offsetOf(parseCidr("10.1.0.0/16"), parseIp("10.1.2.3")), 0x0203n);
  assert.throws(() => nthAddress(net, cidrSize(net)), RangeError);
  assert.throws(() => nthAddress(net, -1n), RangeError);
  assert.throws(() => offsetOf(net, parseIp("fd01::")), {
    name: "RangeError",
    message: "fd01:: outside fd00::/48",
  });
});

Deno.test("blockCount() and blockAt() cut a /48 into /123 blocks without losing bits", () => {
  const net = parseCidr("fd00:1:2::/48");
  assert.equal(blockCount(net, 123), 1n << 75n);
  assert.equal(formatCidr(blockAt(net, 123, 0n)), "fd00:1:2::/123");
  assert.equal(formatCidr(blockAt(net, 123, 1n)), "fd00:1:2::20/123");
  assert.equal(formatCidr(blockAt(net, 123, (1n << 75n) - 1n)), "fd00:1:2:ffff:ffff:ffff:ffff:ffe0/123");
  // An index beyond 2^53 keeps every bit (a Number would round it).
  const big = (1n << 60n) + 1n;
  assert.equal(offsetOf(net, nthAddress(blockAt(net, 123, big), 0n)), big * 32n);
  assert.throws(() => blockAt(net, 123, 1n << 75n), RangeError);
  assert.throws(() => blockAt(net, 123, -1n), RangeError);
});

Deno.test("blockCount() and blockAt() cut IPv4 subnets and refuse blocks larger than the subnet", () => {
  const net = parseCidr("10.1.0.0/16");
  assert.equal(blockCount(net, 27), 2048n);
  assert.equal(blockCount(net, 16), 1n);
  assert.equal(blockCount(net, 15), 0n);
  assert.equal(formatCidr(blockAt(net, 27, 2047n)), "10.1.255.224/27");
  assert.throws(() => blockAt(net, 15, 0n), RangeError);
});

Deno.test("blockOf() finds the block holding an address", () => {
  assert.equal(formatCidr(blockOf(parseIp("10.1.0.77"), 27)), "10.1.0.64/27");
  assert.equal(formatCidr(blockOf(parseIp("fd00::5f"), 123)), "fd00::40/123");
  assert.equal(formatCidr(blockOf(parseIp("10.1.0.77"), 32)), "10.1.0.77/32");
});

Deno.test("ipToBytes() and ipFromBytes() round-trip in network order", async (t) => {
  await t.step("IPv4", () => {
    const bytes = ipToBytes(parseIp("10.1.2.255"));
    assert.deepEqual(bytes, new Uint8Array([10, 1, 2, 255]));
    assert.equal(formatIp(ipFromBytes(bytes)), "10.1.2.255");
  });
  await t.step("IPv6", () => {
    const bytes = ipToBytes(parseIp("2001:db8::ff01"));
    assert.equal(bytes.length, 16);
    assert.deepEqual([...bytes.slice(0, 4)], [0x20, 0x01, 0x0d, 0xb8]);
    assert.deepEqual([...bytes.slice(14)], [0xff, 0x01]);
    assert.equal(formatIp(ipFromBytes(bytes)), "2001:db8::ff01");
  });
  await t.step("every single byte value survives", () => {
    for (let b = 0; b < 256; b++) {
      const bytes = new Uint8Array(16).fill(b);
      assert.deepEqual(ipToBytes(ipFromBytes(bytes)), bytes);
    }
  });
  await t.step("other lengths are refused", () => {
    assert.throws(() => ipFromBytes(new Uint8Array(5)), {
      name: "RangeError",
      message: "An IP address has 4 or 16 bytes, not 5",
    });
  });
});

Deno.test("familyBits() gives the address width", () => {
  assert.equal(familyBits(4), 32);
  assert.equal(familyBits(6), 128);
});
