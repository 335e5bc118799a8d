// One node of a fault campaign: a netns standing in for the host, and coild inside it on a socket path
// that stays the same across kills and restarts, as /run/coild.sock does on a real node.

import { startCoild, type TestCoild } from "../helpers/coild.ts";
import type { TestEtcd } from "../helpers/etcd.ts";
import { createNetns, type TestNetns } from "../helpers/netns.ts";

export interface NodeOptions {
  etcd: TestEtcd;
  prefix: string;
  /** coild flags; `--socket` is set here. */
  args?: string[];
  /** The node's netns, made by the caller (e.g. with a link to etcd); the node owns it from then on. */
  netns?: TestNetns;
  /** `--etcd-endpoints` instead of the etcd's UNIX endpoint. */
  etcdEndpoint?: string;
}

/** Owns the node netns and whichever coild runs in it; dispose stops coild and removes both. */
export class CoildNode implements AsyncDisposable {
  readonly netns: TestNetns;
  readonly socket: string;
  #dir: string;
  #options: NodeOptions;
  #coild: TestCoild | undefined;
  #pastLogs: string[] = [];
  #starts = 0;
  /** The process pause() stopped, until resume(). */
  #pausedPid: number | undefined;

  private constructor(netns: TestNetns, dir: string, options: NodeOptions) {
    this.netns = netns;
    this.#dir = dir;
    this.socket = `${dir}/coild.sock`;
    this.#options = options;
  }

  /** Creates the node and starts coild. @throws when coild does not become ready (see startCoild). */
  static async create(options: NodeOptions): Promise<CoildNode> {
    const netns = options.netns ?? await createNetns();
    const dir = await Deno.makeTempDir({ prefix: "coil-t-faults-" }).catch(async (err) => {
      await netns[Symbol.asyncDispose]();
      throw err;
    });
    const node = new CoildNode(netns, dir, options);
    try {
      // Table 119 routes use `dev lo`: the loopback must be up before coild exports a block.
      await netns.exec(["ip", "link", "set", "lo", "up"]);
      await node.start();
      return node;
    } catch (err) {
      await node[Symbol.asyncDispose]();
      throw err;
    }
  }

  get name(): string {
    return this.netns.name;
  }

  /** Whether a coild runs (started and not yet killed or stopped). */
  get running(): boolean {
    return this.#coild !== undefined;
  }

  /** How many times coild was started. */
  get starts(): number {
    return this.#starts;
  }

  /** Starts coild, with `extraArgs` after the node's own. @throws when it is already running. */
  async start(extraArgs: string[] = []): Promise<void> {
    if (this.#coild) throw new Error(`coild of node ${this.name} is already running`);
    this.#starts++;
    const { etcd, prefix, args = [], etcdEndpoint } = this.#options;
    this.#coild = await startCoild({
      etcd,
      prefix,
      etcdEndpoint,
      node: this.netns,
      args: [...args, ...extraArgs, "--socket", this.socket],
    });
  }

  /** SIGKILL, as a crash or an OOM kill would; the socket file stays behind. Idempotent. */
  async kill(): Promise<void> {
    const coild = this.#coild;
    this.#coild = undefined;
    if (!coild) return;
    await coild.kill();
    this.#pastLogs.push(coild.log());
  }

  /**
   * Sends `signal` to the running coild without waiting (SIGSTOP and SIGCONT, to pause it).
   * @throws {Error} when none runs.
   */
  signal(signal: Deno.Signal): void {
    if (!this.#coild) throw new Error(`No coild of node ${this.name} runs`);
    this.#coild.process.kill(signal);
  }

  /**
   * SIGSTOPs the process that is coild and waits until the kernel shows it stopped.
   * @returns its pid. @throws {Error} when none runs or it does not stop within 5 s.
   */
  async pause(): Promise<number> {
    const pid = this.daemonPid();
    this.#pausedPid = pid;
    Deno.kill(pid, "SIGSTOP");
    await waitForProcessState(pid, (state) => state === "T", "stopped");
    return pid;
  }

  /** SIGCONTs the process that is coild and waits until it is no longer stopped. @throws as pause(). */
  async resume(): Promise<void> {
    const pid = this.daemonPid();
    Deno.kill(pid, "SIGCONT");
    this.#pausedPid = undefined;
    await waitForProcessState(pid, (state) => state !== "T", "running again");
  }

  /**
   * The pid of the deno process that is coild: the spawned process itself when `ip netns exec` and
   * scripts/coil exec into deno (they do now), else its first deno descendant (a wrapper that forks).
   * @throws {Error} when none runs.
   */
  daemonPid(): number {
    if (!this.#coild) throw new Error(`No coild of node ${this.name} runs`);
    const queue = [this.#coild.process.pid];
    for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
      try {
        if (Deno.readLinkSync(`/proc/${pid}/exe`).endsWith("/deno")) return pid;
        for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
          const children = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`);
          queue.push(...children.trim().split(/\s+/).filter(Boolean).map(Number));
        }
      } catch { /* exited meanwhile */ }
    }
    throw new Error(`coild of node ${this.name} (pid ${this.#coild.process.pid}) has no deno process`);
  }

  /**
   * The aliases of the host veths coild tagged, sorted: `coil:<network>:<containerId>:<ifName>`, or
   * `coil:<containerId>:<ifName>` as Coil 0.1 wrote them.
   */
  async taggedVeths(): Promise<string[]> {
    const links = await this.netns.ipJson<{ ifalias?: string }[]>(["link", "show", "type", "veth"]);
    return links.flatMap((l) => l.ifalias?.startsWith("coil:") ? [l.ifalias] : []).sort();
  }

  /** The container IDs in taggedVeths() (the next-to-last field of either alias form), sorted. */
  async taggedContainerIds(): Promise<string[]> {
    return (await this.taggedVeths()).map((alias) => alias.split(":").at(-2)!).sort();
  }

  /** SIGTERM and wait; a coild that pause() stopped gets SIGCONT first (else it never sees SIGTERM). */
  async stop(): Promise<void> {
    const coild = this.#coild;
    this.#coild = undefined;
    if (!coild) return;
    if (this.#pausedPid !== undefined) {
      try {
        Deno.kill(this.#pausedPid, "SIGCONT");
      } catch { /* gone */ }
      this.#pausedPid = undefined;
    }
    await coild.stop();
    this.#pastLogs.push(coild.log());
  }

  /** The log of every coild started so far, oldest first, each run headed by a marker line. */
  log(): string {
    const runs = [...this.#pastLogs, ...(this.#coild ? [this.#coild.log()] : [])];
    return runs.map((text, i) => `--- coild run ${i + 1}\n${text}`).join("");
  }

  /** The last `lines` lines of log(), for assertion messages. */
  logTail(lines = 40): string {
    return this.log().split("\n").slice(-lines).join("\n");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.stop();
    } finally {
      await this.netns[Symbol.asyncDispose]();
      await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
    }
  }
}

/** Waits until `/proc/<pid>/stat`'s state letter passes `ok`. @throws {Error} after 5 s. */
async function waitForProcessState(pid: number, ok: (state: string) => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // The state follows the command name, which is in parentheses and may hold spaces.
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    if (ok(state)) return;
    if (Date.now() > deadline) throw new Error(`Process ${pid} is not ${what} after 5 s: state ${state}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
