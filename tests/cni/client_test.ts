import assert from "node:assert/strict";
import type { AddRequest, DelRequest } from "../../cni/api.ts";
import { callCoild } from "../../cni/client.ts";
import { CniError } from "../../cni/errors.ts";
import { type FakeReply, startFakeCoild } from "./_fake_coild.ts";

const ADD: AddRequest = {
  verb: "add",
  network: "net",
  containerId: "c1",
  ifName: "eth0",
  netns: "/var/run/netns/x",
  podNamespace: "ns",
  podName: "pod",
  podUid: "uid",
  mode: "main",
  mtu: 0,
  hostRouteTable: 0,
};
const DEL: DelRequest = { ...ADD, verb: "del", hostRouteTable: 0 };
const RESULT = {
  interfaces: [{ name: "eth0", mac: "02:00:00:00:00:01", sandbox: "/var/run/netns/x" }],
  ips: [{ address: "10.1.0.5/32", gateway: "169.254.1.1", interface: 0 }],
  routes: [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }],
};

/** The CniError that callCoild() throws against a fake coild answering `reply`. */
async function failureWith(reply: FakeReply, timeoutMs = 60_000): Promise<CniError> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-cni-" });
  try {
    await using coild = startFakeCoild(dir, () => reply);
    return await failureAt(coild.path, timeoutMs);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function failureAt(path: string, timeoutMs = 60_000): Promise<CniError> {
  try {
    await callCoild(path, DEL, timeoutMs);
  } catch (err) {
    if (err instanceof CniError) return err;
    throw err;
  }
  assert.fail("callCoild() succeeded");
}

Deno.test("callCoild() sends the request as one JSON line and returns the ADD result", async () => {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-cni-" });
  try {
    await using coild = startFakeCoild(dir, () => JSON.stringify({ ok: true, result: RESULT }));
    assert.deepEqual(await callCoild(coild.path, ADD, 60_000), RESULT);
    assert.equal(coild.requests.length, 1);
    assert.ok(coild.requests[0].endsWith("}\n"));
    assert.equal(coild.requests[0].indexOf("\n"), coild.requests[0].length - 1);
    assert.deepEqual(JSON.parse(coild.requests[0]), ADD);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("callCoild() returns undefined for a success without result", async () => {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-cni-" });
  try {
    await using coild = startFakeCoild(dir, () => '{"ok":true}\n');
    assert.equal(await callCoild(coild.path, DEL, 60_000), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("callCoild() passes coild's error code, msg and details through", async (t) => {
  for (const code of [3, 7, 11, 100, 101]) {
    await t.step(`code ${code}`, async () => {
      const err = await failureWith(
        JSON.stringify({ ok: false, code, msg: "No pool for namespace ns", details: "d" }),
      );
      assert.equal(err.code, code);
      assert.equal(err.msg, "No pool for namespace ns");
      assert.equal(err.details, "d");
    });
  }
  await t.step("without details", async () => {
    const err = await failureWith('{"ok":false,"code":101,"msg":"Pool default is exhausted"}');
    assert.equal(err.details, undefined);
  });
});

Deno.test("callCoild() turns a reply that is not the protocol into 999 with the raw text", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["failure without code", '{"ok":false,"msg":"lost"}', /a failure with code undefined/],
    ["failure with code 0", '{"ok":false,"code":0,"msg":"x"}', /a failure with code 0/],
    ["failure with string code", '{"ok":false,"code":"11","msg":"x"}', /a failure with code "11"/],
    ["failure without msg", '{"ok":false,"code":11}', /a failure with msg undefined/],
    ["failure with numeric details", '{"ok":false,"code":11,"msg":"m","details":5}', /details 5/],
    ["not JSON", "500 Internal Server Error", /not JSON/],
    ["truncated JSON", '{"ok":tr', /not JSON/],
    ["no ok", '{"result":{}}', /no boolean ok/],
    ["array", "[]", /no boolean ok/],
    [
      "bad result",
      '{"ok":true,"result":{"ips":[{"address":"nope"}]}}',
      /Invalid result: ips\[0\].address "nope"/,
    ],
  ];
  for (const [title, reply, pattern] of cases) {
    await t.step(title, async () => {
      const err = await failureWith(reply);
      assert.equal(err.code, 999);
      assert.match(err.msg, /^Invalid reply from coild at \/.*\.sock: /);
      assert.match(err.msg, pattern);
      assert.equal(err.details, reply);
    });
  }
});

Deno.test("callCoild() cuts a huge bad reply down in details and refuses replies over 1 MiB", async () => {
  const err = await failureWith("x".repeat(5000));
  assert.equal(err.code, 999);
  assert.equal(err.details, "x".repeat(2000) + "...");
  const huge = await failureWith("x".repeat((1 << 20) + 10));
  assert.equal(huge.code, 999);
  assert.match(huge.msg, /longer than 1048576 bytes/);
});

Deno.test("callCoild() gives 11 when coild closes without a reply", async () => {
  const err = await failureWith("");
  assert.equal(err.code, 11);
  assert.match(err.msg, /not reachable at \/.*: it closed the connection without a reply/);
});

Deno.test("callCoild() gives 11 naming the path when the socket does not exist", async () => {
  const err = await failureAt("/nonexistent/coild.sock");
  assert.equal(err.code, 11);
  assert.equal(
    err.msg,
    "Node daemon coild is not reachable at /nonexistent/coild.sock: the socket does not exist",
  );
});

Deno.test("callCoild() gives 11 when nothing listens on the socket (coild died and left it)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-cni-" });
  try {
    const path = `${dir}/coild.sock`;
    const listener = Deno.listen({ transport: "unix", path });
    Deno.renameSync(path, `${path}.stale`); // Deno unlinks the socket on close: keep a stale one
    listener.close();
    const err = await failureAt(`${path}.stale`);
    assert.equal(err.code, 11);
    assert.match(err.msg, /not reachable at .*coild\.sock\.stale: connection refused/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("callCoild() gives 11 when coild does not answer within the timeout", async () => {
  const err = await failureWith("hold", 100);
  assert.equal(err.code, 11);
  assert.match(err.msg, /not reachable at .*: no reply within 100 ms/);
});

Deno.test("callCoild() gives 5 for other socket errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-cni-" });
  try {
    await Deno.writeTextFile(`${dir}/file`, "");
    const err = await failureAt(`${dir}/file/coild.sock`); // a path through a regular file: ENOTDIR
    assert.equal(err.code, 5);
    assert.match(err.msg, /^Cannot talk to coild at .*file\/coild.sock: /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
