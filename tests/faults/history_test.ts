// The history checker on synthetic histories: each rule catches its violation, and what the protocol
// allows (re-use after a completed DEL, DEL twice, a failed ADD, a DEL in flight) passes.

import assert from "node:assert/strict";
import { type Attachment, type CallResult, checkHistory, History, type Verb } from "./_history.ts";

const C1: Attachment = { network: "net", containerId: "c1", ifName: "eth0" };
const C2: Attachment = { network: "net", containerId: "c2", ifName: "eth0" };

const ok = (...addresses: string[]): CallResult => ({ status: "ok", addresses });
const refused: CallResult = { status: "refused", code: 11, msg: "connection refused" };
const unknown: CallResult = { status: "unknown", code: 11, msg: "connection broke" };
const error = (code: number, msg: string): CallResult => ({ status: "error", code, msg });

/** A history from `[verb, attachment, start, end, result]` rows. */
function historyOf(rows: [Verb, Attachment, number, number, CallResult][]): History {
  const history = new History();
  for (const [verb, attachment, start, end, result] of rows) {
    history.record({ verb, attachment, start, end, result });
  }
  return history;
}

function rules(history: History): string[] {
  return checkHistory(history).violations.map((v) => v.rule);
}

Deno.test("checkHistory() passes legal histories", async (t) => {
  await t.step("re-use of an address after a completed DEL", () => {
    const h = historyOf([
      ["ADD", C1, 0, 10, ok("10.0.0.1/32")],
      ["DEL", C1, 20, 30, ok()],
      ["ADD", C2, 40, 50, ok("10.0.0.1/32")],
    ]);
    const report = checkHistory(h);
    assert.deepEqual(report.violations, []);
    assert.equal(report.holdings, 2);
    assert.equal(report.possibleOverlaps, 0);
  });

  await t.step("DEL twice", () => {
    const h = historyOf([
      ["ADD", C1, 0, 10, ok("10.0.0.1/32")],
      ["DEL", C1, 20, 30, ok()],
      ["DEL", C1, 35, 38, ok()],
      ["ADD", C2, 40, 50, ok("10.0.0.1/32")],
    ]);
    assert.deepEqual(rules(h), []);
  });

  await t.step("a failed ADD, then DEL, and its address given to another", () => {
    const h = historyOf([
      ["ADD", C1, 0, 10, unknown],
      ["ADD", C2, 5, 15, ok("10.0.0.1/32")],
      ["DEL", C1, 20, 30, ok()],
    ]);
    assert.deepEqual(rules(h), []);
  });

  await t.step("an ADD that gets the address of a DEL in flight is counted, not failed", () => {
    const h = historyOf([
      ["ADD", C1, 0, 10, ok("10.0.0.1/32")],
      ["DEL", C1, 20, 40, unknown], // coild released, then died before answering
      ["ADD", C2, 25, 35, ok("10.0.0.1/32")],
      ["DEL", C1, 50, 60, ok()],
    ]);
    const report = checkHistory(h);
    assert.deepEqual(report.violations, []);
    assert.equal(report.possibleOverlaps, 1);
  });

  await t.step("GC that does not list an attachment releases it", () => {
    const h = historyOf([["ADD", C1, 0, 10, ok("10.0.0.1/32")]]);
    h.record({
      verb: "GC",
      attachment: { ...C1, containerId: "", ifName: "" },
      start: 20,
      end: 30,
      result: ok(),
      valid: [],
    });
    h.record({ verb: "ADD", attachment: C2, start: 40, end: 50, result: ok("10.0.0.1/32") });
    assert.deepEqual(rules(h), []);
  });

  await t.step("a sample inside a holding that has the key passes", () => {
    const h = historyOf([["ADD", C1, 0, 10, ok("10.0.0.1/32")]]);
    h.samples.push({ id: 99, start: 12, end: 14, keys: [{ ip: "10.0.0.1", ...C1 }] });
    const report = checkHistory(h);
    assert.deepEqual(report.violations, []);
    assert.equal(report.keysChecked, 1);
  });

  await t.step("a sample that overlaps the DEL is not held to the key", () => {
    const h = historyOf([["ADD", C1, 0, 10, ok("10.0.0.1/32")], ["DEL", C1, 13, 20, ok()]]);
    h.samples.push({ id: 99, start: 12, end: 14, keys: [] });
    assert.deepEqual(rules(h), []);
  });
});

Deno.test("checkHistory() catches each rule", async (t) => {
  await t.step("(a) an address given to a second attachment while the first holds it", () => {
    const h = historyOf([
      ["ADD", C1, 0, 10, ok("10.0.0.1/32")],
      ["ADD", C2, 20, 30, ok("10.0.0.1/32")],
      ["DEL", C1, 40, 50, ok()],
    ]);
    const [v, ...rest] = checkHistory(h).violations;
    assert.deepEqual(rest, []);
    assert.equal(v.rule, "a");
    assert.match(v.message, /10\.0\.0\.1 held by two attachments/);
    assert.match(v.message, /#1 ADD net\/c1\/eth0 at 0\.0-10\.0 ms: ok 10\.0\.0\.1\/32/);
    assert.match(v.message, /#2 ADD net\/c2\/eth0 at 20\.0-30\.0 ms: ok 10\.0\.0\.1\/32/);
  });

  await t.step("(a) a failed repeat ADD does not end the first holding", () => {
    const h = historyOf([
      ["ADD", C1, 0, 10, ok("10.0.0.1/32")],
      ["ADD", C1, 20, 30, error(4, 'CNI_IFNAME "eth0" already exists')],
      ["ADD", C2, 40, 50, ok("10.0.0.1/32")],
    ]);
    assert.deepEqual(rules(h), ["a"]);
  });

  await t.step("(a) a DEL that never reached coild releases nothing", () => {
    const h = historyOf([
      ["ADD", C1, 0, 10, ok("10.0.0.1/32")],
      ["DEL", C1, 20, 30, refused],
      ["ADD", C2, 40, 50, ok("10.0.0.1/32")],
    ]);
    assert.deepEqual(rules(h), ["a"]);
  });

  await t.step("(b) a sample inside a holding without the key, or with another holder", () => {
    const h = historyOf([["ADD", C1, 0, 10, ok("10.0.0.1/32")], ["ADD", C2, 0, 10, unknown]]);
    h.samples.push({ id: 98, start: 12, end: 14, keys: [] });
    h.samples.push({ id: 99, start: 16, end: 18, keys: [{ ip: "10.0.0.1", ...C2 }] });
    const violations = checkHistory(h).violations;
    assert.deepEqual(violations.map((v) => v.rule), ["b", "b"]);
    assert.match(
      violations[0].message,
      /#1 ADD net\/c1\/eth0[^\n]*\n\s+etcd sample #98 [^\n]*its key is missing/,
    );
    assert.match(violations[1].message, /held by net\/c2\/eth0 \(its last ADD: #2 ADD/);
  });

  await t.step("(c) an address key or a tagged veth left at the end", () => {
    const h = historyOf([["ADD", C1, 0, 10, ok("10.0.0.1/32")], ["DEL", C1, 20, 30, ok()]]);
    h.final({ keys: [{ ip: "10.0.0.1", ...C1 }], veths: ["coil:c1:eth0"] });
    const violations = checkHistory(h).violations;
    assert.deepEqual(violations.map((v) => v.rule), ["c", "c"]);
    assert.match(violations[0].message, /#1 ADD net\/c1\/eth0.*\n\s+#2 DEL net\/c1\/eth0/);
  });
});
