// Pool validation: every refused definition says what is wrong and quotes the offending value.

import assert from "node:assert/strict";
import { formatCidr } from "../../ipam/cidr.ts";
import { IpamError } from "../../ipam/errors.ts";
import {
  blockPrefix,
  DEFAULT_BLOCK_SIZE_BITS,
  findOverlap,
  MAX_BLOCK_SIZE_BITS,
  parsePool,
  type Pool,
  poolToJson,
  poolWithSubnet,
  validatePoolName,
} from "../../ipam/pool.ts";

function assertInvalid(fn: () => unknown, message: RegExp) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof IpamError, `expected an IpamError, got ${err}`);
    assert.equal(err.kind, "invalid");
    assert.match(err.message, message);
    assert.doesNotMatch(err.message, /\.$/, "no trailing period");
    assert.match(err.message, /^[A-Z]/, "capital first letter");
    return true;
  });
}

const BAD_DEFINITIONS: [string, unknown, RegExp][] = [
  ["null", null, /^Invalid pool "p": the definition must be a JSON object, not null$/],
  ["a list", ["10.1.0.0/16"], /must be a JSON object, not a list/],
  ["a number", 5, /must be a JSON object, not 5/],
  ["text that is not JSON", "{subnets: []}", /^Invalid pool "p": not JSON: /],
  ["an unknown field", { subnets: ["10.1.0.0/16"], blockSize: 5 }, /unknown field "blockSize"/],
  ["a name field (the name is in the key)", { name: "p", subnets: ["10.1.0.0/16"] }, /unknown field "name"/],
  ["no subnets", {}, /"subnets" must be a non-empty list of CIDRs, not missing/],
  ["an empty subnet list", { subnets: [] }, /"subnets" must be a non-empty list of CIDRs, not an empty list/],
  ["subnets as a string", { subnets: "10.1.0.0/16" }, /non-empty list of CIDRs, not "10\.1\.0\.0\/16"/],
  ["a subnet that is a number", { subnets: [10] }, /a subnet must be a CIDR string, not 10/],
  ["an address without prefix", { subnets: ["10.1.0.0"] }, /subnet "10\.1\.0\.0" is not a CIDR/],
  ["a leading-zero octet", { subnets: ["010.1.0.0/16"] }, /subnet "010\.1\.0\.0\/16" is not a CIDR/],
  ["a hex octet", { subnets: ["0x0a.1.0.0/16"] }, /subnet "0x0a\.1\.0\.0\/16" is not a CIDR/],
  ["a prefix too long", { subnets: ["10.1.0.0/33"] }, /subnet "10\.1\.0\.0\/33" is not a CIDR/],
  [
    "host bits set",
    { subnets: ["10.1.2.0/16"] },
    /subnet "10\.1\.2\.0\/16" has host bits set, did you mean "10\.1\.0\.0\/16"\?$/,
  ],
  [
    "a duplicate subnet",
    { subnets: ["10.1.0.0/16", "10.1.0.0/16"] },
    /subnet 10\.1\.0\.0\/16 is listed twice/,
  ],
  [
    "a duplicate subnet written differently",
    { subnets: ["fd00::/48", "FD00:0::/48"] },
    /subnet fd00::\/48 is listed twice/,
  ],
  [
    "overlapping subnets",
    { subnets: ["10.1.0.0/16", "10.1.128.0/17"] },
    /subnet 10\.1\.128\.0\/17 overlaps 10\.1\.0\.0\/16/,
  ],
  [
    "an IPv4 subnet shorter than /8",
    { subnets: ["10.0.0.0/7"] },
    /subnet 10\.0\.0\.0\/7 is too large: .*\/8/,
  ],
  ["0.0.0.0/0", { subnets: ["0.0.0.0/0"] }, /subnet 0\.0\.0\.0\/0 is too large/],
  ["an IPv6 subnet shorter than /32", { subnets: ["fd00::/16"] }, /subnet fd00::\/16 is too large: .*\/32/],
  [
    "loopback",
    { subnets: ["127.0.0.0/16"] },
    /subnet 127\.0\.0\.0\/16 overlaps 127\.0\.0\.0\/8, which is loopback/,
  ],
  [
    "the link-local gateway range",
    { subnets: ["169.254.0.0/24"] },
    /overlaps 169\.254\.0\.0\/16, which is link-local/,
  ],
  ["IPv4 multicast", { subnets: ["239.1.0.0/16"] }, /overlaps 224\.0\.0\.0\/4, which is multicast/],
  ["IPv6 link-local", { subnets: ["fe80::/64"] }, /subnet fe80::\/64 overlaps fe80::\/10/],
  ["IPv6 multicast", { subnets: ["ff02::/64"] }, /overlaps ff00::\/8, which is multicast/],
  ["IPv4-mapped IPv6", { subnets: ["::ffff:0:0/96"] }, /overlaps ::\/8/],
  [
    "a negative block size",
    { subnets: ["10.1.0.0/16"], blockSizeBits: -1 },
    /blockSizeBits -1 is too small: at least 1 \(2 addresses per block\)/,
  ],
  [
    "single-address blocks, whose one address is the reserved gateway",
    { subnets: ["10.1.0.0/24"], blockSizeBits: 0 },
    /blockSizeBits 0 is too small: at least 1 \(2 addresses per block\), since each block's first address is reserved/,
  ],
  [
    "a fractional block size",
    { subnets: ["10.1.0.0/16"], blockSizeBits: 2.5 },
    /integer from 1 to 16, not 2\.5/,
  ],
  [
    "a block size as a string",
    { subnets: ["10.1.0.0/16"], blockSizeBits: "5" },
    /integer from 1 to 16, not "5"/,
  ],
  ["a null block size", { subnets: ["10.1.0.0/16"], blockSizeBits: null }, /integer from 1 to 16, not null/],
  [
    "a prefix length given as block size",
    { subnets: ["10.1.0.0/16"], blockSizeBits: 27 },
    /blockSizeBits 27 is too large: at most 16 .* not a prefix length/,
  ],
  [
    "a subnet smaller than one block",
    { subnets: ["10.1.0.0/16", "10.2.0.0/28"], blockSizeBits: 5 },
    /subnet 10\.2\.0\.0\/28 is smaller than one block of 2\^5 addresses \(\/27\)/,
  ],
  [
    "an IPv6 subnet smaller than one block",
    { subnets: ["fd00::/126"], blockSizeBits: 3 },
    /subnet fd00::\/126 is smaller than one block of 2\^3 addresses \(\/125\)/,
  ],
];

Deno.test("parsePool() refuses bad definitions with a message naming the problem", async (t) => {
  for (const [what, raw, message] of BAD_DEFINITIONS) {
    await t.step(what, () => assertInvalid(() => parsePool("p", raw), message));
  }
});

Deno.test("parsePool() accepts good definitions", async (t) => {
  const cases: [string, unknown, string[], number][] = [
    ["one IPv4 subnet, default block size", { subnets: ["10.1.0.0/16"] }, ["10.1.0.0/16"], 5],
    [
      "dual stack, normalised",
      { subnets: ["10.1.0.0/16", "FD00:0:0::/48"], blockSizeBits: 6 },
      ["10.1.0.0/16", "fd00::/48"],
      6,
    ],
    ["adjacent subnets", { subnets: ["10.1.0.0/17", "10.1.128.0/17"] }, ["10.1.0.0/17", "10.1.128.0/17"], 5],
    ["the smallest block", { subnets: ["10.1.0.0/24"], blockSizeBits: 1 }, ["10.1.0.0/24"], 1],
    [
      "a subnet of exactly one smallest block",
      { subnets: ["fd00::/127"], blockSizeBits: 1 },
      ["fd00::/127"],
      1,
    ],
    ["the largest block", { subnets: ["10.0.0.0/8"], blockSizeBits: 16 }, ["10.0.0.0/8"], 16],
    ["a subnet of exactly one block", { subnets: ["10.1.0.0/27"] }, ["10.1.0.0/27"], 5],
    ["the shortest IPv6 subnet", { subnets: ["2001:db8::/32"] }, ["2001:db8::/32"], 5],
    ["public IPv4", { subnets: ["203.0.113.0/24"], blockSizeBits: 2 }, ["203.0.113.0/24"], 2],
    ["JSON text (an etcd value)", '{"subnets":["10.1.0.0/16"],"blockSizeBits":4}', ["10.1.0.0/16"], 4],
  ];
  for (const [what, raw, subnets, bits] of cases) {
    await t.step(what, () => {
      const pool = parsePool("p", raw);
      assert.equal(pool.name, "p");
      assert.deepEqual(pool.subnets.map(formatCidr), subnets);
      assert.equal(pool.blockSizeBits, bits);
    });
  }
});

Deno.test("parsePool() does not keep unvalidated objects", () => {
  const raw = { subnets: ["10.1.0.0/16"] };
  const pool = parsePool("p", raw);
  raw.subnets.push("junk");
  assert.equal(pool.subnets.length, 1);
});

Deno.test("validatePoolName() accepts Kubernetes namespace names only", async (t) => {
  for (const name of ["default", "kube-system", "a", "0", "a1-b2", "x".repeat(63)]) {
    await t.step(`accepts ${name.length > 10 ? "63 characters" : name}`, () => validatePoolName(name));
  }
  const bad = ["", "Default", "-a", "a-", "a_b", "a.b", "a b", " a", "é", "x".repeat(64), "a/b", "..", "a\n"];
  for (const name of bad) {
    await t.step(`refuses ${JSON.stringify(name)}`, () => {
      assertInvalid(
        () => validatePoolName(name),
        new RegExp(`^Invalid pool name ${RegExp.escape(JSON.stringify(name))}: .*Kubernetes namespace`),
      );
    });
  }
  await t.step("parsePool() checks the name first", () => {
    assertInvalid(() => parsePool("Bad", { subnets: ["10.1.0.0/16"] }), /^Invalid pool name "Bad"/);
  });
});

Deno.test("poolToJson() round-trips through parsePool()", () => {
  const pool = parsePool("dmz", { subnets: ["203.0.113.0/24", "2001:DB8::/48"], blockSizeBits: 3 });
  const json = poolToJson(pool);
  assert.equal(json, '{"subnets":["203.0.113.0/24","2001:db8::/48"],"blockSizeBits":3}');
  assert.deepEqual(parsePool("dmz", json), pool);
});

Deno.test("blockPrefix() gives each family's block length", () => {
  const pool = parsePool("p", { subnets: ["10.1.0.0/16", "fd00::/48"] });
  assert.equal(pool.blockSizeBits, DEFAULT_BLOCK_SIZE_BITS);
  assert.equal(blockPrefix(pool, 4), 27);
  assert.equal(blockPrefix(pool, 6), 123);
  const big = parsePool("p", { subnets: ["10.0.0.0/8"], blockSizeBits: MAX_BLOCK_SIZE_BITS });
  assert.equal(blockPrefix(big, 4), 16);
});

Deno.test("findOverlap() reports the first clash with another pool and skips the pool itself", () => {
  const pools: Pool[] = [
    parsePool("a", { subnets: ["10.1.0.0/16"] }),
    parsePool("b", { subnets: ["10.2.0.0/16", "fd00::/48"] }),
  ];
  const candidate = parsePool("c", { subnets: ["10.3.0.0/16", "fd00:0:0:8000::/49"] });
  const overlap = findOverlap(candidate, pools);
  assert.ok(overlap);
  assert.equal(formatCidr(overlap.subnet), "fd00:0:0:8000::/49");
  assert.equal(overlap.pool, "b");
  assert.equal(formatCidr(overlap.other), "fd00::/48");
  assert.equal(findOverlap(parsePool("c", { subnets: ["10.3.0.0/16"] }), pools), undefined);
  assert.equal(findOverlap(pools[0], pools), undefined);
});

Deno.test("poolWithSubnet() appends a validated subnet and keeps the block size", async (t) => {
  const pool = parsePool("p", { subnets: ["10.1.0.0/16"], blockSizeBits: 3 });
  await t.step("appends", () => {
    const grown = poolWithSubnet(pool, "fd00::/48");
    assert.deepEqual(grown.subnets.map(formatCidr), ["10.1.0.0/16", "fd00::/48"]);
    assert.equal(grown.blockSizeBits, 3);
    assert.equal(pool.subnets.length, 1, "the original pool is not changed");
  });
  await t.step("refuses an overlap inside the pool as a conflict", () => {
    assert.throws(() => poolWithSubnet(pool, "10.1.4.0/24"), {
      name: "IpamError",
      kind: "conflict",
      message: 'Cannot add subnet 10.1.4.0/24 to pool "p": it overlaps 10.1.0.0/16 of that pool',
    });
  });
  await t.step("refuses a malformed subnet", () => {
    assertInvalid(() => poolWithSubnet(pool, "10.2.0.1/16"), /did you mean "10\.2\.0\.0\/16"/);
  });
  await t.step("refuses a subnet smaller than the pool's blocks", () => {
    assertInvalid(() => poolWithSubnet(pool, "10.2.0.0/30"), /smaller than one block of 2\^3 addresses/);
  });
});
