// A real Prometheus (Debian's `prometheus` package) for tests: started on a loopback port with a temporary
// config and data dir, scraping the given targets every second; optionally inside a test netns (where
// coild listens), queried there with curl. Killed and removed on dispose.

import { freePort } from "./etcd.ts";
import type { TestNetns } from "./netns.ts";

export interface TestPrometheus extends AsyncDisposable {
  /** The instant query API: `[labels, value]` per series of `expr`. */
  query(expr: string): Promise<{ metric: Record<string, string>; value: number }[]>;
  /** Polls `expr` until `check` accepts its result; returns it. @throws with the last result after `limitMs`. */
  waitFor(
    expr: string,
    check: (r: { metric: Record<string, string>; value: number }[]) => boolean,
    limitMs?: number,
  ): Promise<{ metric: Record<string, string>; value: number }[]>;
}

/** Starts Prometheus scraping `targets` (HOST:PORT, path /metrics) under job `coild`, in `netns` if given. */
export async function startPrometheus(targets: string[], netns?: TestNetns): Promise<TestPrometheus> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-prometheus-" });
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/prometheus.yml`,
    `global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: coild\n` +
      `    static_configs:\n      - targets: [${targets.map((t) => `"${t}"`).join(", ")}]\n`,
  );
  const args = [
    `--config.file=${dir}/prometheus.yml`,
    `--storage.tsdb.path=${dir}/data`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--log.level=warn",
  ];
  const command = netns
    ? new Deno.Command("ip", { args: ["netns", "exec", netns.name, "prometheus", ...args], stderr: "piped" })
    : new Deno.Command("prometheus", { args, stderr: "piped" });
  const child = command.spawn();
  const stderr = new Response(child.stderr).text();
  const base = `http://127.0.0.1:${port}`;
  const get = async (path: string): Promise<string> => {
    if (netns) return await netns.exec(["curl", "-sS", "--max-time", "5", `${base}${path}`]);
    const res = await fetch(`${base}${path}`);
    return await res.text();
  };
  const dispose = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await stderr;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const query: TestPrometheus["query"] = async (expr) => {
    const body = JSON.parse(await get(`/api/v1/query?query=${encodeURIComponent(expr)}`));
    if (body.status !== "success") {
      throw new Error(`Prometheus query ${expr} failed: ${JSON.stringify(body)}`);
    }
    return body.data.result.map((r: { metric: Record<string, string>; value: [number, string] }) => ({
      metric: r.metric,
      value: Number(r.value[1]),
    }));
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await get("/-/ready")).includes("Ready")) break;
    } catch { /* not yet */ }
    if (Date.now() > deadline) {
      await dispose();
      throw new Error(`Prometheus did not become ready in 30 s: ${await stderr}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    query,
    async waitFor(expr, check, limitMs = 30_000) {
      const until = Date.now() + limitMs;
      let last: Awaited<ReturnType<typeof query>> = [];
      for (;;) {
        last = await query(expr);
        if (check(last)) return last;
        if (Date.now() > until) {
          throw new Error(`Prometheus: ${expr} never matched; last ${JSON.stringify(last)}`);
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    [Symbol.asyncDispose]: dispose,
  };
}
