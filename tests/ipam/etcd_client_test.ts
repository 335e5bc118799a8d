// The etcd connection: failover across endpoints, streams without call deadlines, and failures
// reported in a few words.

import assert from "node:assert/strict";
import { conciseCause, connectEtcd, unavailable } from "../../ipam/etcd_client.ts";
import { isIpamError } from "../../ipam/errors.ts";
import { freePort, startEtcd } from "../helpers/etcd.ts";

Deno.test("conciseCause() keeps what an operator needs from grpc-js messages", async (t) => {
  const cases: [string, string, string][] = [
    [
      "connection refused",
      "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. " +
      "Resolution note: ",
      "connect ECONNREFUSED 127.0.0.1:1",
    ],
    [
      "missing UNIX socket",
      "14 UNAVAILABLE: No connection established. Last error: Error: connect ENOENT /run/etcd.sock. " +
      "Resolution note: ",
      "connect ENOENT /run/etcd.sock",
    ],
    [
      "deadline",
      "4 DEADLINE_EXCEEDED: Deadline exceeded after 1.001s,metadata filters: 0.001s,Waiting for LB pick",
      "deadline exceeded after 1.001s",
    ],
    [
      "TLS rejection, with grpc-js's timestamp",
      "14 UNAVAILABLE: No connection established. Last error: write EPIPE (2026-11-26T14:18:54.897Z). " +
      "Resolution note: ",
      "write EPIPE (etcd closed the connection; over TLS: no client certificate it trusts)",
    ],
    [
      "a status prefix only",
      "13 INTERNAL: Received RST_STREAM with code 2",
      "Received RST_STREAM with code 2",
    ],
    [
      "no connection yet (grpc-js says 'Last error: null')",
      "14 UNAVAILABLE: No connection established. Last error: null. Resolution note: ",
      "no connection established",
    ],
    ["plain text", "Something else", "Something else"],
  ];
  for (const [what, message, expected] of cases) {
    await t.step(what, () => assert.equal(conciseCause(message), expected));
  }
});

Deno.test("connectEtcd() against real etcd servers", async (t) => {
  await using etcd = await startEtcd();
  const dead = `http://127.0.0.1:${freePort()}`;

  await t.step("a call fails over to the endpoint that answers, whichever the pool tries first", async () => {
    for (const endpoints of [[dead, etcd.endpoint], [etcd.endpoint, dead]]) {
      const client = await connectEtcd({ endpoints, prefix: "/", callTimeoutMs: 5000 });
      try {
        // The pool shuffles hosts per call: many calls make sure the dead one is tried first often.
        for (let i = 0; i < 30; i++) await client.put(`/failover/${i}`).value(String(i));
        assert.equal(await client.get("/failover/29").string(), "29");
      } finally {
        client.close();
      }
    }
  });

  await t.step("with every endpoint down, the error says why in a few words", async () => {
    const client = await connectEtcd({ endpoints: [dead, dead], prefix: "/", callTimeoutMs: 5000 });
    try {
      const err = await client.get("/x").string().then(() => undefined, (e) => e);
      const wrapped = unavailable(err);
      assert.ok(isIpamError(wrapped, "unavailable"));
      assert.match(wrapped.message, /^etcd is unreachable: connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
      assert.equal(wrapped.cause, err, "the original error stays as the cause");
    } finally {
      client.close();
    }
  });

  await t.step("a watch outlives the call deadline without being re-opened", async () => {
    const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 300 });
    try {
      const watcher = await client.watch().prefix("/watched/").create();
      const disconnects: unknown[] = [];
      watcher.on("disconnected", (err) => disconnects.push(err));
      const seen = new Promise<string>((resolve) => watcher.on("put", (kv) => resolve(kv.value.toString())));
      // Several deadlines long: a deadline on the stream would have ended it by now.
      await new Promise((r) => setTimeout(r, 1500));
      await client.put("/watched/a").value("1");
      assert.equal(await seen, "1");
      assert.deepEqual(disconnects, []);
      await watcher.cancel();
    } finally {
      client.close();
    }
  });
});
