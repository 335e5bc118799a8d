import assert from "node:assert/strict";
import { DEFAULT_SOCKET } from "../../cni/api.ts";
import { CniError } from "../../cni/errors.ts";
import { parseNetConf } from "../../cni/netconf.ts";

const MAIN = { cniVersion: "1.1.0", name: "k8s-pod-network", type: "coil" };
const IPAM = { cniVersion: "1.0.0", name: "net1", type: "ptp", ipam: { type: "coil" } };

function parse(value: unknown) {
  return parseNetConf(new TextEncoder().encode(JSON.stringify(value)));
}

/** The CniError that parsing `value` throws. */
function failure(value: unknown): CniError {
  try {
    parse(value);
  } catch (err) {
    if (err instanceof CniError) return err;
    throw err;
  }
  assert.fail(`parseNetConf() accepted ${JSON.stringify(value)}`);
}

Deno.test("parseNetConf() reads a main-mode netconf with defaults", () => {
  assert.deepEqual(parse(MAIN), {
    cniVersion: "1.1.0",
    name: "k8s-pod-network",
    mode: "main",
    socket: DEFAULT_SOCKET,
    mtu: 0,
    hostRouteTable: 0,
  });
});

Deno.test("parseNetConf() reads socket, mtu and hostRouteTable at the top in main mode", () => {
  const conf = parse({ ...MAIN, socket: "/tmp/c.sock", mtu: 1450, hostRouteTable: 254, dns: {}, other: [1] });
  assert.equal(conf.socket, "/tmp/c.sock");
  assert.equal(conf.mtu, 1450);
  assert.equal(conf.hostRouteTable, 254);
});

Deno.test("parseNetConf() reads IPAM mode from ipam.type coil, with ipam.socket, ignoring the main plugin's keys", () => {
  const conf = parse({
    ...IPAM,
    mtu: "not ours",
    socket: 5,
    hostRouteTable: "x",
    ipam: { type: "coil", socket: "/s" },
  });
  assert.deepEqual(conf, {
    cniVersion: "1.0.0",
    name: "net1",
    mode: "ipam",
    socket: "/s",
    mtu: 0,
    hostRouteTable: 0,
  });
  assert.equal(parse(IPAM).socket, DEFAULT_SOCKET);
});

Deno.test("parseNetConf() reads null as absent, as Go's decoder does", () => {
  const conf = parse({ ...MAIN, mtu: null, socket: null, ipam: null, prevResult: null, runtimeConfig: null });
  assert.equal(conf.mtu, 0);
  assert.equal(conf.socket, DEFAULT_SOCKET);
  assert.equal(conf.prevResult, undefined);
});

Deno.test("parseNetConf() keeps prevResult as an object without parsing it (DEL must not fail on it)", () => {
  const prevResult = { cniVersion: "0.4.0", ips: [{ address: "not checked here" }] };
  assert.deepEqual(parse({ ...MAIN, prevResult }).prevResult, prevResult);
});

Deno.test("parseNetConf() merges both GC attachment keys and keeps an empty list", () => {
  const a = { containerID: "c1", ifname: "eth0" };
  const b = { containerID: "c2", ifname: "net1" };
  assert.deepEqual(
    parse({ ...MAIN, "cni.dev/valid-attachments": [a], "cni.dev/attachments": [b] }).validAttachments,
    [
      { containerId: "c1", ifName: "eth0" },
      { containerId: "c2", ifName: "net1" },
    ],
  );
  assert.deepEqual(parse({ ...MAIN, "cni.dev/valid-attachments": [] }).validAttachments, []);
  // libcni sends the same list under both keys.
  assert.deepEqual(
    parse({ ...MAIN, "cni.dev/valid-attachments": [a, b], "cni.dev/attachments": [b, a] }).validAttachments,
    [
      { containerId: "c1", ifName: "eth0" },
      { containerId: "c2", ifName: "net1" },
    ],
  );
  assert.equal(parse(MAIN).validAttachments, undefined);
});

Deno.test("parseNetConf() accepts every supported version and the 1.1 cniVersions list", () => {
  for (const cniVersion of ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]) {
    assert.equal(parse({ ...MAIN, cniVersion }).cniVersion, cniVersion);
  }
  assert.equal(parse({ ...MAIN, cniVersions: ["1.0.0", "1.1.0"] }).cniVersion, "1.1.0");
});

Deno.test("parseNetConf() rejects bad netconfs with the right code and names the key and value", async (t) => {
  const long = "/" + "s".repeat(107);
  const cases: [string, unknown, number, RegExp][] = [
    ["not an object", [1], 6, /Cannot decode netconf: \[1\] is not an object/],
    ["null", null, 6, /Cannot decode netconf/],
    ["no cniVersion", { name: "n", type: "coil" }, 1, /no cniVersion/],
    [
      "cniVersion 0.2.0",
      { ...MAIN, cniVersion: "0.2.0" },
      1,
      /cniVersion "0.2.0": Coil supports 0.3.0, .*1.1.0/,
    ],
    ["cniVersion 1.2.0", { ...MAIN, cniVersion: "1.2.0" }, 1, /cniVersion "1.2.0"/],
    ["cniVersion number", { ...MAIN, cniVersion: 1 }, 7, /key cniVersion 1: expected a string/],
    ["no name", { cniVersion: "1.0.0", type: "coil" }, 7, /key name is missing/],
    ["empty name", { ...MAIN, name: "" }, 7, /key name is missing/],
    ["name number", { ...MAIN, name: 3 }, 7, /key name 3: expected a string/],
    ["name with space", { ...MAIN, name: "my net" }, 7, /key name "my net"/],
    ["name starting with -", { ...MAIN, name: "-net" }, 7, /key name "-net"/],
    ["no type", { cniVersion: "1.0.0", name: "n" }, 7, /key type is missing/],
    ["type object", { ...MAIN, type: {} }, 7, /key type \{\}: expected a string/],
    ["other type, no ipam", { ...MAIN, type: "ptp" }, 7, /type is "ptp" and ipam.type is undefined: .* coil/],
    ["other ipam", { ...IPAM, ipam: { type: "host-local" } }, 7, /ipam.type is "host-local"/],
    ["ipam not an object", { ...IPAM, ipam: "coil" }, 7, /key ipam "coil": expected an object/],
    [
      "ipam in main mode",
      { ...MAIN, ipam: { type: "host-local" } },
      2,
      /Unsupported netconf key ipam \{"type":"host-local"\}/,
    ],
    ["mtu string", { ...MAIN, mtu: "1500" }, 7, /key mtu "1500": expected an integer from 68 to 65535/],
    ["mtu 67", { ...MAIN, mtu: 67 }, 7, /key mtu 67/],
    ["mtu 65536", { ...MAIN, mtu: 65536 }, 7, /key mtu 65536/],
    ["mtu fraction", { ...MAIN, mtu: 1500.5 }, 7, /key mtu 1500.5/],
    ["hostRouteTable 255", { ...MAIN, hostRouteTable: 255 }, 7, /key hostRouteTable 255: .*not 253/],
    ["hostRouteTable 253", { ...MAIN, hostRouteTable: 253 }, 7, /key hostRouteTable 253/],
    ["hostRouteTable -1", { ...MAIN, hostRouteTable: -1 }, 7, /key hostRouteTable -1/],
    ["hostRouteTable 2^32", { ...MAIN, hostRouteTable: 2 ** 32 }, 7, /key hostRouteTable 4294967296/],
    ["hostRouteTable string", { ...MAIN, hostRouteTable: "119" }, 7, /key hostRouteTable "119"/],
    ["socket number", { ...MAIN, socket: 5 }, 7, /key socket 5: expected a string/],
    [
      "socket relative",
      { ...MAIN, socket: "coild.sock" },
      7,
      /key socket "coild.sock": not an absolute path/,
    ],
    ["socket too long", { ...MAIN, socket: long }, 7, /key socket "\/s+\.\.\.: longer than 107 bytes/],
    ["ipam.socket number", { ...IPAM, ipam: { type: "coil", socket: 1 } }, 7, /key ipam.socket 1/],
    ["prevResult string", { ...MAIN, prevResult: "x" }, 7, /key prevResult "x": expected an object/],
    ["runtimeConfig array", { ...MAIN, runtimeConfig: [] }, 7, /key runtimeConfig \[\]: expected an object/],
    [
      "cniVersions string",
      { ...MAIN, cniVersions: "1.0.0" },
      7,
      /key cniVersions "1.0.0": expected an array of strings/,
    ],
    [
      "valid-attachments string",
      { ...MAIN, "cni.dev/valid-attachments": "x" },
      7,
      /key cni.dev\/valid-attachments "x"/,
    ],
    [
      "attachment without ifname",
      { ...MAIN, "cni.dev/attachments": [{ containerID: "c" }] },
      7,
      /key cni.dev\/attachments\[0\] \{"containerID":"c"\}/,
    ],
    [
      "attachment id number",
      { ...MAIN, "cni.dev/valid-attachments": [{ containerID: 1, ifname: "e" }] },
      7,
      /valid-attachments\[0\]/,
    ],
  ];
  for (const [title, value, code, pattern] of cases) {
    await t.step(title, () => {
      const err = failure(value);
      assert.equal(err.code, code, err.msg);
      assert.match(err.msg, pattern);
    });
  }
});

Deno.test("parseNetConf() gives code 6 for bytes that are not UTF-8 JSON", async (t) => {
  const cases: [string, Uint8Array][] = [
    ["empty", new Uint8Array()],
    ["truncated", new TextEncoder().encode('{"cniVersion": "1.0.0"')],
    ["not UTF-8", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
    ["text", new TextEncoder().encode("hello")],
  ];
  for (const [title, bytes] of cases) {
    await t.step(title, () => {
      assert.throws(() => parseNetConf(bytes), (err: unknown) => {
        assert.ok(err instanceof CniError);
        assert.equal(err.code, 6);
        assert.match(err.msg, /^Cannot decode netconf: /);
        return true;
      });
    });
  }
});
