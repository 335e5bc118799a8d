// CNI mode as a runtime uses it: `scripts/coil` run as a separate process with env and stdin, JSON out.
// Malformed calls must fail before contacting coild; the rest talk to a fake coild socket in this file.

import assert from "node:assert/strict";
import type { AddResult } from "../../cni/api.ts";
import { type FakeCoild, type FakeReply, startFakeCoild } from "./_fake_coild.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const COIL = `${ROOT}scripts/coil`;
const VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

interface Proc {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs coil in CNI mode with only `env` (plus what deno needs) and `stdin`, as a runtime does. */
async function runCoil(env: Record<string, string>, stdin: string | Uint8Array = ""): Promise<Proc> {
  const base: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "DENO_DIR", "DENO_BIN"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) base[name] = value;
  }
  const child = new Deno.Command(COIL, {
    env: { ...base, ...env },
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  try {
    await writer.write(typeof stdin === "string" ? new TextEncoder().encode(stdin) : stdin);
    await writer.close();
  } catch (err) {
    // VERSION may exit without reading stdin; runtimes ignore EPIPE too (Go's os/exec).
    if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** The one JSON document coil printed. */
function stdoutJson(proc: Proc): Record<string, unknown> {
  assert.ok(proc.stdout.endsWith("\n"), `stdout ${JSON.stringify(proc.stdout)}, stderr ${proc.stderr}`);
  return JSON.parse(proc.stdout);
}

/** Runs `work` over `items` with at most `limit` at once (2 cores, shared with other test runs). */
async function pool<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

async function withTempDir(work: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-cni-" });
  try {
    await work(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("runCni() answers VERSION with every supported version, stdin or not", async () => {
  for (const stdin of ["", '{"cniVersion":"1.0.0"}']) {
    const proc = await runCoil({ CNI_COMMAND: "VERSION" }, stdin);
    assert.equal(proc.code, 0, proc.stderr);
    assert.deepEqual(stdoutJson(proc), { cniVersion: "1.1.0", supportedVersions: VERSIONS });
  }
});

Deno.test("runCni() imports nothing outside cni/: no npm package, no FFI, no ipam/daemon/netlink", async () => {
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", `${ROOT}cni/main.ts`],
    stdout: "piped",
  }).output();
  assert.equal(info.code, 0);
  const modules: { specifier: string }[] = JSON.parse(new TextDecoder().decode(info.stdout)).modules;
  const outside = modules.map((m) => m.specifier).filter((s) => !s.startsWith(`file://${ROOT}cni/`));
  assert.deepEqual(outside, []);
  assert.ok(modules.length >= 10, `only ${modules.length} modules: is the graph read?`);
  for (const { specifier } of modules) {
    const source = await Deno.readTextFile(new URL(specifier));
    assert.doesNotMatch(source, /Deno\.dlopen|UnsafePointer|from "npm:|from "node:/, specifier);
  }
});

Deno.test("runCni() rejects malformed calls with the right code and names the problem", async (t) => {
  await withTempDir(async (dir) => {
    const socket = `${dir}/absent.sock`; // reaching coild would give 11 and fail the case
    const conf = { cniVersion: "1.1.0", name: "net", type: "coil", socket };
    const ipam = { cniVersion: "1.0.0", name: "net", type: "ptp", ipam: { type: "coil", socket } };
    const add = {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "c1",
      CNI_NETNS: "/var/run/netns/x",
      CNI_IFNAME: "eth0",
    };
    const gc = { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" };
    const cases: [string, Record<string, string>, unknown, number, RegExp][] = [
      // The environment.
      ["empty CNI_COMMAND", { ...add, CNI_COMMAND: "" }, conf, 4, /CNI_COMMAND is missing/],
      ["unknown CNI_COMMAND", { ...add, CNI_COMMAND: "FOO" }, conf, 4, /CNI_COMMAND "FOO" is not a CNI verb/],
      ["lower-case CNI_COMMAND", { ...add, CNI_COMMAND: "add" }, conf, 4, /CNI_COMMAND "add"/],
      ["ADD without CNI_CONTAINERID", { ...add, CNI_CONTAINERID: "" }, conf, 4, /CNI_CONTAINERID is missing/],
      ["ADD without CNI_NETNS", { ...add, CNI_NETNS: "" }, conf, 4, /CNI_NETNS is missing/],
      ["ADD without CNI_IFNAME", { ...add, CNI_IFNAME: "" }, conf, 4, /CNI_IFNAME is missing/],
      [
        "ADD with nothing",
        { CNI_COMMAND: "ADD" },
        conf,
        4,
        /CNI_CONTAINERID is missing; CNI_NETNS is missing; CNI_IFNAME is missing/,
      ],
      [
        "CHECK without CNI_NETNS",
        { ...add, CNI_COMMAND: "CHECK", CNI_NETNS: "" },
        conf,
        4,
        /CNI_NETNS is missing/,
      ],
      [
        "DEL without CNI_IFNAME",
        { ...add, CNI_COMMAND: "DEL", CNI_IFNAME: "" },
        conf,
        4,
        /CNI_IFNAME is missing/,
      ],
      ["GC without CNI_PATH", { CNI_COMMAND: "GC" }, conf, 4, /CNI_PATH is missing/],
      [
        "container ID with -",
        { ...add, CNI_CONTAINERID: "-c1" },
        conf,
        4,
        /CNI_CONTAINERID "-c1" has invalid/,
      ],
      ["container ID with /", { ...add, CNI_CONTAINERID: "a/b" }, conf, 4, /CNI_CONTAINERID "a\/b"/],
      [
        "relative netns",
        { ...add, CNI_NETNS: "netns/x" },
        conf,
        4,
        /CNI_NETNS "netns\/x" is not an absolute/,
      ],
      [
        "ifname of 16 bytes",
        { ...add, CNI_IFNAME: "a".repeat(16) },
        conf,
        4,
        /CNI_IFNAME "a+" is longer than 15/,
      ],
      ["ifname .", { ...add, CNI_IFNAME: "." }, conf, 4, /CNI_IFNAME "\." is not a valid interface name/],
      ["ifname ..", { ...add, CNI_IFNAME: ".." }, conf, 4, /CNI_IFNAME "\.\."/],
      ["ifname with /", { ...add, CNI_IFNAME: "eth/0" }, conf, 4, /CNI_IFNAME "eth\/0" has a character/],
      ["ifname with :", { ...add, CNI_IFNAME: "eth0:1" }, conf, 4, /CNI_IFNAME "eth0:1" has a character/],
      ["ifname with space", { ...add, CNI_IFNAME: "eth 0" }, conf, 4, /CNI_IFNAME "eth 0"/],
      ["bad timeout", { ...add, COIL_CNI_TIMEOUT_MS: "soon" }, conf, 4, /COIL_CNI_TIMEOUT_MS "soon"/],
      // CNI_ARGS.
      [
        "CNI_ARGS pair without =",
        { ...add, CNI_ARGS: "K8S_POD_NAME" },
        conf,
        4,
        /malformed pair "K8S_POD_NAME"/,
      ],
      ["CNI_ARGS pair with two =", { ...add, CNI_ARGS: "A=b=c" }, conf, 4, /malformed pair "A=b=c"/],
      ["CNI_ARGS trailing ;", { ...add, CNI_ARGS: "K8S_POD_NAME=p;" }, conf, 4, /malformed pair ""/],
      ["CNI_ARGS unknown key", { ...add, CNI_ARGS: "FOO=bar" }, conf, 4, /unknown keys FOO/],
      ["CNI_ARGS IgnoreUnknown=0", { ...add, CNI_ARGS: "IgnoreUnknown=0;X=1" }, conf, 4, /unknown keys X/],
      [
        "CNI_ARGS bad IgnoreUnknown",
        { ...add, CNI_ARGS: "IgnoreUnknown=yes" },
        conf,
        4,
        /IgnoreUnknown "yes"/,
      ],
      [
        "CNI_ARGS key twice",
        { ...add, CNI_ARGS: "K8S_POD_NAME=a;K8S_POD_NAME=b" },
        conf,
        4,
        /K8S_POD_NAME twice/,
      ],
      // Decoding.
      ["stdin not JSON", add, "{cniVersion", 6, /Cannot decode netconf/],
      ["stdin empty", add, "", 6, /Cannot decode netconf/],
      ["stdin an array", add, "[]", 6, /\[\] is not an object/],
      ["stdin not UTF-8", add, new Uint8Array([0x7b, 0xc3, 0x28, 0x7d]), 6, /Cannot decode netconf/],
      // Versions.
      ["no cniVersion", add, { ...conf, cniVersion: undefined }, 1, /no cniVersion/],
      ["cniVersion 0.2.0", add, { ...conf, cniVersion: "0.2.0" }, 1, /cniVersion "0.2.0": Coil supports/],
      ["cniVersion 2.0.0", add, { ...conf, cniVersion: "2.0.0" }, 1, /cniVersion "2.0.0"/],
      [
        "CHECK at 0.3.1",
        { ...add, CNI_COMMAND: "CHECK" },
        { ...conf, cniVersion: "0.3.1" },
        1,
        /not allow CHECK/,
      ],
      ["GC at 1.0.0", gc, { ...conf, cniVersion: "1.0.0" }, 1, /"1.0.0" does not allow GC/],
      ["STATUS at 0.4.0", { CNI_COMMAND: "STATUS" }, { ...conf, cniVersion: "0.4.0" }, 1, /not allow STATUS/],
      // The netconf.
      ["cniVersion a number", add, { ...conf, cniVersion: 1.1 }, 7, /key cniVersion 1.1: expected a string/],
      ["no name", add, { ...conf, name: undefined }, 7, /key name is missing/],
      ["name with space", add, { ...conf, name: "my net" }, 7, /key name "my net"/],
      ["no type", add, { ...conf, type: undefined }, 7, /key type is missing/],
      [
        "foreign type, no ipam",
        add,
        { ...conf, type: "bridge" },
        7,
        /type is "bridge" and ipam.type is undefined/,
      ],
      ["foreign ipam", add, { ...ipam, ipam: { type: "host-local" } }, 7, /ipam.type is "host-local"/],
      [
        "ipam with type coil",
        add,
        { ...conf, ipam: { type: "host-local" } },
        2,
        /Unsupported netconf key ipam/,
      ],
      ["mtu a string", add, { ...conf, mtu: "1500" }, 7, /key mtu "1500": expected an integer from 68/],
      ["mtu too small", add, { ...conf, mtu: 60 }, 7, /key mtu 60/],
      ["mtu too big", add, { ...conf, mtu: 70000 }, 7, /key mtu 70000/],
      ["hostRouteTable local", add, { ...conf, hostRouteTable: 255 }, 7, /key hostRouteTable 255/],
      ["hostRouteTable negative", add, { ...conf, hostRouteTable: -5 }, 7, /key hostRouteTable -5/],
      ["socket a number", add, { ...conf, socket: 1 }, 7, /key socket 1: expected a string/],
      [
        "socket relative",
        add,
        { ...conf, socket: "coild.sock" },
        7,
        /key socket "coild.sock": not an absolute/,
      ],
      [
        "ipam.socket relative",
        add,
        { ...ipam, ipam: { type: "coil", socket: "x" } },
        7,
        /key ipam.socket "x"/,
      ],
      ["prevResult a list", add, { ...conf, prevResult: [] }, 7, /key prevResult \[\]: expected an object/],
      [
        "CHECK with a bad prevResult",
        { ...add, CNI_COMMAND: "CHECK" },
        { ...conf, prevResult: { ips: [{ address: "10.0.0.1" }] } },
        7,
        /prevResult: ips\[0\].address "10.0.0.1" is not CIDR/,
      ],
      ["runtimeConfig a string", add, { ...conf, runtimeConfig: "x" }, 7, /key runtimeConfig "x"/],
      ["cniVersions a string", add, { ...conf, cniVersions: "1.1.0" }, 7, /key cniVersions "1.1.0"/],
      [
        "valid-attachments a map",
        gc,
        { ...conf, "cni.dev/valid-attachments": {} },
        7,
        /valid-attachments \{\}/,
      ],
      [
        "attachment without ifname",
        gc,
        { ...conf, "cni.dev/attachments": [{ containerID: "c" }] },
        7,
        /attachments\[0\]/,
      ],
      // Verb needs.
      ["CHECK without prevResult", { ...add, CNI_COMMAND: "CHECK" }, conf, 7, /prevResult is missing/],
      ["GC without valid-attachments", gc, conf, 7, /cni.dev\/valid-attachments is missing/],
    ];
    assert.ok(cases.length >= 40);
    const procs = await pool(
      cases,
      4,
      ([, env, stdin]) =>
        runCoil(
          env,
          typeof stdin === "string" || stdin instanceof Uint8Array ? stdin : JSON.stringify(stdin),
        ),
    );
    for (const [i, [title, , , code, pattern]] of cases.entries()) {
      await t.step(title, () => {
        const proc = procs[i];
        assert.equal(proc.code, 1, proc.stderr);
        const out = stdoutJson(proc);
        assert.equal(out.code, code, out.msg as string);
        assert.match(out.msg as string, pattern);
        assert.ok(VERSIONS.includes(out.cniVersion as string), `cniVersion ${out.cniVersion}`);
      });
    }
  });
});

const RESULT: AddResult = {
  interfaces: [
    { name: "veth0123456789a", mac: "02:00:00:00:00:01" },
    { name: "eth0", mac: "02:00:00:00:00:02", mtu: 1450, sandbox: "/var/run/netns/x" },
  ],
  ips: [
    { address: "10.1.0.5/32", gateway: "169.254.1.1", interface: 1 },
    { address: "fd00::5/128", gateway: "fe80::1", interface: 1 },
  ],
  routes: [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }, { dst: "::/0", gw: "fe80::1" }],
};

/** The ADD output coil must print for RESULT in `version` and `mode`. */
function expectedAddOutput(version: string, mode: "main" | "ipam"): Record<string, unknown> {
  const old = version.startsWith("0.");
  const ip = (address: string, gateway: string, family: string) => ({
    ...(old ? { version: family } : {}),
    ...(mode === "main" ? { interface: 1 } : {}),
    address,
    gateway,
  });
  return {
    cniVersion: version,
    ...(mode === "main"
      ? {
        interfaces: [
          { name: "veth0123456789a", mac: "02:00:00:00:00:01" },
          {
            name: "eth0",
            mac: "02:00:00:00:00:02",
            ...(version === "1.1.0" ? { mtu: 1450 } : {}),
            sandbox: "/var/run/netns/x",
          },
        ],
      }
      : {}),
    ips: [ip("10.1.0.5/32", "169.254.1.1", "4"), ip("fd00::5/128", "fe80::1", "6")],
    routes: RESULT.routes,
  };
}

const POD_ENV = {
  CNI_CONTAINERID: "3f2a9c",
  CNI_NETNS: "/var/run/netns/cni-1234",
  CNI_IFNAME: "eth0",
  CNI_PATH: "/opt/cni/bin",
  CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;" +
    "K8S_POD_INFRA_CONTAINER_ID=3f2a9c;K8S_POD_UID=8d1c-44",
};
const ATTACHMENT = {
  containerId: "3f2a9c",
  ifName: "eth0",
  netns: "/var/run/netns/cni-1234",
  podNamespace: "team-a",
  podName: "web-0",
  podUid: "8d1c-44",
};

/** A netconf naming `coild`'s socket: coil as the main plugin, or as the IPAM plugin of ptp. */
function netconf(coild: FakeCoild, mode: "main" | "ipam", cniVersion: string, extra: object = {}) {
  return mode === "main"
    ? {
      cniVersion,
      name: "k8s-pod-network",
      type: "coil",
      socket: coild.path,
      mtu: 1450,
      hostRouteTable: 119,
      ...extra,
    }
    : {
      cniVersion,
      name: "k8s-pod-network",
      type: "ptp",
      mtu: 9000,
      ipam: { type: "coil", socket: coild.path },
      ...extra,
    };
}

async function withCoild(reply: (request: string) => FakeReply, work: (coild: FakeCoild) => Promise<void>) {
  await withTempDir(async (dir) => {
    await using coild = startFakeCoild(dir, reply);
    await work(coild);
  });
}

Deno.test("runCni() ADD sends coild the attachment and prints its result in each version and mode", async (t) => {
  for (const mode of ["main", "ipam"] as const) {
    for (const version of VERSIONS) {
      await t.step(`${mode} mode, ${version}`, async () => {
        await withCoild(() => JSON.stringify({ ok: true, result: RESULT }), async (coild) => {
          const proc = await runCoil(
            { CNI_COMMAND: "ADD", ...POD_ENV },
            JSON.stringify(netconf(coild, mode, version)),
          );
          assert.equal(proc.code, 0, proc.stdout + proc.stderr);
          assert.deepEqual(stdoutJson(proc), expectedAddOutput(version, mode));
          assert.deepEqual(coild.requests.map((r) => JSON.parse(r)), [{
            verb: "add",
            network: "k8s-pod-network",
            ...ATTACHMENT,
            mode,
            mtu: mode === "main" ? 1450 : 0,
            hostRouteTable: mode === "main" ? 119 : 0,
          }]);
        });
      });
    }
  }
});

Deno.test("runCni() DEL and CHECK send the attachment in both modes and print nothing", async (t) => {
  const prevResult = { cniVersion: "1.0.0", ips: [{ address: "10.1.0.5/32" }] };
  for (const mode of ["main", "ipam"] as const) {
    for (const verb of ["del", "check"] as const) {
      await t.step(`${verb} in ${mode} mode`, async () => {
        await withCoild(() => '{"ok":true}', async (coild) => {
          const conf = netconf(coild, mode, "1.0.0", { prevResult });
          const proc = await runCoil({ CNI_COMMAND: verb.toUpperCase(), ...POD_ENV }, JSON.stringify(conf));
          assert.equal(proc.code, 0, proc.stdout + proc.stderr);
          assert.equal(proc.stdout, "");
          assert.deepEqual(coild.requests.map((r) => JSON.parse(r)), [{
            verb,
            network: "k8s-pod-network",
            ...ATTACHMENT,
            mode,
            hostRouteTable: mode === "main" ? 119 : 0,
            ...(verb === "check" ? { prevIps: ["10.1.0.5/32"] } : {}),
          }]);
        });
      });
    }
  }
});

Deno.test("runCni() DEL without netns and with podman's CNI_ARGS sends empty fields", async () => {
  await withCoild(() => '{"ok":true}', async (coild) => {
    const env = { ...POD_ENV, CNI_COMMAND: "DEL", CNI_NETNS: "", CNI_ARGS: "K8S_POD_NAME=web-0" };
    const proc = await runCoil(env, JSON.stringify(netconf(coild, "main", "0.3.1")));
    assert.equal(proc.code, 0, proc.stdout);
    const request = JSON.parse(coild.requests[0]);
    assert.deepEqual([request.netns, request.podNamespace, request.podName, request.podUid], [
      "",
      "",
      "web-0",
      "",
    ]);
  });
});

Deno.test("runCni() DEL does not fail on a prevResult it cannot read", async () => {
  await withCoild(() => '{"ok":true}', async (coild) => {
    const conf = netconf(coild, "main", "1.0.0", { prevResult: { ips: [{ address: "garbage" }] } });
    const proc = await runCoil({ ...POD_ENV, CNI_COMMAND: "DEL" }, JSON.stringify(conf));
    assert.equal(proc.code, 0, proc.stdout);
    assert.equal(coild.requests.length, 1);
  });
});

Deno.test("runCni() GC sends both attachment keys merged; STATUS sends the network", async (t) => {
  for (const mode of ["main", "ipam"] as const) {
    await t.step(`GC in ${mode} mode`, async () => {
      await withCoild(() => '{"ok":true}', async (coild) => {
        const conf = netconf(coild, mode, "1.1.0", {
          "cni.dev/valid-attachments": [{ containerID: "c1", ifname: "eth0" }],
          "cni.dev/attachments": [{ containerID: "c2", ifname: "net1" }],
        });
        const proc = await runCoil({ CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, JSON.stringify(conf));
        assert.equal(proc.code, 0, proc.stdout);
        assert.equal(proc.stdout, "");
        assert.deepEqual(JSON.parse(coild.requests[0]), {
          verb: "gc",
          network: "k8s-pod-network",
          validAttachments: [{ containerId: "c1", ifName: "eth0" }, { containerId: "c2", ifName: "net1" }],
        });
      });
    });
    await t.step(`STATUS in ${mode} mode`, async () => {
      await withCoild(() => '{"ok":true}', async (coild) => {
        const proc = await runCoil({ CNI_COMMAND: "STATUS" }, JSON.stringify(netconf(coild, mode, "1.1.0")));
        assert.equal(proc.code, 0, proc.stdout);
        assert.equal(proc.stdout, "");
        assert.deepEqual(JSON.parse(coild.requests[0]), { verb: "status", network: "k8s-pod-network" });
      });
    });
  }
});

Deno.test("runCni() passes coild's error codes through and turns a reply without code into 999", async (t) => {
  const cases: [string, string, Record<string, unknown>][] = [
    [
      "code 11",
      '{"ok":false,"code":11,"msg":"etcd is unavailable","details":"deadline exceeded"}',
      { code: 11, msg: "etcd is unavailable", details: "deadline exceeded" },
    ],
    [
      "code 100",
      '{"ok":false,"code":100,"msg":"No pool serves namespace team-a"}',
      { code: 100, msg: "No pool serves namespace team-a" },
    ],
    [
      "no code",
      '{"ok":false,"msg":"lost"}',
      {
        code: 999,
        msg: "Invalid reply from coild at SOCKET: a failure with code undefined",
        details: '{"ok":false,"msg":"lost"}',
      },
    ],
    ["not JSON", "panic: oops", {
      code: 999,
      msg: "Invalid reply from coild at SOCKET: not JSON",
      details: "panic: oops",
    }],
  ];
  for (const [title, reply, expected] of cases) {
    await t.step(title, async () => {
      await withCoild(() => reply, async (coild) => {
        const proc = await runCoil(
          { CNI_COMMAND: "ADD", ...POD_ENV },
          JSON.stringify(netconf(coild, "main", "1.0.0")),
        );
        assert.equal(proc.code, 1);
        const msg = (expected.msg as string).replace("SOCKET", coild.path);
        assert.deepEqual(stdoutJson(proc), { cniVersion: "1.0.0", ...expected, msg });
      });
    });
  }
});

Deno.test("runCni() gives 11 for ADD and DEL, and 50 for STATUS, when coild's socket is missing", async () => {
  await withTempDir(async (dir) => {
    const socket = `${dir}/coild.sock`;
    const conf = { cniVersion: "1.1.0", name: "net", type: "coil", socket };
    const unreachable = `Node daemon coild is not reachable at ${socket}: the socket does not exist`;
    for (const verb of ["ADD", "DEL"]) {
      const proc = await runCoil({ CNI_COMMAND: verb, ...POD_ENV }, JSON.stringify(conf));
      assert.equal(proc.code, 1);
      assert.deepEqual(stdoutJson(proc), { cniVersion: "1.1.0", code: 11, msg: unreachable });
    }
    const status = await runCoil({ CNI_COMMAND: "STATUS" }, JSON.stringify(conf));
    assert.equal(status.code, 1);
    assert.deepEqual(stdoutJson(status), {
      cniVersion: "1.1.0",
      code: 50,
      msg: `Coil cannot serve ADD: ${unreachable}`,
    });
  });
});

Deno.test("runCni() gives 11 when coild holds the call past COIL_CNI_TIMEOUT_MS", async () => {
  await withCoild(() => "hold", async (coild) => {
    const env = { CNI_COMMAND: "ADD", ...POD_ENV, COIL_CNI_TIMEOUT_MS: "300" };
    const proc = await runCoil(env, JSON.stringify(netconf(coild, "main", "1.1.0")));
    assert.equal(proc.code, 1);
    assert.deepEqual(stdoutJson(proc), {
      cniVersion: "1.1.0",
      code: 11,
      msg: `Node daemon coild is not reachable at ${coild.path}: no reply within 300 ms`,
    });
  });
});

Deno.test("runCni() STATUS reports coild's not-ready answers as 50, and 51 as 51", async () => {
  const replies: [string, number, string][] = [
    ['{"ok":false,"code":11,"msg":"etcd is unavailable"}', 50, "Coil cannot serve ADD: etcd is unavailable"],
    ['{"ok":false,"code":51,"msg":"Routes are not exported"}', 51, "Routes are not exported"],
  ];
  for (const [reply, code, msg] of replies) {
    await withCoild(() => reply, async (coild) => {
      const proc = await runCoil({ CNI_COMMAND: "STATUS" }, JSON.stringify(netconf(coild, "main", "1.1.0")));
      assert.equal(proc.code, 1);
      assert.deepEqual(stdoutJson(proc), { cniVersion: "1.1.0", code, msg });
    });
  }
});

Deno.test("runCni() calls made at once each get their own reply", async () => {
  // The fake answers each container with an address derived from its ID, as coild would.
  await withCoild((request) => {
    const n = Number(JSON.parse(request).containerId.slice(1));
    return JSON.stringify({
      ok: true,
      result: { interfaces: [], ips: [{ address: `10.1.0.${n}/32` }], routes: [] },
    });
  }, async (coild) => {
    const ids = Array.from({ length: 8 }, (_, i) => `c${i + 1}`);
    const procs = await Promise.all(ids.map((id) =>
      runCoil(
        { CNI_COMMAND: "ADD", ...POD_ENV, CNI_CONTAINERID: id },
        JSON.stringify(netconf(coild, "ipam", "1.0.0")),
      )
    ));
    for (const [i, proc] of procs.entries()) {
      assert.equal(proc.code, 0, proc.stdout);
      assert.deepEqual(stdoutJson(proc), {
        cniVersion: "1.0.0",
        ips: [{ address: `10.1.0.${i + 1}/32` }],
        routes: [],
      });
    }
    assert.equal(coild.requests.length, 8);
  });
});
