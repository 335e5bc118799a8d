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
  /** Extra flags, e.g. ["--pod-table-id", "116"]. */
  args?: string[];
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

/** Starts coild and waits until its socket answers. @throws when it exits or is not ready in 30 s. */
export async function startCoild(options: CoildOptions): Promise<TestCoild> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-coild-" });
  const nodeName = options.nodeName ?? options.node.name;
  const socket = `${dir}/coild.sock`;
  const args = [
    "netns",
    "exec",
    options.node.name,
    COIL,
    "daemon",
    "--node-name",
    nodeName,
    "--etcd-endpoints",
    options.etcd.unixEndpoint,
    "--etcd-prefix",
    options.prefix,
    "--socket",
    socket,
    ...(options.args ?? []),
  ];
  const process = new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).spawn();
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
  const coild: TestCoild = {
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
  const deadline = Date.now() + 30_000;
  while (!logText.includes('"msg":"ready"')) {
    if (exited || Date.now() > deadline) {
      await coild.kill();
      throw new Error(`coild ${nodeName} did not become ready:\n${logText}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return coild;
}
