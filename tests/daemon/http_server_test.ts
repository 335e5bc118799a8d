// coild's HTTP endpoint: /metrics, /healthz and /readyz over a real listener, and readiness over a real
// etcd and a real CNI socket: 503 within the etcd health deadline when etcd dies, 200 once it is back.

import assert from "node:assert/strict";
import { createEtcdHealth } from "../../daemon/etcd_health.ts";
import { parseListenAddress, serveHttp } from "../../daemon/http_server.ts";
import { allOf, socketAccepts } from "../../daemon/readiness.ts";
import { serveSocket } from "../../daemon/socket_server.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { killEtcdForRestart, startEtcd } from "../helpers/etcd.ts";

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
