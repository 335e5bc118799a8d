// The systemd notify protocol (sd_notify(3)): newline-separated KEY=VALUE datagrams to $NOTIFY_SOCKET —
// READY=1, STOPPING=1, STATUS=… — and the watchdog loop that sends WATCHDOG=1 every half WatchdogSec
// while the event loop runs and etcd answers, so that a wedged coild gets restarted.

import type { EtcdHealth } from "./etcd_health.ts";
import type { Logger } from "./log.ts";
import { sendDatagram } from "./unix_datagram.ts";

/** Reads an environment variable (Deno.env.get by default; tests pass a map). */
export type Getenv = (name: string) => string | undefined;

export interface SystemdNotifier {
  /** The $NOTIFY_SOCKET address: a path, or `@name` for an abstract socket. */
  readonly socket: string;
  /**
   * Sends `fields` in one datagram. Never throws: a failure is logged (once until a send works again)
   * and gives false, since systemd not listening must not stop coild.
   */
  notify(fields: Record<string, string>): boolean;
}

/**
 * A notifier for $NOTIFY_SOCKET, or undefined when coild does not run under a Type=notify unit.
 * Values lose their line breaks: one line is one field.
 */
export function systemdNotifier(
  log: Logger,
  getenv: Getenv = (n) => Deno.env.get(n),
): SystemdNotifier | undefined {
  const socket = getenv("NOTIFY_SOCKET");
  if (!socket) return undefined;
  let failing = false;
  return {
    socket,
    notify(fields) {
      const text = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\s*\n\s*/g, " ")}`).join("\n");
      try {
        sendDatagram(socket, new TextEncoder().encode(text));
        if (failing) log("info", "systemd notify works again", { socket });
        failing = false;
        return true;
      } catch (err) {
        if (!failing) {
          log("warn", "systemd notify failed", { socket, fields: Object.keys(fields), error: err });
        }
        failing = true;
        return false;
      }
    },
  };
}

/**
 * How often the loop runs: half of $WATCHDOG_USEC (sd_watchdog_enabled(3)) with pings, when the watchdog
 * is on and meant for this process ($WATCHDOG_PID, when set, must be ours); else every 10 s, STATUS only.
 * @throws {TypeError} when $WATCHDOG_USEC or $WATCHDOG_PID is not a positive integer.
 */
export function watchdogSchedule(
  getenv: Getenv = (n) => Deno.env.get(n),
): { intervalMs: number; ping: boolean } {
  const usec = getenv("WATCHDOG_USEC");
  const pid = getenv("WATCHDOG_PID");
  for (const [name, value] of [["WATCHDOG_USEC", usec], ["WATCHDOG_PID", pid]]) {
    if (value !== undefined && !/^[1-9]\d*$/.test(value)) {
      throw new TypeError(`Invalid $${name} "${value}": expected a positive integer`);
    }
  }
  if (!usec || (pid && Number(pid) !== Deno.pid)) return { intervalMs: 10_000, ping: false };
  return { intervalMs: Number(usec) / 2000, ping: true };
}

/**
 * How long etcd may fail its health check before the pings stop. Long enough that an election, a member
 * restart or a short partition never restarts coild (which would not bring etcd back), short enough that
 * a client wedged in a broken state is replaced by a fresh process within a few minutes. While etcd is
 * truly down this restarts coild every few minutes; pods keep working meanwhile (KillMode=process).
 */
export const ETCD_OUTAGE_GRACE_MS = 120_000;

export interface WatchdogOptions {
  notifier: SystemdNotifier;
  /** From watchdogSchedule(). */
  intervalMs: number;
  /** Whether to send WATCHDOG=1 (false: STATUS only). */
  ping: boolean;
  /** Cached and never throwing (etcd_health.ts). A probe that never settles counts as failing. */
  etcdHealth: () => Promise<EtcdHealth>;
  /** The node's state for STATUS=, e.g. "12 pods, 3 blocks". */
  status: () => string;
  log: Logger;
  outageGraceMs?: number;
  now?: () => number;
}

export interface Watchdog {
  /** Stops the loop. Idempotent. */
  close(): void;
}

/**
 * Starts the loop: a tick now and every `intervalMs`. A tick runs only if the event loop does, and
 * pings only while etcd's last good answer is at most `outageGraceMs` old; it also starts the next
 * probe (one at a time, so a hung probe stops the pings once the grace is over).
 */
export function startWatchdog(options: WatchdogOptions): Watchdog {
  const { notifier, log } = options;
  const now = options.now ?? (() => performance.now());
  const grace = options.outageGraceMs ?? ETCD_OUTAGE_GRACE_MS;
  let lastOk = now();
  /** Why etcd failed, from the last probe; empty while it answers. */
  let lastReason = "";
  /** When the probe in flight started. */
  let probingSince: number | undefined;
  let withholding = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;

  function tick(): void {
    const down = now() - lastOk;
    const healthy = down <= grace;
    if (options.ping && healthy === withholding) {
      withholding = !healthy;
      if (withholding) {
        log("error", "withholding watchdog pings: etcd has failed too long; systemd will restart coild", {
          downSeconds: Math.round(down / 1000),
          reason: lastReason,
        });
      } else log("info", "watchdog pings resumed: etcd answers");
    }
    let status = options.status();
    const hung = probingSince !== undefined && now() - probingSince > options.intervalMs;
    if (lastReason || hung) {
      status += `; etcd failing for ${Math.round(down / 1000)} s: ${lastReason || "no answer yet"}`;
    }
    if (withholding) status += "; watchdog pings withheld";
    notifier.notify(options.ping && healthy ? { WATCHDOG: "1", STATUS: status } : { STATUS: status });
    if (probingSince === undefined) {
      probingSince = now();
      options.etcdHealth().catch((err): EtcdHealth => ({ ok: false, reason: String(err) })).then((health) => {
        probingSince = undefined;
        if (health.ok) lastOk = now();
        lastReason = health.ok ? "" : health.reason ?? "etcd is unreachable";
      });
    }
    if (!closed) timer = setTimeout(tick, options.intervalMs);
  }
  tick();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}
