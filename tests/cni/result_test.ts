import assert from "node:assert/strict";
import type { AddResult } from "../../cni/api.ts";
import { CniError } from "../../cni/errors.ts";
import { formatResult, parseResult } from "../../cni/result.ts";

const RESULT: AddResult = {
  interfaces: [
    { name: "veth0123456789a", mac: "02:00:00:00:00:01" },
    { name: "eth0", mac: "02:00:00:00:00:02", mtu: 1450, sandbox: "/var/run/netns/x" },
  ],
  ips: [
    { address: "10.1.0.5/32", gateway: "169.254.1.1", interface: 1 },
    { address: "fd00::5/128", interface: 1 },
  ],
  routes: [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }, { dst: "::/0" }],
};

Deno.test("formatResult() writes 1.1.0 with interfaces[].mtu and no ips[].version", () => {
  assert.deepEqual(formatResult(RESULT, "1.1.0", "main"), {
    cniVersion: "1.1.0",
    interfaces: [
      { name: "veth0123456789a", mac: "02:00:00:00:00:01" },
      { name: "eth0", mac: "02:00:00:00:00:02", mtu: 1450, sandbox: "/var/run/netns/x" },
    ],
    ips: [
      { interface: 1, address: "10.1.0.5/32", gateway: "169.254.1.1" },
      { interface: 1, address: "fd00::5/128" },
    ],
    routes: [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }, { dst: "::/0" }],
  });
});

Deno.test("formatResult() writes 1.0.0 without interfaces[].mtu", () => {
  const out = formatResult(RESULT, "1.0.0", "main");
  assert.deepEqual(out.interfaces, [
    { name: "veth0123456789a", mac: "02:00:00:00:00:01" },
    { name: "eth0", mac: "02:00:00:00:00:02", sandbox: "/var/run/netns/x" },
  ]);
  assert.deepEqual(out.ips, [
    { interface: 1, address: "10.1.0.5/32", gateway: "169.254.1.1" },
    { interface: 1, address: "fd00::5/128" },
  ]);
});

Deno.test("formatResult() writes 0.3.x and 0.4.0 with ips[].version by family", async (t) => {
  for (const version of ["0.3.0", "0.3.1", "0.4.0"]) {
    await t.step(version, () => {
      const out = formatResult(RESULT, version, "main");
      assert.equal(out.cniVersion, version);
      assert.deepEqual(out.ips, [
        { version: "4", interface: 1, address: "10.1.0.5/32", gateway: "169.254.1.1" },
        { version: "6", interface: 1, address: "fd00::5/128" },
      ]);
      assert.deepEqual((out.interfaces as unknown[])[1], {
        name: "eth0",
        mac: "02:00:00:00:00:02",
        sandbox: "/var/run/netns/x",
      });
    });
  }
});

Deno.test("formatResult() leaves out interfaces and ips[].interface in IPAM mode", async (t) => {
  for (const version of ["0.3.1", "1.0.0", "1.1.0"]) {
    await t.step(version, () => {
      const out = formatResult(RESULT, version, "ipam");
      assert.equal("interfaces" in out, false);
      for (const ip of out.ips as Record<string, unknown>[]) assert.equal("interface" in ip, false);
      assert.deepEqual(out.routes, RESULT.routes);
    });
  }
});

Deno.test("formatResult() output parses back to the same result", () => {
  for (const version of ["0.3.0", "0.4.0", "1.0.0", "1.1.0"]) {
    const back = parseResult(formatResult(RESULT, version, "main"), 7, "x");
    const expected = version === "1.1.0"
      ? RESULT
      : { ...RESULT, interfaces: RESULT.interfaces.map(({ mtu: _, ...rest }) => rest) };
    assert.deepEqual(back, expected);
  }
});

Deno.test("parseResult() copies only known fields and reads missing arrays as empty", () => {
  assert.deepEqual(parseResult({}, 7, "x"), { interfaces: [], ips: [], routes: [] });
  assert.deepEqual(
    parseResult(
      {
        cniVersion: "1.1.0",
        interfaces: [{ name: "eth0", socketPath: "/x", pciID: "0000:00:01.0" }],
        ips: [{ address: "10.0.0.1/24", version: "4", extra: 1 }],
        routes: [{ dst: "10.0.0.0/8", mtu: 1400, table: 5 }],
        dns: { nameservers: ["10.0.0.10"] },
      },
      7,
      "x",
    ),
    {
      interfaces: [{ name: "eth0", mac: "" }],
      ips: [{ address: "10.0.0.1/24" }],
      routes: [{ dst: "10.0.0.0/8" }],
    },
  );
});

Deno.test("parseResult() rejects malformed results with the given code, naming the field", async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ["array", [], /Invalid src: expected an object, got \[\]/],
    ["interfaces object", { interfaces: {} }, /interfaces is \{\}: expected an array/],
    ["interface not object", { interfaces: [1] }, /interfaces\[0\] is 1/],
    ["interface without name", { interfaces: [{ mac: "x" }] }, /interfaces\[0\].name is undefined/],
    ["interface mtu string", { interfaces: [{ name: "e", mtu: "1" }] }, /interfaces\[0\].mtu is "1"/],
    ["ip without address", { ips: [{}] }, /ips\[0\].address is undefined/],
    [
      "ip address not CIDR",
      { ips: [{ address: "10.0.0.1 /32" }] },
      /ips\[0\].address "10.0.0.1 \/32" is not CIDR/,
    ],
    ["ip gateway number", { ips: [{ address: "10.0.0.1/32", gateway: 1 }] }, /ips\[0\].gateway is 1/],
    ["ip interface out of range", {
      interfaces: [{ name: "e" }],
      ips: [{ address: "1.2.3.4/32", interface: 1 }],
    }, /ips\[0\].interface 1 is not an index/],
    ["ip interface negative", {
      interfaces: [{ name: "e" }],
      ips: [{ address: "1.2.3.4/32", interface: -1 }],
    }, /interface -1/],
    ["route without dst", { routes: [{ gw: "1.2.3.4" }] }, /routes\[0\].dst is undefined/],
    ["routes string", { routes: "x" }, /routes is "x"/],
  ];
  for (const [title, raw, pattern] of cases) {
    await t.step(title, () => {
      assert.throws(() => parseResult(raw, 999, "src"), (err: unknown) => {
        assert.ok(err instanceof CniError);
        assert.equal(err.code, 999);
        assert.match(err.msg, pattern);
        return true;
      });
    });
  }
});
