// The schema key (ipam/schema.ts) against a real etcd: absent means version 1 and is upgraded by one
// create-only txn, written once however many coilds start at once and whatever old coilds write meanwhile;
// an equal version is left alone, a newer or unreadable one is refused with nothing written. The admin
// CLI shows the version, and its commands that write refuse a newer one while reads go on.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import {
  assertSchemaWritable,
  ensureSchema,
  readSchema,
  SCHEMA_VERSION,
  SchemaError,
  schemaValue,
  UNVERSIONED,
} from "../../ipam/schema.ts";
import { assertCliOk, runCoilCli } from "../helpers/coil_cli.ts";
import { readPrefix } from "../helpers/etcd_dump.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { currentRevision, fillUntilNoSpace, noSpaceRaised } from "../helpers/etcd_space.ts";

const OLD_BLOCK = JSON.stringify({ node: "old-node", pool: "default", claimedAt: "2024-01-01T00:00:00Z" });

function connect(endpoint: string): Promise<Etcd3> {
  return connectEtcd({ endpoints: [endpoint], prefix: "/", callTimeoutMs: 5000 });
}

/** Whether `err` is the SchemaError of `kind` whose message names `text`. */
function schemaError(kind: string, text: string) {
  return (err: unknown) => {
    assert.ok(err instanceof SchemaError, `not a SchemaError: ${err}`);
    assert.equal(err.kind, kind);
    assert.ok(err.message.includes(text), err.message);
    return true;
  };
}

Deno.test("schema key against a real etcd", async (t) => {
  await using etcd = await startEtcd();
  const client = await connect(etcd.endpoint);
  const prefixes: string[] = [];
  const fresh = () => {
    const prefix = etcd.newPrefix();
    prefixes.push(prefix);
    return prefix;
  };
  try {
    await t.step("readSchema() reads data without the key as version 1", async () => {
      const prefix = fresh();
      await client.put(`${prefix}blocks/default/10.1.0.0_27`).value(OLD_BLOCK);
      assert.deepEqual(await readSchema(client, prefix), {
        key: keysFor(prefix).schema(),
        version: UNVERSIONED,
      });
    });

    await t.step("ensureSchema() writes the key once, then leaves it alone", async () => {
      const prefix = fresh();
      const key = keysFor(prefix).schema();
      await client.put(`${prefix}blocks/default/10.1.0.0_27`).value(OLD_BLOCK);
      const before = await readPrefix(client, prefix);
      assert.deepEqual(await ensureSchema(client, prefix), { version: SCHEMA_VERSION, upgradedFrom: 1 });
      const after = await readPrefix(client, prefix);
      assert.equal(after.get(key)?.value, `{"version":${SCHEMA_VERSION}}`);
      after.delete(key);
      assert.deepEqual(after, before, "the upgrade touched a record");
      const revision = (await readSchema(client, prefix)).revision;
      assert.deepEqual(await ensureSchema(client, prefix), { version: SCHEMA_VERSION });
      assert.equal((await readSchema(client, prefix)).revision, revision);
    });

    await t.step("ensureSchema() from 8 clients at once while an old coild writes: one write", async () => {
      const prefix = fresh();
      const key = keysFor(prefix).schema();
      const clients = await Promise.all(Array.from({ length: 8 }, () => connect(etcd.endpoint)));
      try {
        let writing = true;
        let oldWrites = 0;
        // An old coild knows nothing of the key: its claims and address writes go on throughout.
        const oldCoild = (async () => {
          while (writing) {
            await client.put(`${prefix}blocks/default/10.1.0.${(oldWrites % 8) * 32}_27`).value(OLD_BLOCK);
            oldWrites++;
          }
        })();
        const outcomes = await Promise.all(clients.map((c) => ensureSchema(c, prefix)));
        writing = false;
        await oldCoild;
        assert.equal(outcomes.filter((o) => o.upgradedFrom === 1).length, 1, JSON.stringify(outcomes));
        assert.ok(outcomes.every((o) => o.version === SCHEMA_VERSION));
        const kv = (await client.getAll().prefix(key).exec()).kvs[0];
        assert.equal(kv.version, "1", "the schema key was written more than once");
        assert.ok(oldWrites > 0);
      } finally {
        clients.forEach((c) => c.close());
      }
    });

    await t.step("ensureSchema() upgrades an older key by a compare on its revision", async () => {
      const prefix = fresh();
      await client.put(keysFor(prefix).schema()).value(schemaValue(1));
      assert.deepEqual(await ensureSchema(client, prefix), { version: SCHEMA_VERSION, upgradedFrom: 1 });
      assert.equal((await readSchema(client, prefix)).version, SCHEMA_VERSION);
    });

    await t.step("ensureSchema() refuses a newer schema and writes nothing", async () => {
      const prefix = fresh();
      await client.put(keysFor(prefix).schema()).value(schemaValue(SCHEMA_VERSION + 1));
      await client.put(`${prefix}blocks/default/10.1.0.0_27`).value(OLD_BLOCK);
      const before = await readPrefix(client, prefix);
      await assert.rejects(
        ensureSchema(client, prefix),
        schemaError("conflict", `has schema version ${SCHEMA_VERSION + 1} (key "${prefix}schema")`),
      );
      assert.deepEqual(await readPrefix(client, prefix), before);
    });

    for (
      const [what, value] of [
        ["not JSON", "v2"],
        ["empty", ""],
        ["no version", "{}"],
        ["a string version", '{"version":"2"}'],
        ["version 0", '{"version":0}'],
        ["a fractional version", '{"version":1.5}'],
        ["null", "null"],
        ["an array", "[2]"],
      ]
    ) {
      await t.step(`ensureSchema() refuses a key that is ${what}, unchanged`, async () => {
        const prefix = fresh();
        await client.put(keysFor(prefix).schema()).value(value);
        const before = await readPrefix(client, prefix);
        await assert.rejects(ensureSchema(client, prefix), schemaError("invalid", `"${prefix}schema"`));
        await assert.rejects(readSchema(client, prefix), schemaError("invalid", "positive integer"));
        assert.deepEqual(await readPrefix(client, prefix), before);
      });
    }

    await t.step(
      "assertSchemaWritable() accepts older and equal data, refuses newer naming the writer",
      async () => {
        const prefix = fresh();
        await assertSchemaWritable(client, prefix, "coil pool create");
        await ensureSchema(client, prefix);
        await assertSchemaWritable(client, prefix, "coil pool create");
        await client.put(keysFor(prefix).schema()).value(schemaValue(SCHEMA_VERSION + 7));
        await assert.rejects(
          assertSchemaWritable(client, prefix, "coil pool create"),
          schemaError("conflict", "the newest coil pool create knows"),
        );
      },
    );
  } finally {
    for (const prefix of prefixes) await client.delete().prefix(prefix);
    client.close();
  }
});

Deno.test("ensureSchema() of current data writes nothing, so a coild restarted under NOSPACE passes it", async () => {
  // A txn with a put is refused under the alarm even when its compare would fail: reading first is what
  // lets a restart through (the node lease is another matter: etcd refuses lease grants under the alarm).
  await using etcd = await startEtcd({ args: ["--quota-backend-bytes", String(4 * 1024 * 1024)] });
  const client = await connect(etcd.endpoint);
  try {
    const prefix = etcd.newPrefix();
    await ensureSchema(client, prefix);
    await fillUntilNoSpace(client, `${prefix}fill/`);
    assert.ok(await noSpaceRaised(client));
    const before = await currentRevision(client);
    assert.deepEqual(await ensureSchema(client, prefix), { version: SCHEMA_VERSION });
    assert.equal(await currentRevision(client), before);
  } finally {
    client.close();
  }
});

Deno.test("coil status shows the schema version; coil's writes refuse a newer one, reads go on", async () => {
  await using etcd = await startEtcd();
  const client = await connect(etcd.endpoint);
  const prefix = etcd.newPrefix();
  const env = { COIL_ETCD_ENDPOINTS: etcd.endpoint, COIL_ETCD_PREFIX: prefix };
  const status = async () => {
    const human = assertCliOk(await runCoilCli(["status"], env));
    const json = JSON.parse(assertCliOk(await runCoilCli(["status", "--json"], env)));
    return { line: human.split("\n")[0], version: json.schemaVersion };
  };
  try {
    assertCliOk(await runCoilCli(["pool", "create", "default", "10.1.0.0/24"], env));
    assert.deepEqual(await status(), {
      line: `Schema version 1: the first coild of this release to start upgrades it to ${SCHEMA_VERSION}`,
      version: 1,
    });
    await ensureSchema(client, prefix);
    assert.deepEqual(await status(), { line: `Schema version ${SCHEMA_VERSION}`, version: SCHEMA_VERSION });
    assertCliOk(await runCoilCli(["pool", "add-subnet", "default", "10.2.0.0/24"], env));

    const newer = SCHEMA_VERSION + 1;
    await client.put(keysFor(prefix).schema()).value(schemaValue(newer));
    const before = await readPrefix(client, prefix);
    for (
      const [command, args] of [
        ["coil pool create", ["pool", "create", "dmz", "10.3.0.0/24"]],
        ["coil pool add-subnet", ["pool", "add-subnet", "default", "10.4.0.0/24"]],
        ["coil pool delete", ["pool", "delete", "default"]],
        ["coil node remove", ["node", "remove", "node1", "--force"]],
      ]
    ) {
      const run = await runCoilCli(args as string[], env);
      assert.equal(run.code, 1, `${command} was not refused: ${run.stdout}`);
      assert.equal(
        run.stderr,
        `coil: The data under etcd prefix "${prefix}" has schema version ${newer} (key "${prefix}schema"), ` +
          `newer than ${SCHEMA_VERSION}, the newest ${command} knows: run a Coil release that knows ` +
          `version ${newer}\n`,
      );
    }
    assert.deepEqual(await readPrefix(client, prefix), before, "a refused command changed etcd");
    assert.match((await status()).line, new RegExp(`^Warning: schema version ${newer} is newer than`));
    const pools = JSON.parse(assertCliOk(await runCoilCli(["pool", "list", "--json"], env)));
    assert.deepEqual(pools.map((p: { name: string }) => p.name), ["default"]);
  } finally {
    await client.delete().prefix(prefix);
    client.close();
  }
});
