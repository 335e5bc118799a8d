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
  /** SIGSTOPped: it holds its sockets but answers nothing. */
  paused: boolean;
  /** Its raft member ID once learnt (it survives restarts on the same data dir). */
  memberId?: string;
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
        members.push({
          name: p.name,
          etcd,
          clientPort: p.client,
          peerPort: p.peer,
          running: true,
          paused: false,
        });
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

  /**
   * Index of the current leader, asked of the running members that are not paused (a paused member
   * answers nothing); undefined while there is none. A paused member still counts as the leader when
   * the others name it (they have not noticed yet).
   */
  async leader(): Promise<number | undefined> {
    const answering = (m: Member) => m.running && !m.paused;
    for (const m of this.#members.filter(answering)) {
      try {
        const status = await this.#status(m);
        if (status.leader === undefined || status.leader === "0") continue;
        for (const [i, other] of this.#members.entries()) {
          if (!other.running) continue;
          // A paused member cannot tell its ID; its ID is known from before the pause.
          const id = other.memberId ??
            (answering(other) ? (await this.#status(other)).header.member_id : undefined);
          if (id !== undefined) other.memberId = id;
          if (id === status.leader) return i;
        }
      } catch { /* not answering: ask the next */ }
    }
    return undefined;
  }

  /**
   * SIGSTOP member `i`, as a stalled VM or a stopped-the-world pause would: its sockets stay open and
   * accept, but it answers nothing, neither clients nor peers. Learns its member ID first (see leader()).
   */
  async pause(i: number): Promise<void> {
    const m = this.#members[i];
    if (!m.running || m.paused) throw new Error(`etcd member ${m.name} is not running or already paused`);
    m.memberId ??= (await this.#status(m)).header.member_id;
    (m.restarted ?? m.etcd.process).kill("SIGSTOP");
    m.paused = true;
  }

  /** SIGCONT member `i`. Idempotent. */
  resume(i: number): void {
    const m = this.#members[i];
    if (!m.running || !m.paused) return;
    (m.restarted ?? m.etcd.process).kill("SIGCONT");
    m.paused = false;
  }

  /** SIGKILL member `i`; its data dir stays. Idempotent. */
  async kill(i: number): Promise<void> {
    const m = this.#members[i];
    if (!m.running) return;
    m.running = false;
    m.paused = false; // SIGKILL ends a stopped process too
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
