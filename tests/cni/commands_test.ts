import assert from "node:assert/strict";
import type { AddResult, ApiRequest } from "../../cni/api.ts";
import { add, check, type Coild, del, gc, status } from "../../cni/commands.ts";
import { readEnv } from "../../cni/env.ts";
import { CniError } from "../../cni/errors.ts";
import { parseNetConf } from "../../cni/netconf.ts";
import type { CniCall } from "../../cni/skel.ts";

const ENV = {
  CNI_CONTAINERID: "c1",
  CNI_NETNS: "/var/run/netns/x",
  CNI_IFNAME: "eth0",
  CNI_ARGS:
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;K8S_POD_UID=uid;K8S_POD_INFRA_CONTAINER_ID=c1",
};
const MAIN = { cniVersion: "1.1.0", name: "net", type: "coil", mtu: 1450, hostRouteTable: 100 };
const IPAM = { cniVersion: "1.1.0", name: "net2", type: "ptp", mtu: 9000, ipam: { type: "coil" } };
const RESULT: AddResult = {
  interfaces: [{ name: "eth0", mac: "02:00:00:00:00:01", sandbox: "/var/run/netns/x" }],
  ips: [{ address: "10.1.0.5/32", gateway: "169.254.1.1", interface: 0 }],
  routes: [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }],
};
const ATTACHMENT = {
  network: "net",
  containerId: "c1",
  ifName: "eth0",
  netns: "/var/run/netns/x",
  podNamespace: "ns",
  podName: "pod",
  podUid: "uid",
};

function callOf(command: string, env: Record<string, string>, conf: unknown): CniCall {
  const vars: Record<string, string> = { CNI_COMMAND: command, CNI_PATH: "/opt/cni/bin", ...env };
  return {
    env: readEnv((name) => vars[name]),
    conf: parseNetConf(new TextEncoder().encode(JSON.stringify(conf))),
  };
}

/** A fake coild function (pure logic under test, not the protocol) recording requests. */
function fakeCoild(answer: (request: ApiRequest) => AddResult | undefined | Error = () => undefined) {
  const requests: ApiRequest[] = [];
  const coild: Coild = (request) => {
    requests.push(request);
    const out = answer(request);
    return out instanceof Error ? Promise.reject(out) : Promise.resolve(out);
  };
  return { coild, requests };
}

async function rejection(promise: Promise<unknown>): Promise<CniError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof CniError) return err;
    throw err;
  }
  assert.fail("no error");
}

Deno.test("add() sends the attachment, mode, mtu and table, and prints the result in the netconf's version", async () => {
  const { coild, requests } = fakeCoild(() => RESULT);
  const out = await add(callOf("ADD", ENV, { ...MAIN, cniVersion: "0.3.1" }), coild);
  assert.deepEqual(requests, [{ verb: "add", ...ATTACHMENT, mode: "main", mtu: 1450, hostRouteTable: 100 }]);
  assert.deepEqual(out, {
    cniVersion: "0.3.1",
    interfaces: [{ name: "eth0", mac: "02:00:00:00:00:01", sandbox: "/var/run/netns/x" }],
    ips: [{ version: "4", interface: 0, address: "10.1.0.5/32", gateway: "169.254.1.1" }],
    routes: [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }],
  });
});

Deno.test("add() in IPAM mode sends mode ipam with mtu and table 0 and prints no interfaces", async () => {
  const { coild, requests } = fakeCoild(() => RESULT);
  const out = await add(callOf("ADD", ENV, IPAM), coild);
  assert.deepEqual(requests, [{
    verb: "add",
    ...ATTACHMENT,
    network: "net2",
    mode: "ipam",
    mtu: 0,
    hostRouteTable: 0,
  }]);
  assert.deepEqual(out, {
    cniVersion: "1.1.0",
    ips: [{ address: "10.1.0.5/32", gateway: "169.254.1.1" }],
    routes: [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }],
  });
});

Deno.test("add() sends empty pod fields when CNI_ARGS lacks them (podman: no namespace)", async () => {
  const { coild, requests } = fakeCoild(() => RESULT);
  await add(callOf("ADD", { ...ENV, CNI_ARGS: "K8S_POD_NAME=web" }, MAIN), coild);
  assert.equal(requests[0].verb, "add");
  assert.deepEqual([requests[0].podNamespace, requests[0].podName, requests[0].podUid], ["", "web", ""]);
});

Deno.test("add() fails with 999 when coild succeeds without a result, and passes coild's errors", async () => {
  const empty = await rejection(add(callOf("ADD", ENV, MAIN), fakeCoild().coild));
  assert.equal(empty.code, 999);
  assert.match(empty.msg, /no result/);
  const exhausted = await rejection(
    add(callOf("ADD", ENV, MAIN), fakeCoild(() => new CniError(101, "Exhausted")).coild),
  );
  assert.equal(exhausted.code, 101);
});

Deno.test("del() sends the attachment, also without netns, and prints nothing", async () => {
  const { coild, requests } = fakeCoild();
  assert.equal(await del(callOf("DEL", { ...ENV, CNI_NETNS: "" }, MAIN), coild), undefined);
  assert.deepEqual(requests, [{ verb: "del", ...ATTACHMENT, netns: "", mode: "main", hostRouteTable: 100 }]);
  const ipam = fakeCoild();
  await del(callOf("DEL", ENV, IPAM), ipam.coild);
  assert.deepEqual(ipam.requests, [{
    verb: "del",
    ...ATTACHMENT,
    network: "net2",
    mode: "ipam",
    hostRouteTable: 0,
  }]);
});

Deno.test("del() keeps code 11 when coild is unreachable, so that the runtime retries", async () => {
  const err = await rejection(
    del(callOf("DEL", ENV, MAIN), fakeCoild(() => new CniError(11, "Unreachable")).coild),
  );
  assert.equal(err.code, 11);
});

Deno.test("check() needs a valid prevResult, then sends the attachment", async () => {
  const missing = fakeCoild();
  const err = await rejection(check(callOf("CHECK", ENV, MAIN), missing.coild));
  assert.equal(err.code, 7);
  assert.match(err.msg, /prevResult is missing/);
  assert.equal(missing.requests.length, 0);
  const bads: [object, RegExp][] = [
    [{ ips: [{ address: "10.0.0.1" }] }, /prevResult: ips\[0\].address "10.0.0.1" is not CIDR/],
    [{ ips: [{ address: "10.0.0.1/32", interface: 0 }] }, /prevResult: ips\[0\].interface 0 is not an index/],
    [{ interfaces: {} }, /prevResult: interfaces is \{\}/],
  ];
  for (const [prevResult, pattern] of bads) {
    const bad = fakeCoild();
    const err = await rejection(check(callOf("CHECK", ENV, { ...MAIN, prevResult }), bad.coild));
    assert.equal(err.code, 7);
    assert.match(err.msg, pattern);
    assert.equal(bad.requests.length, 0);
  }
  const { coild, requests } = fakeCoild();
  await check(callOf("CHECK", ENV, { ...IPAM, prevResult: { ips: [{ address: "10.1.0.5/32" }] } }), coild);
  assert.deepEqual(requests, [{
    verb: "check",
    ...ATTACHMENT,
    network: "net2",
    mode: "ipam",
    hostRouteTable: 0,
    prevIps: ["10.1.0.5/32"],
  }]);
});

Deno.test("gc() sends the valid attachments, an empty list too, and refuses to run without the key", async () => {
  const { coild, requests } = fakeCoild();
  await gc(
    callOf("GC", {}, { ...MAIN, "cni.dev/valid-attachments": [{ containerID: "c1", ifname: "eth0" }] }),
    coild,
  );
  await gc(callOf("GC", {}, { ...IPAM, "cni.dev/attachments": [] }), coild);
  assert.deepEqual(requests, [
    { verb: "gc", network: "net", validAttachments: [{ containerId: "c1", ifName: "eth0" }] },
    { verb: "gc", network: "net2", validAttachments: [] },
  ]);
  const none = fakeCoild();
  const err = await rejection(gc(callOf("GC", {}, MAIN), none.coild));
  assert.equal(err.code, 7);
  assert.match(err.msg, /cni.dev\/valid-attachments is missing/);
  assert.equal(none.requests.length, 0);
});

Deno.test("status() sends the network and reports every failure as 50 unless coild said 50 or 51", async (t) => {
  const { coild, requests } = fakeCoild();
  assert.equal(await status(callOf("STATUS", {}, MAIN), coild), undefined);
  assert.deepEqual(requests, [{ verb: "status", network: "net" }]);
  const cases: [CniError, number, RegExp][] = [
    [
      new CniError(11, "Node daemon coild is not reachable at /x"),
      50,
      /^Coil cannot serve ADD: Node daemon coild/,
    ],
    [new CniError(999, "Invalid reply from coild", "raw"), 50, /^Coil cannot serve ADD: Invalid reply/],
    [new CniError(101, "Pool default is exhausted"), 50, /exhausted/],
    [new CniError(50, "etcd is down"), 50, /^etcd is down$/],
    [new CniError(51, "Routes are not exported"), 51, /^Routes are not exported$/],
  ];
  for (const [error, code, pattern] of cases) {
    await t.step(`coild fails with ${error.code}`, async () => {
      const err = await rejection(status(callOf("STATUS", {}, MAIN), fakeCoild(() => error).coild));
      assert.equal(err.code, code);
      assert.match(err.msg, pattern);
      assert.equal(err.details, error.details);
    });
  }
});
