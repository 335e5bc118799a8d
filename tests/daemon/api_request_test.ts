// parseApiRequest(): every verb parsed into typed data with only its known fields, and every bad field
// refused with a BadRequestError that names it.

import assert from "node:assert/strict";
import { BadRequestError, parseApiRequest } from "../../daemon/api_request.ts";

const ATTACHMENT = {
  network: "k8s",
  containerId: "c1",
  ifName: "eth0",
  netns: "/run/netns/c1",
  podNamespace: "default",
  podName: "p1",
  podUid: "uid-1",
};

function assertBad(input: unknown, message: RegExp): void {
  const text = typeof input === "string" ? input : JSON.stringify(input);
  assert.throws(() => parseApiRequest(text), (err: unknown) => {
    assert.ok(err instanceof BadRequestError, `expected a BadRequestError, got ${err}`);
    assert.equal(err.name, "BadRequestError");
    assert.match(err.message, message);
    return true;
  });
}

Deno.test("parseApiRequest() parses every verb and drops unknown fields", async (t) => {
  const cases: [string, Record<string, unknown>, unknown][] = [
    [
      "add",
      { verb: "add", mode: "main", ...ATTACHMENT, mtu: 1450, hostRouteTable: 254, extra: 1 },
      { verb: "add", mode: "main", ...ATTACHMENT, mtu: 1450, hostRouteTable: 254 },
    ],
    [
      "add without mtu and hostRouteTable (both default to 0)",
      { verb: "add", mode: "ipam", ...ATTACHMENT },
      { verb: "add", mode: "ipam", ...ATTACHMENT, mtu: 0, hostRouteTable: 0 },
    ],
    [
      "del with empty netns and pod fields",
      {
        verb: "del",
        mode: "main",
        ...ATTACHMENT,
        netns: "",
        podNamespace: "",
        podName: "",
        podUid: "",
        mtu: 9,
      },
      {
        verb: "del",
        mode: "main",
        ...ATTACHMENT,
        netns: "",
        podNamespace: "",
        podName: "",
        podUid: "",
        hostRouteTable: 0,
      },
    ],
    [
      "check",
      { verb: "check", mode: "main", ...ATTACHMENT, hostRouteTable: 7, prevIps: ["10.1.0.5/32"], junk: [] },
      { verb: "check", mode: "main", ...ATTACHMENT, hostRouteTable: 7, prevIps: ["10.1.0.5/32"] },
    ],
    [
      "gc",
      {
        verb: "gc",
        network: "k8s",
        validAttachments: [{ containerId: "c1", ifName: "eth0", extra: true }],
        mode: "x",
      },
      { verb: "gc", network: "k8s", validAttachments: [{ containerId: "c1", ifName: "eth0" }] },
    ],
    ["gc with no attachment to keep", { verb: "gc", network: "k8s", validAttachments: [] }, {
      verb: "gc",
      network: "k8s",
      validAttachments: [],
    }],
    ["status", { verb: "status", network: "k8s", containerId: "c1" }, { verb: "status", network: "k8s" }],
  ];
  for (const [name, input, expected] of cases) {
    await t.step(name, () => assert.deepEqual(parseApiRequest(JSON.stringify(input)), expected));
  }
});

Deno.test("parseApiRequest() refuses every bad field by name", async (t) => {
  const add = { verb: "add", mode: "main", ...ATTACHMENT };
  const cases: [string, unknown, RegExp][] = [
    ["not JSON", "{", /^Bad request: not JSON: /],
    ["an array", [], /^Bad request: not a JSON object$/],
    ["null", null, /^Bad request: not a JSON object$/],
    ["a string", '"add"', /^Bad request: not a JSON object$/],
    ["no verb", { ...add, verb: undefined }, /^Bad request: unknown verb undefined$/],
    ["an unknown verb", { ...add, verb: "version" }, /^Bad request: unknown verb "version"$/],
    ["a verb in capitals", { ...add, verb: "ADD" }, /^Bad request: unknown verb "ADD"$/],
    ["no mode", { ...add, mode: undefined }, /^Bad request: "mode" must be "ipam" or "main", not undefined$/],
    [
      "a bad mode",
      { ...add, mode: "chained" },
      /^Bad request: "mode" must be "ipam" or "main", not "chained"$/,
    ],
    ...(["network", "containerId", "ifName"] as const).flatMap((field): [string, unknown, RegExp][] => [
      [
        `an empty ${field}`,
        { ...add, [field]: "" },
        new RegExp(`^Bad request: "${field}" must be a non-empty string$`),
      ],
      [
        `a missing ${field}`,
        { ...add, [field]: undefined },
        new RegExp(`"${field}" must be a non-empty string`),
      ],
      [`a numeric ${field}`, { ...add, [field]: 1 }, new RegExp(`"${field}" must be a non-empty string`)],
    ]),
    ...(["netns", "podNamespace", "podName", "podUid"] as const).map((field): [string, unknown, RegExp] => [
      `a non-string ${field}`,
      { ...add, [field]: null },
      new RegExp(`^Bad request: "${field}" must be a string$`),
    ]),
    ...([-1, 1.5, 2 ** 32, "1450", true] as const).flatMap((value): [string, unknown, RegExp][] => [
      [
        `mtu ${JSON.stringify(value)}`,
        { ...add, mtu: value },
        /^Bad request: "mtu" must be an unsigned 32-bit integer$/,
      ],
      [
        `hostRouteTable ${JSON.stringify(value)}`,
        { ...add, verb: "del", hostRouteTable: value },
        /^Bad request: "hostRouteTable" must be an unsigned 32-bit integer$/,
      ],
    ]),
    [
      "check without prevIps",
      { ...add, verb: "check" },
      /^Bad request: "prevIps" must be an array of strings$/,
    ],
    [
      "check with a numeric prevIp",
      { ...add, verb: "check", prevIps: [1] },
      /"prevIps" must be an array of strings/,
    ],
    [
      "check with prevIps not an array",
      { ...add, verb: "check", prevIps: "10.1.0.5/32" },
      /"prevIps" must be/,
    ],
    [
      "check with a bad mode",
      { ...add, verb: "check", mode: 1, prevIps: [] },
      /"mode" must be "ipam" or "main"/,
    ],
    [
      "gc without network",
      { verb: "gc", validAttachments: [] },
      /^Bad request: "network" must be a non-empty string$/,
    ],
    [
      "gc without validAttachments",
      { verb: "gc", network: "k8s" },
      /^Bad request: "validAttachments" must be an array$/,
    ],
    [
      "gc with a null attachment",
      { verb: "gc", network: "k8s", validAttachments: [null] },
      /entries must be objects/,
    ],
    [
      "gc with a string attachment",
      { verb: "gc", network: "k8s", validAttachments: ["c1"] },
      /entries must be objects/,
    ],
    [
      "gc with an attachment without ifName",
      { verb: "gc", network: "k8s", validAttachments: [{ containerId: "c1" }] },
      /^Bad request: "ifName" must be a non-empty string$/,
    ],
    [
      "gc with an attachment with an empty containerId",
      { verb: "gc", network: "k8s", validAttachments: [{ containerId: "", ifName: "eth0" }] },
      /^Bad request: "containerId" must be a non-empty string$/,
    ],
    ["status without network", { verb: "status" }, /^Bad request: "network" must be a non-empty string$/],
    ["status with an empty network", { verb: "status", network: "" }, /"network" must be a non-empty string/],
  ];
  for (const [name, input, message] of cases) {
    await t.step(name, () => assertBad(input, message));
  }
});

Deno.test("parseApiRequest() does not take inherited or prototype keys from the input", () => {
  const parsed = parseApiRequest(
    '{"verb":"status","network":"k8s","__proto__":{"polluted":true},"constructor":{"x":1}}',
  );
  assert.deepEqual(parsed, { verb: "status", network: "k8s" });
  assert.equal(Object.getPrototypeOf(parsed), Object.prototype);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});
