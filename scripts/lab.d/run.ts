// Running the tools the lab is made of (ip, bird, birdc, etcd, ping, coil), inside or outside a
// namespace, plus bounded polling and the step log a person reads.

export interface RunOptions {
  stdin?: string;
  env?: Record<string, string>;
  /** Throw when the exit code is not 0 (default true). */
  check?: boolean;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args`, collecting output. Throws on a non-zero exit unless `check` is false. */
export async function run(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const child = new Deno.Command(cmd, {
    args,
    env: options.env,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const result = {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
  if (options.check !== false && result.code !== 0) {
    const detail = (result.stderr.trim() || result.stdout.trim()).split("\n").slice(-5).join(" | ");
    throw new Error(`Command "${[cmd, ...args].join(" ")}" failed with exit code ${result.code}: ${detail}`);
  }
  return result;
}

/** `ip -n <netns> args…`. Throws on failure unless `check` is false. */
export function ip(netns: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return run("ip", ["-n", netns, ...args], options);
}

/** Runs `cmd` inside `netns` (`ip netns exec`). Throws on failure unless `check` is false. */
export function inNetns(
  netns: string,
  cmd: string,
  args: string[],
  options: RunOptions = {},
): Promise<RunResult> {
  return run("ip", ["netns", "exec", netns, cmd, ...args], options);
}

/** A route as `ip -j route` prints it (the fields the lab reads). */
export interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  table?: string;
}

/** The routes of one family in `table` ("main", "119", …) of `netns`, `ip route show` `filters` applied. */
export async function routes(
  netns: string,
  family: 4 | 6,
  table: string,
  filters: string[] = [],
): Promise<IpRoute[]> {
  const out = await ip(netns, ["-j", `-${family}`, "route", "show", "table", table, ...filters], {
    check: false,
  });
  // The kernel creates a table with its first route: before that (a node without blocks), it is empty.
  if (out.code !== 0 && /FIB table does not exist/.test(out.stderr)) return [];
  if (out.code !== 0) {
    throw new Error(`Routes of table ${table} in ${netns} could not be read: ${out.stderr.trim()}`);
  }
  return out.stdout.trim() === "" ? [] : JSON.parse(out.stdout) as IpRoute[];
}

/**
 * Calls `probe` until it returns a value other than undefined, at most for `timeoutMs`.
 * Throws `<what> did not happen within N s` with the last error seen, if any.
 */
export async function poll<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (true) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const cause = lastError instanceof Error ? `: ${lastError.message}` : "";
  throw new Error(`${what} did not happen within ${Math.round(timeoutMs / 1000)} s${cause}`);
}

/** Runs `work` over `items`, at most `limit` at a time, keeping the results in order. */
export async function mapLimit<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  async function worker(): Promise<void> {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Prints one step of what the lab does. */
export function step(message: string): void {
  console.log(`==> ${message}`);
}

/** Prints a detail under a step. */
export function detail(message: string): void {
  console.log(`    ${message}`);
}
