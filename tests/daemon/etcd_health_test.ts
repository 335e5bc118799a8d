// etcd's health as coild probes it: a raised NOSPACE alarm is reported while etcd still answers, so that
// STATUS and /readyz fail with the reason (etcdServes()) and the watchdog, which looks at `ok`, does not
// restart a coild that could not start again under the alarm.

import assert from "node:assert/strict";
import { createEtcdHealth } from "../../daemon/etcd_health.ts";
import { etcdServes } from "../../daemon/readiness.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { fillUntilNoSpace, freeSpaceAndDisarm } from "../helpers/etcd_space.ts";

Deno.test("createEtcdHealth() reports etcd's NOSPACE alarm while etcd answers", async (t) => {
  await using etcd = await startEtcd({ args: ["--quota-backend-bytes", String(4 * 1024 * 1024)] });
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix, callTimeoutMs: 5000 });
  try {
    const fresh = () => createEtcdHealth({ client, probeKey: `${prefix}probe`, cacheMs: 0 });
    await t.step("no alarm: ok, and ready", async () => {
      assert.deepEqual(await fresh()(), { ok: true });
      assert.equal((await etcdServes(fresh())()).ok, true);
    });
    const fillPrefix = `${prefix}fill/`;
    await fillUntilNoSpace(client, fillPrefix);
    await t.step("NOSPACE: ok (etcd answers) with the alarm named; not ready, for that reason", async () => {
      const health = await fresh()();
      assert.equal(health.ok, true);
      assert.match(health.alarm ?? "", /^etcd is out of space \(NOSPACE alarm, member \d+\)/);
      assert.deepEqual(await etcdServes(fresh())(), { ok: false, reason: health.alarm });
    });
    await t.step("after the runbook: no alarm", async () => {
      await freeSpaceAndDisarm(client, fillPrefix);
      assert.deepEqual(await fresh()(), { ok: true });
    });
  } finally {
    client.close();
  }
});

Deno.test("etcdServes() passes an unreachable etcd's reason through", async () => {
  const reason = "etcd is unreachable: connect ECONNREFUSED 127.0.0.1:1";
  assert.deepEqual(await etcdServes(() => Promise.resolve({ ok: false, reason }))(), { ok: false, reason });
});
