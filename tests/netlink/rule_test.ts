// Policy rule verbs against the kernel, compared with `ip -j rule` (root, throw-away namespaces).

import assert from "node:assert/strict";
import { isExists, isNotFound } from "../../netlink/errors.ts";
import { type Rule, ruleAdd, ruleDel, ruleList } from "../../netlink/rule.ts";
import { createNetns, openNetnsSocket, removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";

await removeLeftoverNetns();

interface IpRule {
  priority: number;
  src: string;
  srclen?: number;
  dst?: string;
  dstlen?: number;
  iif?: string;
  oif?: string;
  table: string;
  protocol?: string;
}

async function ipRules(ns: TestNetns, family: 4 | 6): Promise<IpRule[]> {
  return await ns.ipJson<IpRule[]>([`-${family}`, "rule", "show"]);
}

Deno.test("ruleAdd() adds lookup rules for both families as ip shows them", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  ruleAdd(s.sock, { family: 4, table: 116, priority: 2000 });
  ruleAdd(s.sock, { family: 6, table: 1119, priority: 2001, from: "fd00::/8", iif: "lo", protocol: 30 });
  ruleAdd(s.sock, { family: 4, table: 117, priority: 2002, to: "10.0.0.0/16", oif: "lo" });
  assert.deepEqual((await ipRules(ns, 4)).find((r) => r.priority === 2000), {
    priority: 2000,
    src: "all",
    table: "116",
  });
  assert.deepEqual((await ipRules(ns, 6)).find((r) => r.priority === 2001), {
    priority: 2001,
    src: "fd00::",
    srclen: 8,
    iif: "lo",
    table: "1119",
    protocol: "30",
  });
  const [to] = (await ipRules(ns, 4)).filter((r) => r.priority === 2002);
  assert.deepEqual([to.dst, to.dstlen, to.oif, to.table], ["10.0.0.0", 16, "lo", "117"]);
});

Deno.test("ruleList() returns the rules with their fields, filtered by family, table and priority", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const ours: Rule[] = [
    { family: 4, table: 116, priority: 2000 },
    { family: 4, table: 117, priority: 2002, to: "10.0.0.0/16", oif: "lo" },
    { family: 6, table: 1119, priority: 2001, from: "fd00::/8", iif: "lo", protocol: 30 },
  ];
  for (const rule of ours) ruleAdd(s.sock, rule);
  assert.deepEqual(ruleList(s.sock, { table: 116 }), [ours[0]]);
  assert.deepEqual(ruleList(s.sock, { family: 4, priority: 2002 }), [ours[1]]);
  assert.deepEqual(ruleList(s.sock, { family: 6, table: 1119 }), [ours[2]]);
  const all = ruleList(s.sock);
  const ip = [...await ipRules(ns, 4), ...await ipRules(ns, 6)];
  assert.deepEqual(all.map((r) => [r.priority, r.table]), ip.map((r) => [r.priority, tableNumber(r.table)]));
});

function tableNumber(name: string): number {
  return ({ local: 255, main: 254, default: 253 } as Record<string, number>)[name] ?? Number(name);
}

Deno.test("ruleAdd() of an existing rule throws isExists", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  ruleAdd(s.sock, { family: 4, table: 116, priority: 2000 });
  assert.throws(() => ruleAdd(s.sock, { family: 4, table: 116, priority: 2000 }), (err) => {
    assert.ok(isExists(err));
    assert.equal(
      err.message,
      "netlink: failed to add rule from all pref 2000 lookup 116: EEXIST (File exists)",
    );
    return true;
  });
});

Deno.test("ruleDel() deletes the rule; a second delete throws isNotFound", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  const rule: Rule = { family: 6, table: 1119, priority: 2001, from: "fd00::/8" };
  ruleAdd(s.sock, rule);
  ruleDel(s.sock, rule);
  assert.equal((await ipRules(ns, 6)).some((r) => r.priority === 2001), false);
  assert.throws(() => ruleDel(s.sock, rule), isNotFound);
});

Deno.test("ruleAdd() rejects a network of the other family before sending", async () => {
  await using ns = await createNetns();
  using s = openNetnsSocket(ns);
  assert.throws(
    () => ruleAdd(s.sock, { family: 4, table: 116, priority: 2000, from: "fd00::/8" }),
    TypeError,
  );
  assert.deepEqual(ruleList(s.sock, { table: 116 }), []);
});
