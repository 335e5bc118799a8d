// CNI STATUS: ready (0) only when coild answers, etcd answers and a pool serves pods; otherwise 50 with
// the reason. The etcd probe behind it is cached, so runtimes polling every few seconds cost little.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { createEtcdHealth } from "../../daemon/etcd_health.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import type { CniOutcome } from "../helpers/cni.ts";
import { freePort, startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns } from "../helpers/netns.ts";
import { cni, startNode, type TestNode, waitUntil } from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

/** Range calls etcd has answered, from its Prometheus metrics. */
async function rangeCalls(etcd: TestEtcd): Promise<number> {
  const text = await (await fetch(`${etcd.endpoint}/metrics`)).text();
  const line = text.split("\n").find((l) =>
    l.startsWith("grpc_server_handled_total{") && l.includes('grpc_method="Range"') &&
    l.includes('grpc_code="OK"')
  );
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

async function status(node: TestNode): Promise<CniOutcome> {
  return await cni(node, "STATUS");
}

/** Polls STATUS until its exit code is `code`; returns that outcome. */
async function statusBecomes(node: TestNode, code: 0 | 50, why: string): Promise<CniOutcome> {
  let last: CniOutcome | undefined;
  await waitUntil(why, async () => {
    last = await status(node);
    return last.code === (code === 0 ? 0 : 1) && (code === 0 || last.json?.code === 50);
  }, () => `last: ${last?.stdout}\n${node.coild.log()}`);
  return last!;
}

Deno.test("createEtcdHealth() shares one probe among callers within the cache time", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    await t.step("twenty concurrent checks make one etcd read", async () => {
      const health = createEtcdHealth({ client, probeKey: "/probe", cacheMs: 60_000 });
      const before = await rangeCalls(etcd);
      const results = await Promise.all(Array.from({ length: 20 }, () => health()));
      assert.ok(results.every((r) => r.ok));
      assert.ok(await health().then((r) => r.ok), "a later call within the cache time reuses the result");
      assert.equal(await rangeCalls(etcd) - before, 1);
    });
    await t.step("without caching every check reads etcd", async () => {
      const health = createEtcdHealth({ client, probeKey: "/probe", cacheMs: 0 });
      const before = await rangeCalls(etcd);
      for (let i = 0; i < 3; i++) assert.ok((await health()).ok);
      assert.equal(await rangeCalls(etcd) - before, 3);
    });
    await t.step("an unreachable etcd gives the reason in a few words", async () => {
      const nowhere = await connectEtcd({ endpoints: [`http://127.0.0.1:${freePort()}`], prefix: "/" });
      try {
        const result = await createEtcdHealth({ client: nowhere, probeKey: "/probe" })();
        assert.equal(result.ok, false);
        assert.match(result.reason ?? "", /^etcd is unreachable: connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
      } finally {
        nowhere.close();
      }
    });
  } finally {
    client.close();
  }
});

Deno.test("CNI STATUS reports whether coild can serve ADD", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    await using node = await startNode({ etcd, client });

    await t.step("no pool: 50 saying so", async () => {
      const out = await status(node);
      assert.equal(out.code, 1);
      assert.equal(out.json?.code, 50);
      assert.match(String(out.json?.msg), /No pool exists/);
    });

    await t.step("a pool created: 0", async () => {
      await new PoolStore(client, node.prefix).createPool(
        parsePool("default", { subnets: ["10.140.0.0/16"], blockSizeBits: 5 }),
      );
      const out = await statusBecomes(node, 0, "STATUS is ready once the pool exists");
      assert.equal(out.stdout.trim(), "");
    });

    await t.step("etcd frozen: 50 saying etcd is unreachable; thawed: 0 again", async () => {
      etcd.process.kill("SIGSTOP");
      try {
        const out = await statusBecomes(node, 50, "STATUS reports the frozen etcd");
        assert.match(String(out.json?.msg), /etcd is unreachable: deadline exceeded/);
      } finally {
        etcd.process.kill("SIGCONT");
      }
      await statusBecomes(node, 0, "STATUS is ready once etcd answers again");
    });

    await t.step("etcd gone: 50 saying etcd is unreachable", async () => {
      await etcd.stop();
      const out = await statusBecomes(node, 50, "STATUS reports the dead etcd");
      assert.match(String(out.json?.msg), /etcd is unreachable: connect ENOENT/);
    });

    await t.step("coild gone: 50", async () => {
      await node.stop();
      const out = await status(node);
      assert.equal(out.code, 1);
      assert.equal(out.json?.code, 50);
    });
  } finally {
    client.close();
  }
});
