// A real etcd (Debian's etcd-server) for tests: free loopback ports, a temporary data dir, awaited until
// healthy, killed and removed on dispose. Each test then works under its own key prefix.

export interface TestEtcd extends AsyncDisposable {
  /** Client URL, e.g. `http://127.0.0.1:40123`. */
  endpoint: string;
  /**
   * The same server over a UNIX socket (`unix:///tmp/…/localhost:40123`): reachable from inside any
   * network namespace, where the host's 127.0.0.1 is not, so coild can run in a test netns.
   */
  unixEndpoint: string;
  dataDir: string;
  process: Deno.ChildProcess;
  /** The client URLs on `extraClientHosts`, in their order, e.g. `http://10.255.240.1:40123`. */
  extraEndpoints: string[];
  /** A fresh key prefix for one test, e.g. `/t-1a2b3c/`. */
  newPrefix(): string;
  stop(): Promise<void>;
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Extra etcd flags and a name, for clusters and TLS tests. */
export interface EtcdStartOptions {
  name?: string;
  args?: string[];
  /** Scheme of the client URL (`https` when the args set up TLS). */
  scheme?: "http" | "https";
  clientPort?: number;
  peerPort?: number;
  /** Skip waiting for health (e.g. a cluster member that needs its peers). */
  noWait?: boolean;
  /**
   * More addresses to serve clients on, at the client port (e.g. a test veth's host side, which a
   * node netns reaches over TCP, so that iptables there can cut it off). They must exist already.
   */
  extraClientHosts?: string[];
}

/** Starts etcd and waits until it serves; removes everything on dispose, also after a failed start. */
export async function startEtcd(options: EtcdStartOptions = {}): Promise<TestEtcd> {
  const dataDir = await Deno.makeTempDir({ prefix: "coil-t-etcd-" });
  const dataPath = `${dataDir}/data`;
  const clientPort = options.clientPort ?? freePort();
  const peerPort = options.peerPort ?? freePort();
  const scheme = options.scheme ?? "http";
  const endpoint = `${scheme}://127.0.0.1:${clientPort}`;
  // etcd creates a unix listener's socket file under its working directory, named after the URL's host.
  const unixEndpoint = `unix://${dataDir}/localhost:${clientPort}`;
  const name = options.name ?? "default";
  const extraEndpoints = (options.extraClientHosts ?? []).map((h) => `${scheme}://${h}:${clientPort}`);
  const clientUrls = [
    endpoint,
    ...(scheme === "http" ? [`unix://localhost:${clientPort}`] : []),
    ...extraEndpoints,
  ];
  const args = [
    "--name",
    name,
    "--data-dir",
    dataPath,
    "--listen-client-urls",
    clientUrls.join(","),
    "--advertise-client-urls",
    endpoint,
    "--listen-peer-urls",
    `http://127.0.0.1:${peerPort}`,
    "--initial-advertise-peer-urls",
    `http://127.0.0.1:${peerPort}`,
    "--initial-cluster",
    `${name}=http://127.0.0.1:${peerPort}`,
    "--log-level",
    "error",
    ...(options.args ?? []),
  ];
  const { process, kill } = spawnEtcd(args, dataDir);
  const stop = async () => {
    await kill();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  };
  let counter = 0;
  const etcd: TestEtcd = {
    endpoint,
    unixEndpoint,
    extraEndpoints,
    dataDir,
    process,
    newPrefix: () => `/t-${crypto.randomUUID().slice(0, 8)}-${counter++}/`,
    stop,
    [Symbol.asyncDispose]: stop,
  };
  if (options.noWait) return etcd;
  try {
    await waitHealthy(endpoint, options.scheme === "https");
  } catch (err) {
    await stop();
    throw err;
  }
  return etcd;
}

/** Spawns etcd in `cwd` with its stderr drained; `kill` (SIGKILL, then wait) is idempotent. */
function spawnEtcd(args: string[], cwd: string): { process: Deno.ChildProcess; kill: () => Promise<void> } {
  const process = new Deno.Command("etcd", { args, cwd, stdout: "null", stderr: "piped" }).spawn();
  const stderr = process.stderr.pipeTo(new WritableStream({ write() {} })).catch(() => {});
  let killed = false;
  const kill = async () => {
    if (killed) return;
    killed = true;
    try {
      process.kill("SIGKILL");
    } catch { /* already gone */ }
    await process.status;
    await stderr;
  };
  return { process, kill };
}

async function waitHealthy(endpoint: string, tls: boolean): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (tls) {
      // A TLS endpoint needs client certificates; being able to connect is enough here.
      try {
        const url = new URL(endpoint);
        const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
        conn.close();
        return;
      } catch { /* not yet */ }
    } else {
      try {
        const res = await fetch(`${endpoint}/health`);
        const body = await res.json();
        if (body.health === "true") return;
      } catch { /* not yet */ }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`etcd at ${endpoint} did not become healthy within 15 s`);
}

/** An etcd started again by the function killEtcdForRestart() returns; dispose kills it. */
export interface RestartedEtcd extends AsyncDisposable {
  process: Deno.ChildProcess;
}

/**
 * Kills `etcd` as a crash would (SIGKILL), keeping its data dir, and returns a function that starts it
 * again with the very same command line (data dir, client and peer ports, UNIX socket), waiting until
 * it serves. Dispose the restarted etcd before `etcd` itself, whose disposal removes the data dir
 * (`await using` does, when the restarted one is declared later).
 * @throws {Error} when etcd is no longer running, or the restarted one does not serve within 15 s.
 */
export async function killEtcdForRestart(etcd: TestEtcd): Promise<() => Promise<RestartedEtcd>> {
  // The command line is read before the kill: /proc forgets it with the process.
  const cmdline = await Deno.readTextFile(`/proc/${etcd.process.pid}/cmdline`);
  const args = cmdline.split("\0").slice(1, -1);
  etcd.process.kill("SIGKILL");
  await etcd.process.status;
  return async () => {
    // The dead etcd's UNIX socket file is still there, and binding over it would fail (EADDRINUSE).
    await Deno.remove(etcd.unixEndpoint.slice("unix://".length)).catch(() => {});
    const { process, kill } = spawnEtcd(args, etcd.dataDir);
    try {
      await waitHealthy(etcd.endpoint, etcd.endpoint.startsWith("https:"));
    } catch (err) {
      await kill();
      throw err;
    }
    return { process, [Symbol.asyncDispose]: kill };
  };
}
