// The client's failover against a member that holds a request unanswered (SIGSTOPped: its sockets
// accept, it answers nothing): a read goes to the next member, but a write that ran to its deadline is
// not sent again, since the paused member commits it when it wakes up.

import assert from "node:assert/strict";
import { connectEtcd, unavailable } from "../../ipam/etcd_client.ts";
import { startEtcd } from "../helpers/etcd.ts";

const TIMEOUT_MS = 1000;

Deno.test("a write that timed out on a paused member is not re-sent to another", async () => {
  // Two single-member etcds stand for two members of a cluster.
  await using paused = await startEtcd();
  await using live = await startEtcd();
  const prefix = paused.newPrefix();
  const client = await connectEtcd({
    endpoints: [paused.endpoint, live.endpoint],
    prefix,
    callTimeoutMs: TIMEOUT_MS,
  });
  let stopped = false;
  try {
    // Connections to both, so that a request to the paused one is sent and then sits unanswered.
    for (let i = 0; i < 8; i++) await client.get(`${prefix}warm`).string();
    paused.process.kill("SIGSTOP");
    stopped = true;
    let timedOut = 0;
    for (let i = 0; timedOut === 0; i++) {
      assert.ok(i < 30, "no write went to the paused member first");
      const start = Date.now();
      const outcome = await client.put(`${prefix}k${i}`).value("v").then(
        () => "ok",
        (err) => unavailable(err),
      );
      const ms = Date.now() - start;
      if (ms < TIMEOUT_MS) {
        assert.equal(outcome, "ok");
        continue;
      }
      timedOut++;
      assert.notEqual(outcome, "ok", `k${i} was re-sent after ${ms} ms`);
      assert.match(String(outcome), /not sent to another member/);
    }
    // Reads still go on to the next member.
    for (let i = 0; i < 6; i++) await client.get(`${prefix}k0`).string();
  } finally {
    if (stopped) paused.process.kill("SIGCONT");
    client.close();
  }
});
