// The systemd notify protocol against a real datagram listener: READY/STATUS to path and abstract
// sockets, the watchdog period from $WATCHDOG_USEC, pings withheld while etcd fails past the grace or the
// event loop is blocked; and, once coild is wired, READY=1, WATCHDOG=1 and STOPPING=1 from a real coild.

import assert from "node:assert/strict";
import type { Logger, LogLevel } from "../../daemon/log.ts";
import { startWatchdog, systemdNotifier, watchdogSchedule } from "../../daemon/systemd_notify.ts";
import { sockaddrUn } from "../../daemon/unix_datagram.ts";
import { median } from "../bench/_stats.ts";
import { COIL } from "../helpers/coild.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { createNetns, removeLeftoverNetns } from "../helpers/netns.ts";
import { listenNotify } from "../helpers/notify_listener.ts";

await removeLeftoverNetns();

function recorder(): { log: Logger; lines: { level: LogLevel; msg: string }[] } {
  const lines: { level: LogLevel; msg: string }[] = [];
  return { log: (level, msg) => lines.push({ level, msg }), lines };
}

const env = (vars: Record<string, string>) => (name: string) => vars[name];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("sockaddrUn() lays out paths and abstract names as sd_notify() does", async (t) => {
  await t.step("a path keeps its NUL inside the length", () => {
    const { addr, length } = sockaddrUn("/run/x");
    assert.deepEqual([...addr.subarray(0, 9)], [1, 0, ...new TextEncoder().encode("/run/x"), 0]);
    assert.equal(length, 2 + 6 + 1);
  });
  await t.step("an abstract name starts with NUL and has no terminator", () => {
    const { addr, length } = sockaddrUn("@sd");
    assert.deepEqual([...addr.subarray(0, 5)], [1, 0, 0, ...new TextEncoder().encode("sd")]);
    assert.equal(length, 2 + 1 + 2);
  });
  await t.step("too long or empty", () => {
    assert.throws(() => sockaddrUn(`/${"a".repeat(107)}`), /Invalid UNIX socket address/);
    assert.doesNotThrow(() => sockaddrUn(`/${"a".repeat(106)}`));
    assert.throws(() => sockaddrUn("@"), /empty/);
  });
});

Deno.test("systemdNotifier() delivers to a real path and abstract socket", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-notify-" });
  try {
    await t.step("no NOTIFY_SOCKET: no notifier", () => {
      assert.equal(systemdNotifier(recorder().log, env({})), undefined);
    });
    for (const socket of [`${dir}/notify.sock`, `@coil-t-notify-${crypto.randomUUID().slice(0, 8)}`]) {
      await t.step(socket.startsWith("@") ? "abstract socket" : "path socket", async () => {
        await using listener = await listenNotify(socket);
        const notifier = systemdNotifier(recorder().log, env({ NOTIFY_SOCKET: socket }))!;
        assert.equal(notifier.notify({ READY: "1", STATUS: "3 pods,\n 2 blocks" }), true);
        const got = await listener.waitFor("READY", "1");
        assert.equal(got.text, "READY=1\nSTATUS=3 pods, 2 blocks");
      });
    }
    await t.step("nobody listening: false, logged once, and again when it works", async () => {
      const socket = `${dir}/late.sock`;
      const { log, lines } = recorder();
      const notifier = systemdNotifier(log, env({ NOTIFY_SOCKET: socket }))!;
      assert.equal(notifier.notify({ STATUS: "a" }), false);
      assert.equal(notifier.notify({ STATUS: "b" }), false);
      assert.deepEqual(lines, [{ level: "warn", msg: "systemd notify failed" }]);
      await using listener = await listenNotify(socket);
      assert.equal(notifier.notify({ STATUS: "c" }), true);
      await listener.waitFor("STATUS", "c");
      assert.deepEqual(lines.at(-1), { level: "info", msg: "systemd notify works again" });
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watchdogSchedule() follows WATCHDOG_USEC and WATCHDOG_PID", async (t) => {
  const cases: [string, Record<string, string>, { intervalMs: number; ping: boolean } | RegExp][] = [
    ["no watchdog: STATUS every 10 s", {}, { intervalMs: 10_000, ping: false }],
    ["30 s: a ping every 15 s", { WATCHDOG_USEC: "30000000" }, { intervalMs: 15_000, ping: true }],
    ["for this pid", { WATCHDOG_USEC: "2000000", WATCHDOG_PID: String(Deno.pid) }, {
      intervalMs: 1000,
      ping: true,
    }],
    ["for another pid", { WATCHDOG_USEC: "2000000", WATCHDOG_PID: "1" }, { intervalMs: 10_000, ping: false }],
    ["not a number", { WATCHDOG_USEC: "30s" }, /Invalid \$WATCHDOG_USEC "30s"/],
    ["zero", { WATCHDOG_USEC: "0" }, /positive integer/],
  ];
  for (const [name, vars, want] of cases) {
    await t.step(name, () => {
      if (want instanceof RegExp) assert.throws(() => watchdogSchedule(env(vars)), want);
      else assert.deepEqual(watchdogSchedule(env(vars)), want);
    });
  }
});

Deno.test("startWatchdog() pings at its period, and stops while etcd fails or the loop is blocked", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-watchdog-" });
  const socket = `${dir}/notify.sock`;
  try {
    await using listener = await listenNotify(socket);
    const { log, lines } = recorder();
    const notifier = systemdNotifier(log, env({ NOTIFY_SOCKET: socket }))!;
    let health: { ok: boolean; reason?: string } | "hang" = { ok: true };
    const watchdog = startWatchdog({
      notifier,
      intervalMs: 100,
      ping: true,
      etcdHealth: () => health === "hang" ? new Promise(() => {}) : Promise.resolve(health),
      status: () => "2 pods, 1 blocks",
      log,
      outageGraceMs: 400,
    });
    const pings = (from: number) =>
      listener.received().filter((d) => d.at >= from && d.fields.get("WATCHDOG") === "1").map((d) => d.at);
    try {
      await t.step("healthy: WATCHDOG=1 every interval, with STATUS", async () => {
        const from = Date.now();
        await sleep(1100);
        const at = pings(from);
        const gaps = at.slice(1).map((a, i) => a - at[i]);
        assert.ok(at.length >= 5, `pings in 1.1 s: ${at.length}`);
        assert.ok(median(gaps) >= 80 && median(gaps) <= 250, `median gap ${median(gaps)} ms`);
        assert.equal(listener.received().at(-1)?.fields.get("STATUS"), "2 pods, 1 blocks");
      });
      await t.step(
        "etcd failing past the grace: pings withheld, STATUS says why; back: pings resume",
        async () => {
          health = { ok: false, reason: "etcd is unreachable: connect ECONNREFUSED" };
          await listener.waitFor("STATUS", undefined);
          const failing = await waitForStatus(listener, /watchdog pings withheld/);
          assert.match(
            failing,
            /^2 pods, 1 blocks; etcd failing for \d+ s: etcd is unreachable: connect ECONNREFUSED/,
          );
          const quiet = Date.now();
          await sleep(400);
          assert.deepEqual(pings(quiet), []);
          assert.ok(lines.some((l) => l.level === "error" && l.msg.startsWith("withholding watchdog pings")));
          health = { ok: true };
          const back = Date.now();
          await sleep(400);
          assert.ok(pings(back).length >= 2, "pings resume once etcd answers");
          assert.ok(lines.some((l) => l.msg === "watchdog pings resumed: etcd answers"));
        },
      );
      await t.step("a probe that never settles stops the pings once the grace is over", async () => {
        health = "hang";
        await waitForStatus(listener, /watchdog pings withheld/, Date.now());
        const quiet = Date.now();
        await sleep(300);
        assert.deepEqual(pings(quiet), []);
      });
    } finally {
      watchdog.close();
    }
    await t.step("a blocked event loop sends nothing", async () => {
      const quiet = startWatchdog({
        notifier,
        intervalMs: 50,
        ping: true,
        etcdHealth: () => Promise.resolve({ ok: true }),
        status: () => "x",
        log,
      });
      try {
        await sleep(200);
        const blockedFrom = Date.now();
        while (Date.now() - blockedFrom < 500) { /* a wedged coild */ }
        const blockedTo = Date.now();
        await sleep(200);
        const during = pings(blockedFrom + 20).filter((at) => at < blockedTo);
        assert.deepEqual(during, [], "no ping while the loop was blocked");
        assert.ok(pings(blockedTo).length >= 1, "pings again after");
      } finally {
        quiet.close();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Waits for a STATUS matching `pattern` that arrived after `since`; returns it. */
async function waitForStatus(
  listener: Awaited<ReturnType<typeof listenNotify>>,
  pattern: RegExp,
  since = 0,
): Promise<string> {
  const until = Date.now() + 5000;
  for (;;) {
    const hit = listener.received().find((d) => d.at >= since && pattern.test(d.fields.get("STATUS") ?? ""));
    if (hit) return hit.fields.get("STATUS")!;
    if (Date.now() > until) throw new Error(`No STATUS matching ${pattern}`);
    await sleep(20);
  }
}

// coild sends READY=1, WATCHDOG=1 and STOPPING=1 once daemon/main.ts wires systemd_notify.ts.
const wired = (await Deno.readTextFile(new URL("../../daemon/main.ts", import.meta.url))).includes(
  "systemd_notify.ts",
);

Deno.test({
  name: "coild notifies systemd: READY=1 once its socket accepts, WATCHDOG=1, STOPPING=1 on SIGTERM",
  ignore: !wired,
  async fn() {
    await using etcd = await startEtcd();
    const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
    const prefix = etcd.newPrefix();
    await new PoolStore(client, prefix).createPool(parsePool("default", { subnets: ["10.131.0.0/24"] }));
    client.close();
    await using node = await createNetns();
    await node.exec(["ip", "link", "set", "lo", "up"]);
    const dir = await Deno.makeTempDir({ prefix: "coil-t-coild-notify-" });
    const socket = `${dir}/coild.sock`;
    // A path, not an abstract name: coild runs in the node netns, and abstract names are per netns.
    await using listener = await listenNotify(`${dir}/notify.sock`);
    const coild = new Deno.Command("ip", {
      args: [
        ...["netns", "exec", node.name, "env", `NOTIFY_SOCKET=${listener.socket}`, "WATCHDOG_USEC=1000000"],
        ...[COIL, "daemon", "--node-name", node.name, "--etcd-endpoints", etcd.unixEndpoint],
        ...["--etcd-prefix", prefix, "--socket", socket, "--metrics-address", ""],
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const log = new Response(coild.stderr).text();
    try {
      await listener.waitFor("READY", "1", 30_000);
      // READY=1 comes only once the socket accepts: a connection right after it succeeds.
      const conn = await Deno.connect({ transport: "unix", path: socket });
      conn.close();
      const ready = listener.received().find((d) => d.fields.get("READY") === "1")!;
      await sleep(1600);
      const pings = listener.received().filter((d) => d.at > ready.at && d.fields.get("WATCHDOG") === "1");
      assert.ok(pings.length >= 2, `WATCHDOG=1 every 0.5 s: ${pings.length} in 1.6 s`);
      assert.ok(listener.received().some((d) => /pods?.*blocks?/.test(d.fields.get("STATUS") ?? "")));
      coild.kill("SIGTERM");
      await listener.waitFor("STOPPING", "1", 10_000);
      assert.equal((await coild.status).code, 0);
    } catch (err) {
      try {
        coild.kill("SIGKILL");
      } catch { /* gone */ }
      await coild.status;
      throw new Error(`${(err as Error).message}\ncoild log:\n${await log}`);
    } finally {
      await log.catch(() => "");
      await Deno.remove(dir, { recursive: true });
    }
  },
});
