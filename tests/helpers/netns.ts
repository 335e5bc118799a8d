// Throw-away network namespaces for tests, named `coil-t-<pid>-<random>` and removed on dispose, so
// a test never touches the machine's own namespace.

import { closeNetns, openNetns } from "../../netlink/netns.ts";
import { NetlinkSocket } from "../../netlink/socket.ts";

const NETNS_DIR = "/var/run/netns";
const PREFIX = "coil-t-";
// A leftover without our pid in its name is only removed once this old (another test may own it).
const STALE_MS = 10 * 60 * 1000;

/** A namespace created for one test; `await using` removes it, also when the test fails. */
export interface TestNetns extends AsyncDisposable {
  name: string;
  /** `/var/run/netns/<name>`, for openNetns(). */
  path: string;
  /** Runs a command inside (`ip netns exec`) and returns its stdout. @throws {Error} on non-zero exit. */
  exec(cmd: string[]): Promise<string>;
  /** Runs `ip -j <args>` inside and parses its JSON. */
  ipJson<T = Record<string, unknown>[]>(args: string[]): Promise<T>;
}

/** Runs a command on the host and returns its stdout. @throws {Error} naming it, on non-zero exit. */
export async function run(cmd: string[]): Promise<string> {
  const out = await new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  const decoder = new TextDecoder();
  if (!out.success) {
    throw new Error(
      `Command failed: ${cmd.join(" ")}: exit ${out.code}: ${decoder.decode(out.stderr).trim()}`,
    );
  }
  return decoder.decode(out.stdout);
}

/** Creates a fresh namespace. @throws {Error} when `ip netns add` fails (e.g. without root). */
export async function createNetns(): Promise<TestNetns> {
  const name = `${PREFIX}${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  await run(["ip", "netns", "add", name]);
  const exec = (cmd: string[]) => run(["ip", "netns", "exec", name, ...cmd]);
  return {
    name,
    path: `${NETNS_DIR}/${name}`,
    exec,
    ipJson: async <T>(args: string[]) => JSON.parse((await exec(["ip", "-j", ...args])) || "[]") as T,
    async [Symbol.asyncDispose]() {
      await run(["ip", "netns", "del", name]);
    },
  };
}

function isRunning(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Deletes `coil-t-*` namespaces left by earlier, crashed runs: those whose creating process is gone,
 * or, without a pid in the name, older than ten minutes. Tests of other files (or other people) that
 * run at the same time keep theirs.
 */
export async function removeLeftoverNetns(): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = Array.from(Deno.readDirSync(NETNS_DIR));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  for (const { name } of entries) {
    if (!name.startsWith(PREFIX)) continue;
    const pid = /^coil-t-(\d+)-/.exec(name)?.[1];
    const stale = pid !== undefined
      ? !isRunning(Number(pid))
      : Date.now() - (Deno.statSync(`${NETNS_DIR}/${name}`).mtime?.getTime() ?? 0) > STALE_MS;
    if (stale) await run(["ip", "netns", "del", name]).catch(() => {});
  }
}

/** A NetlinkSocket opened inside a test namespace, with that namespace's fd; dispose closes both. */
export interface NetnsSocket extends Disposable {
  sock: NetlinkSocket;
  fd: number;
}

/** Opens the namespace and a NetlinkSocket bound inside it. */
export function openNetnsSocket(ns: TestNetns): NetnsSocket {
  const fd = openNetns(ns.path);
  let sock: NetlinkSocket;
  try {
    sock = new NetlinkSocket({ netnsFd: fd });
  } catch (err) {
    closeNetns(fd);
    throw err;
  }
  return {
    sock,
    fd,
    [Symbol.dispose]() {
      sock.close();
      closeNetns(fd);
    },
  };
}
