// KeyedQueue: calls for one key run one after another in call order, calls for other keys run in
// parallel, a rejection does not break the chain, and a key is forgotten once its calls drained.

import assert from "node:assert/strict";
import { KeyedQueue } from "../../daemon/keyed_queue.ts";

/** A call that records its start and end and finishes when the test says. */
function step(log: string[], name: string) {
  const { promise, resolve, reject } = Promise.withResolvers<string>();
  const fn = () => {
    log.push(`start ${name}`);
    return promise.then(
      (v) => (log.push(`end ${name}`), v),
      (e) => (log.push(`fail ${name}`), Promise.reject(e)),
    );
  };
  return { fn, finish: () => resolve(name), fail: (err: Error) => reject(err) };
}

function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("KeyedQueue.run() runs one key's calls in call order, one at a time", async () => {
  const queue = new KeyedQueue();
  const log: string[] = [];
  const [a, b, c] = ["a", "b", "c"].map((n) => step(log, n));
  const results = [queue.run("k", a.fn), queue.run("k", b.fn), queue.run("k", c.fn)];
  await tick();
  assert.deepEqual(log, ["start a"]);
  b.finish(); // b is done before it starts: it still waits for a
  c.finish();
  await tick();
  assert.deepEqual(log, ["start a"]);
  a.finish();
  assert.deepEqual(await Promise.all(results), ["a", "b", "c"]);
  assert.deepEqual(log, ["start a", "end a", "start b", "end b", "start c", "end c"]);
});

Deno.test("KeyedQueue.run() runs calls of different keys in parallel", async () => {
  const queue = new KeyedQueue();
  const log: string[] = [];
  const [a, b] = ["a", "b"].map((n) => step(log, n));
  const results = [queue.run("k1", a.fn), queue.run("k2", b.fn)];
  await tick();
  assert.deepEqual(log, ["start a", "start b"]);
  assert.equal(queue.size, 2);
  b.finish();
  assert.equal(await results[1], "b", "k2 finished while k1 still runs");
  a.finish();
  assert.equal(await results[0], "a");
});

Deno.test("KeyedQueue.run() rejects as the call does and runs the next call of the key anyway", async () => {
  const queue = new KeyedQueue();
  const log: string[] = [];
  const [a, b] = ["a", "b"].map((n) => step(log, n));
  const first = queue.run("k", a.fn);
  const second = queue.run("k", b.fn);
  a.fail(new Error("boom"));
  await assert.rejects(first, /^Error: boom$/);
  b.finish();
  assert.equal(await second, "b");
  assert.deepEqual(log, ["start a", "fail a", "start b", "end b"]);
  // A call that throws synchronously rejects too, and does not break the chain either.
  await assert.rejects(
    queue.run("k", () => {
      throw new Error("sync");
    }),
    /sync/,
  );
  assert.equal(await queue.run("k", () => Promise.resolve(1)), 1);
});

Deno.test("KeyedQueue.size drops a key once its calls drained", async () => {
  const queue = new KeyedQueue();
  const log: string[] = [];
  const [a, b] = ["a", "b"].map((n) => step(log, n));
  assert.equal(queue.size, 0);
  const first = queue.run("k", a.fn);
  const second = queue.run("k", b.fn);
  assert.equal(queue.size, 1, "one key however many calls");
  a.finish();
  await first;
  await tick();
  assert.equal(queue.size, 1, "b still runs");
  b.fail(new Error("late failure"));
  await assert.rejects(second);
  await tick();
  assert.equal(queue.size, 0);
  // A key used again after it drained starts a fresh chain.
  assert.equal(await queue.run("k", () => Promise.resolve("again")), "again");
  await tick();
  assert.equal(queue.size, 0);
});
