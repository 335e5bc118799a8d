// coild's HTTP endpoint (`--metrics-address`, loopback by default): /metrics for Prometheus, /healthz
// (the process answers) and /readyz (coild can serve pods; 503 with the reasons as text otherwise).

import { EXPOSITION_CONTENT_TYPE } from "./metrics_registry.ts";
import type { ReadinessCheck } from "./readiness.ts";

export interface ListenAddress {
  hostname: string;
  port: number;
}

export interface HttpServerOptions {
  address: ListenAddress;
  /** The exposition text for /metrics. */
  metrics: () => string;
  /** Asked on every /readyz. */
  ready: ReadinessCheck;
}

export interface HttpServer {
  /** The bound address (the real port when 0 was asked for). */
  addr: Deno.NetAddr;
  /** Stops listening and waits for requests in flight. Idempotent. */
  close(): Promise<void>;
}

const TEXT = "text/plain; charset=utf-8";

/**
 * Parses `HOST:PORT`, `[IPV6]:PORT` or `:PORT` (every IPv4 interface, as Go programs read it).
 * @throws {TypeError} naming the flag and the expected form.
 */
export function parseListenAddress(text: string, flag = "--metrics-address"): ListenAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^\[\]:\s]*)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    throw new TypeError(`Invalid ${flag} "${text}": expected HOST:PORT, [IPV6]:PORT or :PORT`);
  }
  return { hostname: match[1] ?? (match[2] || "0.0.0.0"), port };
}

/**
 * Whether `address` is reachable from this host alone: 127.0.0.0/8, ::1 or localhost. Metrics tell
 * anyone who can read them the node's pods, blocks and etcd health, so anything wider is a choice.
 */
export function isLoopback(address: ListenAddress): boolean {
  const host = address.hostname.toLowerCase();
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * Serves /metrics, /healthz and /readyz on `address`.
 * @throws when the address cannot be bound (in use, not local), naming it.
 */
export function serveHttp(options: HttpServerOptions): HttpServer {
  const { hostname, port } = options.address;
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname, port, onListen: () => {} }, (req) => handle(req, options));
  } catch (err) {
    const cause = err instanceof Error ? err.message : String(err);
    throw new Error(`Cannot serve metrics on ${hostname}:${port}: ${cause}`, { cause: err });
  }
  let closing: Promise<void> | undefined;
  return {
    addr: server.addr,
    close: () => closing ??= server.shutdown(),
  };
}

async function handle(req: Request, options: HttpServerOptions): Promise<Response> {
  const path = new URL(req.url).pathname;
  if (!["/metrics", "/healthz", "/readyz"].includes(path)) return text(404, `Not found: ${path}\n`);
  if (req.method !== "GET" && req.method !== "HEAD") {
    return text(405, `Method ${req.method} not allowed: use GET\n`, { allow: "GET, HEAD" });
  }
  switch (path) {
    case "/metrics":
      return new Response(options.metrics(), { headers: { "content-type": EXPOSITION_CONTENT_TYPE } });
    case "/healthz":
      return text(200, "ok\n");
    default: {
      const ready = await options.ready();
      return ready.ok ? text(200, "ok\n") : text(503, `${ready.reason ?? "not ready"}\n`);
    }
  }
}

function text(status: number, body: string, headers: Record<string, string> = {}): Response {
  return new Response(body, { status, headers: { "content-type": TEXT, ...headers } });
}
