// A 3-member etcd cluster on loopback for the quorum campaign, built with helpers/etcd.ts. A member can
// be killed with SIGKILL and restarted on its own data dir, as after a machine crash.

import { freePort, startEtcd, type TestEtcd } from "../helpers/etcd.ts";

interface Member {
  name: string;
  etcd: TestEtcd;
  clientPort: number;
  peerPort: number;
  /** The process after a restart (the helper only knows the first one). */
  restarted?: Deno.ChildProcess;
  running: boolean;
}

/** Owns the members' processes and data dirs; dispose kills them and removes the dirs. */
export class EtcdCluster implements AsyncDisposable {
  #members: Member[];
  #extraArgs: string[];

  private constructor(members: Member[], extraArgs: string[]) {
    this.#members = members;
    this.#extraArgs = extraArgs;
  }

  /** Starts `size` members and waits until each serves. @throws when one is not healthy in time. */
  static async start(size = 3): Promise<EtcdCluster> {
    const ports = Array.from(
      { length: size },
      (_, i) => ({ name: `m${i}`, client: freePort(), peer: freePort() }),
    );
    const extraArgs = [
      "--initial-cluster",
      ports.map((p) => `${p.name}=http://127.0.0.1:${p.peer}`).join(","),
      "--initial-cluster-token",
      `coil-t-${crypto.randomUUID().slice(0, 8)}`,
    ];
    const members: Member[] = [];
    const cluster = new EtcdCluster(members, extraArgs);
    try {
      for (const p of ports) {
        // A member waits for its peers before it serves: start all, then wait for each.
        const etcd = await startEtcd({
          name: p.name,
          clientPort: p.client,
          peerPort: p.peer,
          args: extraArgs,
          noWait: true,
        });
        members.push({ name: p.name, etcd, clientPort: p.client, peerPort: p.peer, running: true });
      }
      for (let i = 0; i < size; i++) await cluster.waitHealthy(i);
      return cluster;
    } catch (err) {
      await cluster[Symbol.asyncDispose]();
      throw err;
    }
  }

  get size(): number {
    return this.#members.length;
  }

  /** The first member's handle, for helpers that take one TestEtcd (its newPrefix(), say). */
  get first(): TestEtcd {
    return this.#members[0].etcd;
  }

  /** http:// client URLs, for the test's own etcd client. */
  endpoints(): string[] {
    return this.#members.map((m) => m.etcd.endpoint);
  }

  /** unix:// client URLs, reachable from inside a node netns. */
  unixEndpoints(): string[] {
    return this.#members.map((m) => m.etcd.unixEndpoint);
  }

  running(i: number): boolean {
    return this.#members[i].running;
  }

  /** Index of the current leader, asked of the running members; undefined while there is none. */
  async leader(): Promise<number | undefined> {
    for (const m of this.#members.filter((m) => m.running)) {
      try {
        const status = await this.#status(m);
        if (status.leader === undefined || status.leader === "0") continue;
        for (const [i, other] of this.#members.entries()) {
          if (other.running && (await this.#status(other)).header.member_id === status.leader) return i;
        }
      } catch { /* not answering: ask the next */ }
    }
    return undefined;
  }

  /** SIGKILL member `i`; its data dir stays. Idempotent. */
  async kill(i: number): Promise<void> {
    const m = this.#members[i];
    if (!m.running) return;
    m.running = false;
    const process = m.restarted ?? m.etcd.process;
    try {
      process.kill("SIGKILL");
    } catch { /* already gone */ }
    await process.status;
  }

  /** Starts member `i` again on its data dir (no wait; see waitHealthy). @throws when it runs. */
  async restart(i: number): Promise<void> {
    const m = this.#members[i];
    if (m.running) throw new Error(`etcd member ${m.name} is running`);
    const { dataDir, endpoint } = m.etcd;
    // A killed etcd leaves its UNIX socket file behind, and its next bind fails on it ("address already
    // in use"): etcd 3.4 does not remove a stale one.
    await Deno.remove(`${dataDir}/localhost:${m.clientPort}`).catch(() => {});
    // The same command line as helpers/etcd.ts builds; with a data dir, etcd ignores the --initial-* flags.
    const args = [
      "--name",
      m.name,
      "--data-dir",
      `${dataDir}/data`,
      "--listen-client-urls",
      `${endpoint},unix://localhost:${m.clientPort}`,
      "--advertise-client-urls",
      endpoint,
      "--listen-peer-urls",
      `http://127.0.0.1:${m.peerPort}`,
      "--initial-advertise-peer-urls",
      `http://127.0.0.1:${m.peerPort}`,
      "--log-level",
      "error",
      ...this.#extraArgs,
    ];
    m.restarted = new Deno.Command("etcd", { args, cwd: dataDir, stdout: "null", stderr: "null" }).spawn();
    m.running = true;
  }

  /** Waits until member `i` reports a healthy cluster (it has a leader). @throws after `timeoutMs`. */
  async waitHealthy(i: number, timeoutMs = 30_000): Promise<void> {
    const m = this.#members[i];
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${m.etcd.endpoint}/health`);
        if ((await res.json()).health === "true") return;
      } catch { /* not yet */ }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`etcd member ${m.name} is not healthy after ${timeoutMs} ms`);
  }

  async #status(m: Member): Promise<{ header: { member_id: string }; leader?: string }> {
    const res = await fetch(`${m.etcd.endpoint}/v3/maintenance/status`, {
      method: "POST",
      body: "{}",
      signal: AbortSignal.timeout(2000),
    });
    return await res.json();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const [i, m] of this.#members.entries()) {
      await this.kill(i);
      await m.etcd.stop();
    }
  }
}
