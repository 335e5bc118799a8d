// Fault campaign: generated CNI inputs (mutated netconfs and environments, CNI_ARGS permutations,
// random JSON and bytes) against a real coild. Every answer must be exit 0, or exit 1 with a JSON error
// of a known code on stdout; nothing may crash, hang or leave etcd changed. Most inputs run through the
// dispatcher in-process (cni/skel.ts dispatch() with the real handlers and socket, as cni/main.ts wires
// them); every (INPUTS / EXECS)-th one runs as a real process. Sizes: COIL_FAULTS_FUZZ_INPUTS,
// COIL_FAULTS_FUZZ_EXECS; replay: COIL_FAULTS_SEED (the inputs depend on the seed alone). Every ADD and
// DEL, the runtime's clean-up DELs included, goes to the history checker (_history.ts).

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { add, check, del, gc, status } from "../../cni/commands.ts";
import {
  ERR_CHECK_FAILED,
  ERR_DECODE,
  ERR_INCOMPATIBLE_VERSION,
  ERR_INVALID_CONFIG,
  ERR_INVALID_ENV,
  ERR_IO,
  ERR_LIMITED_CONNECTIVITY,
  ERR_NO_POOL,
  ERR_NOT_AVAILABLE,
  ERR_POOL_EXHAUSTED,
  ERR_TRY_AGAIN_LATER,
  ERR_UNKNOWN_CONTAINER,
  ERR_UNSUPPORTED_FIELD,
} from "../../cni/errors.ts";
import { dispatch } from "../../cni/skel.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { COIL } from "../helpers/coild.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { createNetns } from "../helpers/netns.ts";
import { type FuzzInput, generateInput } from "./_fuzz_inputs.ts";
import { assertHistory, type CallResult, History } from "./_history.ts";
import { readIpamState } from "./_ipam_state.ts";
import { CoildNode } from "./_node.ts";
import { campaignSeed, envCount } from "./_params.ts";
import { seededRandom } from "./_random.ts";

const INPUTS = envCount("COIL_FAULTS_FUZZ_INPUTS", 10_000);
const EXECS = envCount("COIL_FAULTS_FUZZ_EXECS", 500);
/** Far above any answer's time: reaching it means a hang. */
const TIMEOUT_MS = 30_000;
/** The codes coil may answer with (cni/errors.ts); 999 means a bug and is not among them. */
const KNOWN_CODES = new Set([
  ERR_INCOMPATIBLE_VERSION,
  ERR_UNSUPPORTED_FIELD,
  ERR_UNKNOWN_CONTAINER,
  ERR_INVALID_ENV,
  ERR_IO,
  ERR_DECODE,
  ERR_INVALID_CONFIG,
  ERR_TRY_AGAIN_LATER,
  ERR_NOT_AVAILABLE,
  ERR_LIMITED_CONNECTIVITY,
  ERR_NO_POOL,
  ERR_POOL_EXHAUSTED,
  ERR_CHECK_FAILED,
]);
/** How many problems the failure message lists. */
const SHOWN = 25;

/** What one call produced, in-process or as a process. */
interface Answer {
  code: number;
  stdout: string;
  stderr: string;
  /** The signal that ended the process, if one did. */
  signal?: string;
  timedOut: boolean;
  /** dispatch() itself threw: the in-process equivalent of a crash. */
  threw?: string;
}

Deno.test("coil in CNI mode answers every generated input with a known code, never crashing, hanging or changing etcd", async () => {
  const random = seededRandom(campaignSeed("fuzz"));
  const execEvery = Math.max(1, Math.floor(INPUTS / EXECS));
  console.log(
    `fuzz: seed ${random.seed} (replay with COIL_FAULTS_SEED=${random.seed}), ${INPUTS} inputs, ` +
      `every ${execEvery}th as a process`,
  );
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix });
  try {
    // One /24 block: fuzzed ADDs (each DEL'd at once) never need a spare, so no claim runs in the background.
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.67.0.0/16"], blockSizeBits: 8 }),
    );
    await using node = await CoildNode.create({ etcd, prefix, args: ["--sweep-interval", "0"] });
    await using podNetns = await createNetns();
    const targets = { socket: node.socket, podNetns: podNetns.path };
    await warmUp(targets);
    const baseline = await snapshot(client, prefix);

    const codes = new Map<string, number>();
    const processCodes = new Map<string, number>();
    const kinds = new Map<string, number>();
    /** The first input that got each code, for the report. */
    const examples = new Map<string, string>();
    const problems: string[] = [];
    const distinct = new Map<string, { count: number; example: string }>();
    const history = new History();
    let processes = 0;
    let accepted = 0;
    const started = Date.now();
    for (let i = 0; i < INPUTS; i++) {
      const input = generateInput(random, targets);
      const asProcess = i % execEvery === 0 && processes < EXECS;
      if (asProcess) processes++;
      const start = History.now();
      const answer = asProcess ? await execInput(input) : await dispatchInput(input);
      const verdict = judge(answer);
      record(history, input, start, answer, verdict.code);
      const code = verdict.code === undefined ? "none" : String(verdict.code);
      codes.set(code, (codes.get(code) ?? 0) + 1);
      if (asProcess) processCodes.set(code, (processCodes.get(code) ?? 0) + 1);
      if (!examples.has(code)) {
        examples.set(code, `${input.env.CNI_COMMAND} (${cut(input.kind)}): ${message(answer)}`);
      }
      const kind = /^(netconf|env|CNI_ARGS|random JSON|random bytes|text)/.exec(input.kind)?.[1] ?? "other";
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      const where = `#${i} ${asProcess ? "process" : "in-process"} ${input.env.CNI_COMMAND} (${input.kind})`;
      const report = (problem: string) => {
        problems.push(`${where}: ${problem}`);
        const key = signature(problem);
        const seen = distinct.get(key) ?? { count: 0, example: `${where}: ${problem}` };
        distinct.set(key, { ...seen, count: seen.count + 1 });
      };
      if (verdict.problem) report(verdict.problem);
      if (verdict.code === 0) accepted++;
      // A runtime DELs after every ADD that it cannot count as failed for good: after success and after 11.
      if (input.env.CNI_COMMAND === "ADD" && (verdict.code === 0 || verdict.code === ERR_TRY_AGAIN_LATER)) {
        const env: Record<string, string> = { ...input.env, CNI_COMMAND: "DEL" };
        delete env.COIL_CNI_TIMEOUT_MS;
        const cleanupStart = History.now();
        const cleanupAnswer = await dispatchInput({ ...input, env });
        const cleanup = judge(cleanupAnswer);
        record(history, { ...input, env }, cleanupStart, cleanupAnswer, cleanup.code);
        if (verdict.code === 0 && cleanup.code !== 0) {
          report(`the DEL after it answered ${cleanup.code}: ${cleanup.problem ?? ""}`);
        }
      }
      const changed = await changedState(client, prefix, baseline);
      if (changed) report(`etcd changed: ${changed}`);
    }
    const seconds = (Date.now() - started) / 1000;
    const tally = (m: Map<string, number>) =>
      [...m.entries()].sort((a, b) => Number(a[0]) - Number(b[0]) || (a[0] < b[0] ? -1 : 1))
        .map(([k, n]) => `${k}: ${n}`).join(", ");
    console.log(
      `fuzz: ${INPUTS} inputs (${INPUTS - processes} in-process, ${processes} as processes) in ` +
        `${seconds.toFixed(1)} s; by kind ${tally(kinds)}; accepted ${accepted}; by code ${tally(codes)}; ` +
        `(processes alone: ${tally(processCodes)}); problems ${problems.length} (${distinct.size} distinct)`,
    );
    console.log(
      [...examples.entries()].map(([code, example]) => `fuzz: e.g. ${code} <- ${example}`).join("\n"),
    );
    history.final({ keys: (await readIpamState(client, prefix)).addresses, veths: await node.taggedVeths() });
    assertHistory(history, "fuzz");
    const summary = [...distinct.values()].map((d) => `${d.count} x ${d.example}`);
    assert.deepEqual(
      summary.slice(0, SHOWN),
      [],
      `${problems.length} problems, ${distinct.size} distinct; one example each above`,
    );
  } finally {
    client.close();
  }
});

/** One valid ADD and DEL, so that the block exists before the baseline is taken. */
async function warmUp(targets: { socket: string; podNetns: string }): Promise<void> {
  const env = {
    CNI_COMMAND: "ADD",
    CNI_CONTAINERID: "warmup",
    CNI_NETNS: targets.podNetns,
    CNI_IFNAME: "eth0",
    CNI_PATH: "/opt/cni/bin",
  };
  const netconf = {
    cniVersion: "1.1.0",
    name: "fuzznet",
    type: "ptp",
    ipam: { type: "coil", socket: targets.socket },
  };
  const stdin = new TextEncoder().encode(JSON.stringify(netconf));
  for (const command of ["ADD", "DEL"]) {
    const answer = await dispatchInput({ kind: "warm-up", env: { ...env, CNI_COMMAND: command }, stdin });
    assert.equal(answer.code, 0, answer.stdout);
  }
}

/** The input through dispatch() with the real handlers, as cni/main.ts runs it, in this process. */
async function dispatchInput(input: FuzzInput): Promise<Answer> {
  let stdout = "";
  let stderr = "";
  const io = {
    getenv: (name: string) => Object.hasOwn(input.env, name) ? input.env[name] : undefined,
    readStdin: () => Promise.resolve(input.stdin),
    writeStdout: (text: string) => Promise.resolve(void (stdout += text)),
    writeStderr: (text: string) => Promise.resolve(void (stderr += text)),
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) =>
    timer = setTimeout(() => resolve("timeout"), TIMEOUT_MS)
  );
  try {
    const code = await Promise.race([dispatch(io, { add, del, check, gc, status }), timeout]);
    if (code === "timeout") return { code: -1, stdout, stderr, timedOut: true };
    return { code, stdout, stderr, timedOut: false };
  } catch (err) {
    return { code: -1, stdout, stderr, timedOut: false, threw: String(err) };
  } finally {
    clearTimeout(timer);
  }
}

/** The input as a runtime gives it: the coil executable, the environment alone, the bytes on stdin. */
async function execInput(input: FuzzInput): Promise<Answer> {
  const signal = AbortSignal.timeout(TIMEOUT_MS);
  const child = new Deno.Command(COIL, {
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ...input.env },
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal,
  }).spawn();
  const writer = child.stdin.getWriter();
  // VERSION reads no stdin, and coil may exit before reading all of a large input: a broken pipe is fine.
  await writer.write(input.stdin).catch(() => {});
  await writer.close().catch(() => {});
  const out = await child.output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    signal: out.signal ?? undefined,
    timedOut: signal.aborted,
  };
}

/**
 * Records an ADD or DEL input into the history, keyed by what coild keys on: the netconf's `name` (when
 * the bytes parse), CNI_CONTAINERID and CNI_IFNAME. Other verbs hold and release nothing.
 */
function record(history: History, input: FuzzInput, start: number, answer: Answer, code?: number): void {
  const verb = input.env.CNI_COMMAND;
  if (verb !== "ADD" && verb !== "DEL") return;
  let network = "?";
  try {
    const name = JSON.parse(new TextDecoder().decode(input.stdin))?.name;
    if (typeof name === "string") network = name;
  } catch { /* not JSON: coild never saw it */ }
  let result: CallResult;
  if (code === 0) {
    const ips = verb === "ADD" ? parsedIps(answer.stdout) : [];
    result = { status: "ok", addresses: ips };
  } else if (code === ERR_TRY_AGAIN_LATER || code === undefined) {
    // 11 here means a client timeout of 1 ms: coild may have gone on with the call.
    result = { status: "unknown", code: code ?? -1, msg: message(answer) };
  } else {
    result = { status: "error", code, msg: message(answer) };
  }
  const attachment = {
    network,
    containerId: input.env.CNI_CONTAINERID ?? "",
    ifName: input.env.CNI_IFNAME ?? "",
  };
  history.record({ verb, attachment, start, result });
}

/** The addresses of an ADD result on stdout; none when it has no `ips` list. */
function parsedIps(stdout: string): string[] {
  try {
    const ips = JSON.parse(stdout.trim())?.ips;
    return Array.isArray(ips) ? ips.flatMap((i) => typeof i?.address === "string" ? [i.address] : []) : [];
  } catch {
    return [];
  }
}

/** The answer's CNI code (0 for success) and what is wrong with it, if anything. */
function judge(answer: Answer): { code?: number; problem?: string } {
  if (answer.threw) return { problem: `dispatch() threw: ${answer.threw}` };
  if (answer.timedOut) return { problem: `no answer within ${TIMEOUT_MS} ms` };
  if (answer.signal) return { problem: `killed by ${answer.signal}; stderr: ${cut(answer.stderr)}` };
  if (answer.code !== 0 && answer.code !== 1) {
    return { problem: `exit ${answer.code}; stdout: ${cut(answer.stdout)}; stderr: ${cut(answer.stderr)}` };
  }
  const text = answer.stdout.trim();
  if (answer.code === 0 && text === "") return { code: 0 };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { problem: `stdout is not JSON: ${cut(answer.stdout)}; stderr: ${cut(answer.stderr)}` };
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return { problem: `stdout is not a JSON object: ${cut(text)}` };
  }
  if (answer.code === 0) return { code: 0 };
  const { code, msg } = json as { code?: unknown; msg?: unknown };
  if (typeof code !== "number" || typeof msg !== "string") {
    return { problem: `not a CNI error: ${cut(text)}` };
  }
  if (!KNOWN_CODES.has(code)) return { code, problem: `code ${code}: ${msg}; stderr: ${cut(answer.stderr)}` };
  return { code };
}

type Snapshot = Map<string, string>;

/** Every key under the prefix but the node liveness keys, with its ModRevision. */
async function snapshot(client: Etcd3, prefix: string): Promise<Snapshot> {
  const res = await client.getAll().prefix(prefix).exec();
  return new Map(
    res.kvs.map((kv) => [kv.key.toString(), kv.mod_revision] as const)
      .filter(([key]) => !key.startsWith(`${prefix}nodes/`)),
  );
}

/**
 * How etcd differs from the baseline, or undefined. A difference may be an answer still in flight
 * (the client gave up on a short timeout but coild went on): it must be gone within a second.
 */
async function changedState(client: Etcd3, prefix: string, baseline: Snapshot): Promise<string | undefined> {
  let diff: string | undefined;
  for (let attempt = 0; attempt < 10; attempt++) {
    const now = await snapshot(client, prefix);
    const keys = new Set([...baseline.keys(), ...now.keys()]);
    const changed = [...keys].filter((k) => baseline.get(k) !== now.get(k));
    if (changed.length === 0) return undefined;
    diff = changed.map((k) => `${k.slice(prefix.length)} ${baseline.get(k) ?? "-"} -> ${now.get(k) ?? "-"}`)
      .join(", ");
    await new Promise((r) => setTimeout(r, 100));
  }
  return diff;
}

/** The answer's error message, cut short; "" for a success. */
function message(answer: Answer): string {
  try {
    const msg = JSON.parse(answer.stdout.trim())?.msg;
    return typeof msg === "string" ? cut(msg) : "";
  } catch {
    return cut(answer.stdout);
  }
}

/** A problem with its variable parts (IDs, names, long runs, numbers) blurred, to group alike ones. */
function signature(problem: string): string {
  return problem.replace(/(fz|veth)[0-9a-f]+/g, "$1…").replace(/(.)\1{9,}/g, "$1…").replace(/[0-9]+/g, "#");
}

function cut(text: string): string {
  const flat = text.trim().replaceAll("\n", "\\n");
  return flat.length > 300 ? `${flat.slice(0, 297)}...` : flat;
}
