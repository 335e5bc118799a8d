// coild's HTTP endpoint: /metrics, /healthz and /readyz over a real listener, and readiness over a real
// etcd and a real CNI socket: 503 within the etcd health deadline when etcd dies, 200 once it is back.

import assert from "node:assert/strict";
import { createEtcdHealth } from "../../daemon/etcd_health.ts";
import { isLoopback, parseListenAddress, serveHttp } from "../../daemon/http_server.ts";
import { allOf, socketAccepts } from "../../daemon/readiness.ts";
import { serveSocket } from "../../daemon/socket_server.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { killEtcdForRestart, startEtcd } from "../helpers/etcd.ts";
import { createNetns } from "../helpers/netns.ts";
import { logEntries, startNode } from "./_lifecycle_fixture.ts";

/** Polls `url` until it answers `status`; returns the body and how long it took. */
async function statusBecomes(
  url: string,
  status: number,
  limitMs: number,
): Promise<{ body: string; ms: number }> {
  const started = performance.now();
  let last = "";
  while (performance.now() - started < limitMs) {
    const res = await fetch(url);
    last = `${res.status} ${await res.text()}`;
    if (res.status === status) return { body: last.slice(4), ms: performance.now() - started };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer ${status} within ${limitMs} ms; last: ${last}`);
}

Deno.test("parseListenAddress() reads HOST:PORT forms and rejects others", async (t) => {
  const good: [string, string, number][] = [
    ["127.0.0.1:9384", "127.0.0.1", 9384],
    ["[::1]:9384", "::1", 9384],
    [":9384", "0.0.0.0", 9384],
    ["localhost:0", "localhost", 0],
  ];
  for (const [text, hostname, port] of good) {
    await t.step(text, () => assert.deepEqual(parseListenAddress(text), { hostname, port }));
  }
  for (
    const text of ["127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "::1:9384", "[::1]9384", "a b:1", ":-1"]
  ) {
    await t.step(`rejects "${text}"`, () => {
      assert.throws(() => parseListenAddress(text), new RegExp(`^TypeError: Invalid --metrics-address "`));
    });
  }
});

Deno.test("serveHttp() answers /metrics, /healthz and /readyz", async (t) => {
  let ready = { ok: false, reason: "etcd is unreachable: connect ECONNREFUSED\nno pool" };
  const server = serveHttp({
    address: { hostname: "127.0.0.1", port: 0 },
    metrics: () => "# HELP t_x X.\n# TYPE t_x gauge\nt_x 1\n",
    ready: () => Promise.resolve(ready),
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    await t.step("/metrics in the text format", async () => {
      const res = await fetch(`${base}/metrics`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
      assert.equal(await res.text(), "# HELP t_x X.\n# TYPE t_x gauge\nt_x 1\n");
    });
    await t.step("/healthz: 200 while the process answers", async () => {
      const res = await fetch(`${base}/healthz`);
      assert.deepEqual([res.status, await res.text()], [200, "ok\n"]);
    });
    await t.step("/readyz: 503 with every reason, then 200", async () => {
      let res = await fetch(`${base}/readyz`);
      assert.deepEqual([res.status, await res.text()], [
        503,
        "etcd is unreachable: connect ECONNREFUSED\nno pool\n",
      ]);
      ready = { ok: true, reason: "" };
      res = await fetch(`${base}/readyz`);
      assert.deepEqual([res.status, await res.text()], [200, "ok\n"]);
    });
    await t.step("unknown paths and methods", async () => {
      let res = await fetch(`${base}/nope`);
      assert.deepEqual([res.status, await res.text()], [404, "Not found: /nope\n"]);
      res = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
      assert.equal(res.status, 405);
      assert.equal(res.headers.get("allow"), "GET, HEAD");
      await res.body?.cancel();
    });
    await t.step("a taken address fails naming it", () => {
      assert.throws(
        () =>
          serveHttp({
            address: { hostname: "127.0.0.1", port: server.addr.port },
            metrics: () => "",
            ready: () => Promise.resolve(ready),
          }),
        new RegExp(`^Error: Cannot serve metrics on 127\\.0\\.0\\.1:${server.addr.port}: `),
      );
    });
  } finally {
    await server.close();
    await server.close();
  }
});

Deno.test("allOf() fails a check that throws or hangs, with its reason", async () => {
  const check = allOf([
    () => Promise.resolve({ ok: true }),
    () => Promise.reject(new Error("boom")),
    () => new Promise(() => {}),
  ], 200);
  assert.deepEqual(await check(), { ok: false, reason: "boom\na check took over 200 ms" });
});

Deno.test("/readyz follows etcd and the CNI socket for real", async (t) => {
  await using etcd = await startEtcd();
  await using restarted = new AsyncDisposableStack();
  const dir = await Deno.makeTempDir({ prefix: "coil-t-readyz-" });
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 2000 });
  const socket = `${dir}/coild.sock`;
  const cacheMs = 1500;
  const timeoutMs = 2000;
  const etcdHealth = createEtcdHealth({ client, probeKey: `${etcd.newPrefix()}probe`, cacheMs, timeoutMs });
  const server = serveHttp({
    address: { hostname: "127.0.0.1", port: 0 },
    metrics: () => "",
    ready: allOf([etcdHealth, socketAccepts(socket)]),
  });
  const readyz = `http://127.0.0.1:${server.addr.port}/readyz`;
  try {
    await t.step("no CNI socket yet: 503 naming it", async () => {
      const { body } = await statusBecomes(readyz, 503, 5000);
      assert.match(body, new RegExp(`^CNI socket "${socket}" does not accept connections: `));
    });
    const cni = await serveSocket(socket, () => Promise.resolve({ ok: true }));
    try {
      await t.step("etcd answers and the socket accepts: 200", async () => {
        await statusBecomes(readyz, 200, 5000);
      });
      await t.step("etcd killed: 503 within the health cache time plus its deadline", async () => {
        const restart = await killEtcdForRestart(etcd);
        const { body, ms } = await statusBecomes(readyz, 503, cacheMs + timeoutMs + 1000);
        assert.match(body, /^etcd is unreachable: /);
        console.log(`readyz turned 503 ${Math.round(ms)} ms after etcd was killed`);
        restarted.use(await restart());
      });
      await t.step("etcd back: 200 again", async () => {
        const { ms } = await statusBecomes(readyz, 200, 15_000);
        console.log(`readyz turned 200 ${Math.round(ms)} ms after etcd served again`);
      });
    } finally {
      await cni.close();
    }
  } finally {
    await server.close();
    client.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("isLoopback() knows the addresses only this host reaches", async (t) => {
  const cases: [string, boolean][] = [
    ["127.0.0.1:9384", true],
    ["127.3.2.1:1", true],
    ["[::1]:9384", true],
    ["localhost:9384", true],
    [":9384", false],
    ["0.0.0.0:9384", false],
    ["[::]:9384", false],
    ["10.0.0.1:9384", false],
    ["127.example.com:9384", false],
  ];
  for (const [text, loopback] of cases) {
    await t.step(text, () => assert.equal(isLoopback(parseListenAddress(text)), loopback));
  }
});

/** `curl` from inside `netns`: the HTTP status, or "refused" when nothing listens there. */
async function curlIn(netns: string, url: string): Promise<string> {
  const out = await new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      netns,
      "curl",
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--max-time",
      "5",
      url,
    ],
  }).output();
  // curl's exit 7: "Failed to connect to host".
  return out.code === 7 ? "refused" : new TextDecoder().decode(out.stdout);
}

/** Listening TCP sockets on `port` in the netns, as "address:port" from /proc/net/tcp and tcp6 (hex). */
async function listeners(netns: string, port: number): Promise<string[]> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const out = await new Deno.Command("ip", {
    args: ["netns", "exec", netns, "cat", "/proc/net/tcp", "/proc/net/tcp6"],
  })
    .output();
  return new TextDecoder().decode(out.stdout).split("\n").map((line) => line.trim().split(/\s+/))
    // Columns: sl, local_address, rem_address, st (0A: LISTEN).
    .filter((cols) => cols[3] === "0A" && cols[1]?.endsWith(`:${hexPort}`)).map((cols) => cols[1]);
}

Deno.test("coild serves metrics on loopback unless told otherwise, and warns when told", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  // A neighbour on a veth: the node netns gets an address that is not loopback, as a node's uplink.
  await using neighbour = await createNetns();
  const suffix = crypto.randomUUID().slice(0, 6);
  try {
    await using node = await startNode({
      etcd,
      client,
      setup: async (ns) => {
        await ns.exec([
          "ip",
          "link",
          "add",
          `mtn${suffix}`,
          "type",
          "veth",
          "peer",
          "name",
          `mtp${suffix}`,
          "netns",
          neighbour.name,
        ]);
        await ns.exec(["ip", "addr", "add", "10.254.93.1/30", "dev", `mtn${suffix}`]);
        await ns.exec(["ip", "link", "set", `mtn${suffix}`, "up"]);
        await neighbour.exec(["ip", "addr", "add", "10.254.93.2/30", "dev", `mtp${suffix}`]);
        await neighbour.exec(["ip", "link", "set", `mtp${suffix}`, "up"]);
      },
    });
    await t.step("by default: 127.0.0.1:9384 only, with no warning", async () => {
      // 0100007F:24A8 is 127.0.0.1:9384 as the kernel prints it (little-endian address, hex port).
      assert.deepEqual(await listeners(node.ns.name, 9384), ["0100007F:24A8"]);
      assert.equal(await curlIn(node.ns.name, "http://127.0.0.1:9384/healthz"), "200");
      assert.equal(await curlIn(node.ns.name, "http://10.254.93.1:9384/healthz"), "refused");
      assert.equal(await curlIn(neighbour.name, "http://10.254.93.1:9384/metrics"), "refused");
      assert.deepEqual(logEntries(node.coild).filter((e) => /loopback/.test(String(e.msg))), []);
    });
    await t.step(
      "--metrics-address 0.0.0.0:9385: reachable from the neighbour, and logged as a warning",
      async () => {
        await node.stop();
        await node.start(["--metrics-address", "0.0.0.0:9385"]);
        assert.equal(await curlIn(neighbour.name, "http://10.254.93.1:9385/metrics"), "200");
        const warnings = logEntries(node.coild).filter((e) => /loopback/.test(String(e.msg)));
        assert.deepEqual(warnings.map((e) => [e.level, e.msg, e.address]), [[
          "warn",
          "serving metrics beyond loopback: anyone who reaches it sees this node's pods and blocks",
          "0.0.0.0:9385",
        ]]);
      },
    );
  } finally {
    client.close();
  }
});
