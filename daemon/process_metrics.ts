// The standard `process_*` metrics (the names every Prometheus client library uses), read from /proc at
// scrape time: CPU seconds, resident and virtual memory, open and maximum file descriptors, start time;
// and V8's heap and external memory, which tell a growing JS heap from native growth in the resident size.
// /proc is read through libc (netlink/procfs.ts): coild's Deno permissions do not reach it.

import { readProcFile, readProcLink } from "../netlink/procfs.ts";
import type { Registry } from "./metrics_registry.ts";

/**
 * Clock ticks per second of the times in /proc/<pid>/stat. The kernel reports them in USER_HZ, which is
 * 100 on every architecture Linux exposes to user space (proc(5); Prometheus' procfs fixes it to 100 too).
 */
const USER_HZ = 100;

/** What /proc says about this process. */
export interface ProcessStats {
  cpuSeconds: number;
  residentBytes: number;
  virtualBytes: number;
  openFds: number;
  maxFds: number;
  /** Seconds since the Unix epoch. */
  startTime: number;
}

/**
 * Reads this process's figures from /proc (`proc` may point elsewhere for tests of the parsing).
 * @throws when a file is missing or not in the kernel's format.
 */
export function readProcessStats(proc = "/proc"): ProcessStats {
  const stat = readProcFile(`${proc}/self/stat`);
  // The command name (field 2) is in parentheses and may hold spaces and ")": split after the last one.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).trim().split(" ");
  // fields[0] is field 3 (state) of proc(5): utime is field 14, stime 15, starttime 22.
  const field = (n: number) => Number(fields[n - 3]);
  const status = readProcFile(`${proc}/self/status`);
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, "m").exec(status)?.[1]) * 1024;
  const bootTime = Number(/^btime (\d+)$/m.exec(readProcFile(`${proc}/stat`))?.[1]);
  const limit = /^Max open files\s+(\d+|unlimited)/m.exec(readProcFile(`${proc}/self/limits`))?.[1];
  const fdSlots = Number(/^FDSize:\s+(\d+)$/m.exec(status)?.[1]);
  const stats: ProcessStats = {
    cpuSeconds: (field(14) + field(15)) / USER_HZ,
    residentBytes: kib("VmRSS"),
    virtualBytes: kib("VmSize"),
    openFds: countOpenFds(`${proc}/self/fd`, fdSlots),
    maxFds: limit === "unlimited" ? Infinity : Number(limit),
    startTime: bootTime + field(22) / USER_HZ,
  };
  const bad = Object.entries(stats).find(([, v]) => Number.isNaN(v));
  if (bad) {
    throw new Error(`Cannot read process metrics from "${proc}": ${bad[0]} is not in the expected format`);
  }
  return stats;
}

/**
 * Open descriptors: the links under `fdDir` among the first `slots` (FDSize, the size of the fd table).
 * Read link by link through libc, since listing /proc/self/fd needs Deno's --allow-all as any read there.
 */
function countOpenFds(fdDir: string, slots: number): number {
  let open = 0;
  for (let fd = 0; fd < slots; fd++) {
    try {
      readProcLink(`${fdDir}/${fd}`);
      open++;
    } catch { /* not open */ }
  }
  return Number.isNaN(slots) ? NaN : open;
}

/** Registers the `process_*` families, each reading /proc on every scrape. */
export function registerProcessMetrics(
  registry: Registry,
  read: () => ProcessStats = readProcessStats,
): void {
  const families: [string, "counter" | "gauge", string, (s: ProcessStats) => number][] = [
    [
      "process_cpu_seconds_total",
      "counter",
      "Total user and system CPU time spent in seconds.",
      (s) => s.cpuSeconds,
    ],
    ["process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", (s) => s.residentBytes],
    ["process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", (s) => s.virtualBytes],
    ["process_open_fds", "gauge", "Number of open file descriptors.", (s) => s.openFds],
    ["process_max_fds", "gauge", "Maximum number of open file descriptors.", (s) => s.maxFds],
    [
      "process_start_time_seconds",
      "gauge",
      "Start time of the process since unix epoch in seconds.",
      (s) => s.startTime,
    ],
  ];
  // One /proc read serves all six families of a scrape: they are rendered one after the other.
  let cached: { at: number; stats: ProcessStats } | undefined;
  const stats = () => {
    const now = performance.now();
    if (!cached || now - cached.at > 100) cached = { at: now, stats: read() };
    return cached.stats;
  };
  for (const [name, type, help, pick] of families) {
    registry.collected({ name, type, help, collect: () => [{ value: pick(stats()) }] });
  }
  registerHeapMetrics(registry);
}

/** V8's view of memory, under the names Node's prom-client uses with the runtime's prefix. */
function registerHeapMetrics(registry: Registry): void {
  const families: [string, string, (m: Deno.MemoryUsage) => number][] = [
    ["deno_heap_size_total_bytes", "V8 heap reserved (total) in bytes.", (m) => m.heapTotal],
    ["deno_heap_size_used_bytes", "V8 heap in use in bytes.", (m) => m.heapUsed],
    [
      "deno_external_memory_bytes",
      "Memory held outside the V8 heap by JS objects (buffers) in bytes.",
      (m) => m.external,
    ],
  ];
  for (const [name, help, pick] of families) {
    registry.collected({ name, type: "gauge", help, collect: () => [{ value: pick(Deno.memoryUsage()) }] });
  }
}
