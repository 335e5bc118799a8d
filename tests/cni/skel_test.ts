import assert from "node:assert/strict";
import { CniError } from "../../cni/errors.ts";
import { type CniCall, type CniIo, dispatch, type Handlers } from "../../cni/skel.ts";

const ADD_ENV = {
  CNI_COMMAND: "ADD",
  CNI_CONTAINERID: "c1",
  CNI_NETNS: "/var/run/netns/x",
  CNI_IFNAME: "eth0",
  CNI_PATH: "/opt/cni/bin",
};
const CONF = { cniVersion: "1.0.0", name: "net", type: "coil" };

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  stdinRead: boolean;
  calls: [string, CniCall][];
}

/** Runs dispatch() with `env` and `stdin`; handlers record their calls and return `output(verb)`. */
async function run(
  env: Record<string, string>,
  stdin: unknown,
  output: (verb: string) => Promise<unknown> = () => Promise.resolve(undefined),
): Promise<Run> {
  const result: Run = { code: -1, stdout: "", stderr: "", stdinRead: false, calls: [] };
  const io: CniIo = {
    getenv: (name) => env[name],
    readStdin: () => {
      result.stdinRead = true;
      if (stdin instanceof Error) return Promise.reject(stdin);
      const text = typeof stdin === "string" ? stdin : JSON.stringify(stdin);
      return Promise.resolve(new TextEncoder().encode(text));
    },
    writeStdout: (text) => Promise.resolve(void (result.stdout += text)),
    writeStderr: (text) => Promise.resolve(void (result.stderr += text)),
  };
  const handler = (verb: string) => (call: CniCall) => {
    result.calls.push([verb, call]);
    return output(verb);
  };
  const handlers: Handlers = {
    add: handler("add"),
    del: handler("del"),
    check: handler("check"),
    gc: handler("gc"),
    status: handler("status"),
  };
  result.code = await dispatch(io, handlers);
  return result;
}

/** The one JSON line on stdout. */
function json(run: Run): Record<string, unknown> {
  assert.ok(run.stdout.endsWith("\n"), run.stdout);
  assert.equal(run.stdout.indexOf("\n"), run.stdout.length - 1, run.stdout);
  return JSON.parse(run.stdout);
}

Deno.test("dispatch() answers VERSION without reading stdin", async () => {
  const r = await run({ CNI_COMMAND: "VERSION" }, new Error("stdin must not be read"));
  assert.equal(r.code, 0);
  assert.equal(r.stdinRead, false);
  assert.deepEqual(json(r), {
    cniVersion: "1.1.0",
    supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
  });
  assert.equal(r.calls.length, 0);
});

Deno.test("dispatch() hands the validated env and netconf to the verb's handler and prints its output", async () => {
  const r = await run(
    { ...ADD_ENV, CNI_ARGS: "K8S_POD_NAME=p" },
    CONF,
    () => Promise.resolve({ cniVersion: "1.0.0", ips: [] }),
  );
  assert.equal(r.code, 0);
  assert.deepEqual(json(r), { cniVersion: "1.0.0", ips: [] });
  assert.equal(r.calls.length, 1);
  const [verb, call] = r.calls[0];
  assert.equal(verb, "add");
  assert.equal(call.env.containerId, "c1");
  assert.equal(call.env.args.podName, "p");
  assert.equal(call.conf.name, "net");
  assert.equal(call.conf.mode, "main");
});

Deno.test("dispatch() prints nothing for a handler without output, and routes each verb", async (t) => {
  const cases: [Record<string, string>, unknown, string][] = [
    [{ ...ADD_ENV, CNI_COMMAND: "DEL", CNI_NETNS: "" }, CONF, "del"],
    [{ ...ADD_ENV, CNI_COMMAND: "CHECK" }, { ...CONF, prevResult: {} }, "check"],
    [{ CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, { ...CONF, cniVersion: "1.1.0" }, "gc"],
    [{ CNI_COMMAND: "STATUS" }, { ...CONF, cniVersion: "1.1.0" }, "status"],
  ];
  for (const [env, conf, verb] of cases) {
    await t.step(verb, async () => {
      const r = await run(env, conf);
      assert.equal(r.code, 0, r.stdout);
      assert.equal(r.stdout, "");
      assert.deepEqual(r.calls.map(([v]) => v), [verb]);
    });
  }
});

Deno.test("dispatch() passes a CniError through with the netconf's cniVersion and exit 1", async () => {
  const r = await run(ADD_ENV, { ...CONF, cniVersion: "0.4.0" }, () => {
    throw new CniError(101, "Pool default is exhausted", "no free block");
  });
  assert.equal(r.code, 1);
  assert.deepEqual(json(r), {
    cniVersion: "0.4.0",
    code: 101,
    msg: "Pool default is exhausted",
    details: "no free block",
  });
  assert.equal(r.stderr, "");
});

Deno.test("dispatch() leaves details out of the error JSON when there are none", async () => {
  const r = await run(ADD_ENV, CONF, () => Promise.reject(new CniError(11, "Try later")));
  assert.deepEqual(json(r), { cniVersion: "1.0.0", code: 11, msg: "Try later" });
});

Deno.test("dispatch() turns any other error into 999 and writes its stack to stderr", async () => {
  const r = await run(ADD_ENV, CONF, () => Promise.reject(new RangeError("boom")));
  assert.equal(r.code, 1);
  assert.deepEqual(json(r), { cniVersion: "1.0.0", code: 999, msg: "Internal error: boom" });
  assert.match(r.stderr, /^coil: RangeError: boom\n\s+at /);
  const thrown = await run(ADD_ENV, CONF, () => Promise.reject("a string"));
  assert.equal(json(thrown).msg, "Internal error: a string");
});

Deno.test("dispatch() reads stdin, then reports every env problem as 4 without calling a handler", async () => {
  const r = await run({ CNI_COMMAND: "ADD", CNI_IFNAME: "a/b" }, CONF);
  assert.equal(r.code, 1);
  assert.equal(r.stdinRead, true);
  const out = json(r);
  assert.equal(out.code, 4);
  assert.equal(out.cniVersion, "1.1.0");
  assert.match(out.msg as string, /CNI_CONTAINERID is missing; CNI_NETNS is missing; CNI_IFNAME "a\/b"/);
  assert.equal(r.calls.length, 0);
});

Deno.test("dispatch() gives 5 when stdin cannot be read", async () => {
  const r = await run(ADD_ENV, new Error("Broken pipe"));
  assert.deepEqual(json(r), {
    cniVersion: "1.1.0",
    code: 5,
    msg: "Cannot read the netconf from stdin: Broken pipe",
  });
});

Deno.test("dispatch() rejects a bad netconf before any handler: 6, 1, 7", async (t) => {
  const cases: [string, unknown, number][] = [
    ["not JSON", "{", 6],
    ["unsupported version", { ...CONF, cniVersion: "0.2.0" }, 1],
    ["no name", { cniVersion: "1.0.0", type: "coil" }, 7],
  ];
  for (const [title, stdin, code] of cases) {
    await t.step(title, async () => {
      const r = await run(ADD_ENV, stdin);
      assert.equal(r.code, 1);
      assert.equal(json(r).code, code);
      assert.equal(r.calls.length, 0);
    });
  }
});

Deno.test("dispatch() gates CHECK, GC and STATUS on the netconf version with code 1", async (t) => {
  const cases: [Record<string, string>, string][] = [
    [{ ...ADD_ENV, CNI_COMMAND: "CHECK" }, "0.3.1"],
    [{ CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, "1.0.0"],
    [{ CNI_COMMAND: "STATUS" }, "0.4.0"],
  ];
  for (const [env, cniVersion] of cases) {
    await t.step(`${env.CNI_COMMAND} at ${cniVersion}`, async () => {
      const r = await run(env, { ...CONF, cniVersion, prevResult: {} });
      assert.equal(r.code, 1);
      const out = json(r);
      assert.equal(out.code, 1);
      assert.equal(out.cniVersion, cniVersion);
      assert.match(out.msg as string, new RegExp(`does not allow ${env.CNI_COMMAND}`));
      assert.equal(r.calls.length, 0);
    });
  }
});
