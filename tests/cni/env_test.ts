import assert from "node:assert/strict";
import { DEFAULT_TIMEOUT_MS, readEnv } from "../../cni/env.ts";
import { CniError } from "../../cni/errors.ts";

const ADD_ENV = {
  CNI_COMMAND: "ADD",
  CNI_CONTAINERID: "0123abc",
  CNI_NETNS: "/var/run/netns/cni-1",
  CNI_IFNAME: "eth0",
  CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;K8S_POD_UID=uid",
  CNI_PATH: "/opt/cni/bin",
};

function getenvOf(vars: Record<string, string | undefined>): (name: string) => string | undefined {
  return (name) => vars[name];
}

/** The code-4 message for `vars`, asserting that readEnv() fails with code 4. */
function envError(vars: Record<string, string | undefined>): string {
  try {
    readEnv(getenvOf(vars));
  } catch (err) {
    assert.ok(err instanceof CniError);
    assert.equal(err.code, 4);
    return err.msg;
  }
  assert.fail(`readEnv() accepted ${JSON.stringify(vars)}`);
}

Deno.test("readEnv() reads a full ADD environment into typed data", () => {
  assert.deepEqual(readEnv(getenvOf(ADD_ENV)), {
    verb: "add",
    containerId: "0123abc",
    netns: "/var/run/netns/cni-1",
    ifName: "eth0",
    args: { podNamespace: "ns", podName: "pod", podInfraContainerId: "", podUid: "uid" },
    timeoutMs: DEFAULT_TIMEOUT_MS,
  });
});

Deno.test("readEnv() lets DEL go without CNI_NETNS, CNI_ARGS and CNI_PATH", () => {
  const env = readEnv(
    getenvOf({ ...ADD_ENV, CNI_COMMAND: "DEL", CNI_NETNS: "", CNI_ARGS: undefined, CNI_PATH: "" }),
  );
  assert.equal(env.verb, "del");
  assert.equal(env.netns, "");
  assert.equal(env.args.podName, "");
});

Deno.test("readEnv() needs only CNI_COMMAND for VERSION and STATUS, and CNI_PATH too for GC", () => {
  assert.equal(readEnv(getenvOf({ CNI_COMMAND: "VERSION" })).verb, "version");
  assert.equal(readEnv(getenvOf({ CNI_COMMAND: "STATUS" })).verb, "status");
  assert.equal(readEnv(getenvOf({ CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" })).verb, "gc");
  assert.match(envError({ CNI_COMMAND: "GC" }), /CNI_PATH is missing/);
});

Deno.test("readEnv() ignores variables the verb does not use, even invalid ones", () => {
  const env = readEnv(
    getenvOf({ CNI_COMMAND: "STATUS", CNI_IFNAME: "a/b", CNI_ARGS: "junk", CNI_CONTAINERID: "-" }),
  );
  assert.equal(env.ifName, "");
  assert.equal(env.containerId, "");
  assert.equal(readEnv(getenvOf({ CNI_COMMAND: "VERSION", COIL_CNI_TIMEOUT_MS: "x" })).verb, "version");
});

Deno.test("readEnv() reports every missing and invalid variable in one code-4 error", () => {
  const msg = envError({
    CNI_COMMAND: "ADD",
    CNI_IFNAME: "a:b",
    CNI_ARGS: "FOO=1",
    COIL_CNI_TIMEOUT_MS: "0",
  });
  for (
    const part of [
      "CNI_CONTAINERID is missing",
      "CNI_NETNS is missing",
      `CNI_IFNAME "a:b" has a character the kernel rejects`,
      `CNI_ARGS "FOO=1" has unknown keys FOO`,
      `COIL_CNI_TIMEOUT_MS "0" is not a timeout`,
    ]
  ) {
    assert.ok(msg.includes(part), `${JSON.stringify(part)} not in ${JSON.stringify(msg)}`);
  }
  assert.ok(msg.startsWith("Invalid environment: "));
});

Deno.test("readEnv() rejects a missing, empty or unknown CNI_COMMAND", async (t) => {
  for (const command of [undefined, "", "add", "FOO", " ADD", "constructor", "__proto__", "toString"]) {
    await t.step(String(JSON.stringify(command)), () => {
      const msg = envError({ ...ADD_ENV, CNI_COMMAND: command });
      assert.match(msg, command ? /CNI_COMMAND ".*" is not a CNI verb/ : /CNI_COMMAND is missing/);
    });
  }
});

Deno.test("readEnv() checks CNI_CONTAINERID as the spec says", async (t) => {
  for (const id of ["a", "0", "abc-DEF_1.2", "f".repeat(64)]) {
    await t.step(`accepts ${id.slice(0, 12)}`, () => {
      assert.equal(readEnv(getenvOf({ ...ADD_ENV, CNI_CONTAINERID: id })).containerId, id);
    });
  }
  for (const id of ["-abc", "_abc", ".abc", "abc/def", "abc def", "abc;d", "ä"]) {
    await t.step(`rejects ${JSON.stringify(id)}`, () => {
      assert.match(
        envError({ ...ADD_ENV, CNI_CONTAINERID: id }),
        /CNI_CONTAINERID ".*" has invalid characters/,
      );
    });
  }
});

Deno.test("readEnv() checks CNI_IFNAME as the kernel's dev_valid_name() does", async (t) => {
  for (const name of ["eth0", "a", "x".repeat(15), "net1.100", "eth-0_1", "é".repeat(7)]) {
    await t.step(`accepts ${JSON.stringify(name)}`, () => {
      assert.equal(readEnv(getenvOf({ ...ADD_ENV, CNI_IFNAME: name })).ifName, name);
    });
  }
  const bad: [string, RegExp][] = [
    ["x".repeat(16), /longer than 15 bytes/],
    ["é".repeat(8), /longer than 15 bytes/], // 16 bytes in UTF-8
    [".", /not a valid interface name/],
    ["..", /not a valid interface name/],
    ["eth/0", /kernel rejects/],
    ["eth:0", /kernel rejects/],
    ["eth 0", /kernel rejects/],
    ["eth\t0", /kernel rejects/],
    ["eth\n0", /kernel rejects/],
    ["eth\v0", /kernel rejects/],
    ["eth\u00a00", /kernel rejects/], // UTF-8 C2 A0: the kernel's isspace(0xA0) is true
  ];
  for (const [name, pattern] of bad) {
    await t.step(`rejects ${JSON.stringify(name)}`, () => {
      assert.match(envError({ ...ADD_ENV, CNI_IFNAME: name }), pattern);
    });
  }
});

Deno.test("readEnv() wants CNI_NETNS as an absolute path", () => {
  assert.match(
    envError({ ...ADD_ENV, CNI_NETNS: "netns/x" }),
    /CNI_NETNS "netns\/x" is not an absolute path/,
  );
  assert.match(
    envError({ ...ADD_ENV, CNI_COMMAND: "DEL", CNI_NETNS: "x" }),
    /CNI_NETNS "x" is not an absolute path/,
  );
});

Deno.test("readEnv() reads COIL_CNI_TIMEOUT_MS as a positive integer", async (t) => {
  assert.equal(readEnv(getenvOf({ ...ADD_ENV, COIL_CNI_TIMEOUT_MS: "2500" })).timeoutMs, 2500);
  assert.equal(readEnv(getenvOf({ ...ADD_ENV, COIL_CNI_TIMEOUT_MS: "2147483647" })).timeoutMs, 2147483647);
  for (const value of ["0", "-1", "1.5", "1e3", "abc", "2147483648", "0100"]) {
    await t.step(`rejects ${value}`, () => {
      assert.match(
        envError({ ...ADD_ENV, COIL_CNI_TIMEOUT_MS: value }),
        /COIL_CNI_TIMEOUT_MS ".*" is not a timeout/,
      );
    });
  }
});
