// etcd's alarms: parsing and wording, reading them from a real etcd filled past its space quota, and how
// the client classifies a write that etcd refused for lack of space.

import assert from "node:assert/strict";
import {
  describeAlarms,
  isNoSpace,
  listAlarms,
  NO_SPACE_MESSAGE,
  parseStatusAlarm,
  statusAlarms,
} from "../../ipam/etcd_alarms.ts";
import { connectEtcd, unavailable } from "../../ipam/etcd_client.ts";
import { IpamError } from "../../ipam/errors.ts";
import { freePort, startEtcd } from "../helpers/etcd.ts";
import { fillUntilNoSpace, freeSpaceAndDisarm } from "../helpers/etcd_space.ts";

Deno.test("parseStatusAlarm() reads the alarm entries of a member's Status errors", async (t) => {
  const cases: [string, ReturnType<typeof parseStatusAlarm>][] = [
    ["memberID:8626083153443012918 alarm:NOSPACE ", { memberId: "8626083153443012918", alarm: "NOSPACE" }],
    ["memberID:1 alarm:CORRUPT", { memberId: "1", alarm: "CORRUPT" }],
    ["etcdserver: no leader", undefined],
    ["memberID:x alarm:NOSPACE", undefined],
    ["", undefined],
  ];
  for (const [text, expected] of cases) {
    await t.step(JSON.stringify(text), () => assert.deepEqual(parseStatusAlarm(text), expected));
  }
});

Deno.test("describeAlarms() names NOSPACE, its members and the way out, or nothing without alarms", async (t) => {
  await t.step("no alarm", () => assert.equal(describeAlarms([]), undefined));
  await t.step("NOSPACE on two members", () => {
    const text = describeAlarms([{ memberId: "1", alarm: "NOSPACE" }, { memberId: "2", alarm: "NOSPACE" }]);
    assert.match(text!, /^etcd is out of space \(NOSPACE alarm, member 1, 2\): it refuses every write/);
    assert.match(text!, /compacted and defragmented and the alarm is disarmed/);
  });
  await t.step("NOSPACE first, another alarm after it", () => {
    const text = describeAlarms([{ memberId: "3", alarm: "CORRUPT" }, { memberId: "1", alarm: "NOSPACE" }]);
    assert.match(
      text!,
      /^etcd is out of space \(NOSPACE alarm, member 1\).*; etcd also raised the CORRUPT alarm \(member 3\)$/,
    );
  });
  await t.step("another alarm alone", () => {
    assert.equal(
      describeAlarms([{ memberId: "3", alarm: "CORRUPT" }]),
      "etcd raised the CORRUPT alarm (member 3): it refuses requests until an operator clears it",
    );
  });
});

Deno.test("isNoSpace() recognises etcd's refusal for lack of space only", () => {
  assert.ok(isNoSpace(new Error("8 RESOURCE_EXHAUSTED: etcdserver: mvcc: database space exceeded")));
  assert.ok(!isNoSpace(new Error("8 RESOURCE_EXHAUSTED: etcdserver: too many requests")));
  assert.ok(!isNoSpace("database space exceeded"));
});

Deno.test("a real etcd filled past its quota", async (t) => {
  await using etcd = await startEtcd({ args: ["--quota-backend-bytes", String(4 * 1024 * 1024)] });
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix, callTimeoutMs: 5000 });
  const dead = `http://127.0.0.1:${freePort()}`;
  const fillPrefix = `${prefix}fill/`;
  try {
    await t.step("statusAlarms() and listAlarms() find no alarm before", async () => {
      assert.deepEqual(await statusAlarms(client, Date.now() + 5000), []);
      assert.deepEqual(await listAlarms(client), []);
    });
    await fillUntilNoSpace(client, fillPrefix);

    await t.step("statusAlarms() and listAlarms() both report NOSPACE, by the same member", async () => {
      const fromStatus = await statusAlarms(client, Date.now() + 5000);
      assert.deepEqual(fromStatus.map((a) => a.alarm), ["NOSPACE"]);
      assert.deepEqual(await listAlarms(client), fromStatus);
    });

    await t.step("a refused write over one endpoint is IpamError no-space: nothing was written", async () => {
      const err = await client.put(`${prefix}k`).value("v").then(() => undefined, (e: unknown) => e);
      const wrapped = unavailable(err);
      assert.equal(wrapped.kind, "no-space");
      assert.equal(wrapped.message, NO_SPACE_MESSAGE);
      assert.equal(await client.get(`${prefix}k`).string(), null);
    });

    await t.step(
      "after an attempt on a dead endpoint it stays unavailable: that attempt may commit",
      async () => {
        const two = await connectEtcd({ endpoints: [dead, etcd.endpoint], prefix, callTimeoutMs: 5000 });
        try {
          // The pool shuffles hosts per call: over many calls both orders occur.
          const kinds = new Set<string>();
          for (let i = 0; i < 40; i++) {
            const err = await two.put(`${prefix}k`).value("v").then(() => undefined, (e: unknown) => e);
            const wrapped = unavailable(err);
            assert.ok(wrapped instanceof IpamError);
            assert.match(wrapped.message, /NOSPACE/);
            if (wrapped.kind === "unavailable") {
              assert.match(wrapped.message, /an earlier attempt may yet commit$/);
            } else assert.equal(wrapped.kind, "no-space");
            kinds.add(wrapped.kind);
          }
          assert.deepEqual([...kinds].sort(), ["no-space", "unavailable"]);
        } finally {
          two.close();
        }
      },
    );

    await t.step("after the runbook no alarm is left and writes work", async () => {
      await freeSpaceAndDisarm(client, fillPrefix);
      assert.deepEqual(await listAlarms(client), []);
      await client.put(`${prefix}k`).value("v");
    });
  } finally {
    client.close();
  }
});
