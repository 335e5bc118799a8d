// A real coild for tests: started through scripts/coil as its own process, inside a test netns (the
// node), talking to the test etcd over its UNIX socket; stopped (or killed) and cleaned up on dispose.

import type { TestEtcd } from "./etcd.ts";
import type { TestNetns } from "./netns.ts";

export const COIL = new URL("../../scripts/coil", import.meta.url).pathname;

export interface CoildOptions {
  etcd: TestEtcd;
  prefix: string;
  /** The node: coild runs inside this netns. */
  node: TestNetns;
  nodeName?: string;
  /** `--etcd-endpoints` instead of the etcd's UNIX endpoint (e.g. a TCP one that iptables can cut). */
  etcdEndpoint?: string;
  /** Extra flags, e.g. ["--pod-table-id", "116"]. */
  args?: string[];
  /** Variables added to coild's environment, e.g. { COIL_ETCD_PASSWORD: "…" }. */
  env?: Record<string, string>;
  /** The coil wrapper to run instead of this tree's, e.g. an older release's (helpers/release_tree.ts). */
  coil?: string;
}

export interface TestCoild extends AsyncDisposable {
  nodeName: string;
  socket: string;
  process: Deno.ChildProcess;
  /** Everything coild logged so far (JSON lines). */
  log(): string;
  /** SIGTERM and wait. */
  stop(): Promise<Deno.CommandStatus>;
  /** SIGKILL and wait (a crash). */
  kill(): Promise<Deno.CommandStatus>;
}

/**
 * Runs a coild that must refuse to start: waits until it exits (in 60 s) and returns its status and log.
 * @throws when it becomes ready instead.
 */
export async function coildRefusing(
  options: CoildOptions,
): Promise<{ status: Deno.CommandStatus; log: string }> {
  const coild = await spawnCoild(options);
  const deadline = Date.now() + 60_000;
  while (!coild.exited()) {
    if (coild.log().includes('"msg":"ready"') || Date.now() > deadline) {
      await coild.kill();
      throw new Error(`coild ${coild.nodeName} did not refuse to start:\n${coild.log()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { status: await coild.stop(), log: coild.log() };
}

/** Starts coild and waits until its socket answers. @throws when it exits or is not ready in 30 s. */
export async function startCoild(options: CoildOptions): Promise<TestCoild> {
  const coild = await spawnCoild(options);
  const deadline = Date.now() + 30_000;
  while (!coild.log().includes('"msg":"ready"')) {
    if (coild.exited() || Date.now() > deadline) {
      await coild.kill();
      throw new Error(`coild ${coild.nodeName} did not become ready:\n${coild.log()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return coild;
}

/** Starts coild without waiting for anything; `exited()` says whether it is gone. */
export async function spawnCoild(options: CoildOptions): Promise<TestCoild & { exited(): boolean }> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-coild-" });
  const nodeName = options.nodeName ?? options.node.name;
  const socket = `${dir}/coild.sock`;
  const args = [
    "netns",
    "exec",
    options.node.name,
    options.coil ?? COIL,
    "daemon",
    "--node-name",
    nodeName,
    "--etcd-endpoints",
    options.etcdEndpoint ?? options.etcd.unixEndpoint,
    "--etcd-prefix",
    options.prefix,
    "--socket",
    socket,
    ...(options.args ?? []),
  ];
  const process = new Deno.Command("ip", { args, env: options.env, stdout: "null", stderr: "piped" }).spawn();
  let logText = "";
  const decoder = new TextDecoder();
  const logDone = process.stderr.pipeTo(
    new WritableStream({ write: (chunk) => void (logText += decoder.decode(chunk, { stream: true })) }),
  ).catch(() => {});
  let exited: Deno.CommandStatus | undefined;
  const status = process.status.then((s) => exited = s);
  const finish = async (signal: Deno.Signal) => {
    if (!exited) {
      try {
        process.kill(signal);
      } catch { /* already gone */ }
    }
    const s = await status;
    await logDone;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    return s;
  };
  return {
    exited: () => exited !== undefined,
    nodeName,
    socket,
    process,
    log: () => logText,
    stop: () => finish("SIGTERM"),
    kill: () => finish("SIGKILL"),
    async [Symbol.asyncDispose]() {
      await finish("SIGTERM");
    },
  };
}
