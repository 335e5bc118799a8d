// CNI mode as a runtime uses it: `scripts/coil` run as a separate process with env and stdin, JSON out.
// Malformed calls must fail before contacting coild; the rest talk to a fake coild socket in this file.

import assert from "node:assert/strict";
import type { AddResult } from "../../cni/api.ts";
import { badCniInputs, stdinOf } from "../helpers/bad_cni_inputs.ts";
import { type CniOutcome, runCoil as runRawCoil } from "../helpers/cni.ts";
import { inParallel } from "../helpers/in_parallel.ts";
import { type FakeCoild, type FakeReply, startFakeCoild } from "./_fake_coild.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/** What deno needs from the test's own env (its cache, a chosen binary); runtimes pass no more. */
const DENO_ENV = Object.fromEntries(
  ["PATH", "HOME", "DENO_DIR", "DENO_BIN"].flatMap((name) => {
    const value = Deno.env.get(name);
    return value === undefined ? [] : [[name, value]];
  }),
);

/** Runs coil in CNI mode with only `env` (plus what deno needs) and `stdin`, as a runtime does. */
function runCoil(env: Record<string, string>, stdin: string | Uint8Array = ""): Promise<CniOutcome> {
  return runRawCoil({ ...DENO_ENV, ...env }, stdin);
}

/** The one JSON document coil printed. */
function stdoutJson(proc: CniOutcome): Record<string, unknown> {
  assert.ok(proc.stdout.endsWith("\n"), `stdout ${JSON.stringify(proc.stdout)}, stderr ${proc.stderr}`);
  return JSON.parse(proc.stdout);
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
    const { cases } = badCniInputs({ socket, netns: "/var/run/netns/x" });
    assert.ok(cases.length >= 40);
    const procs = await inParallel(cases, 4, ([, env, stdin]) => runCoil(env, stdinOf(stdin)));
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
