// The CNI_* environment as one table (variable, verbs that require it, verbs that read it, validator),
// read once into typed data. Every problem is reported at once, in one code-4 error.

import { type CniArgs, cniArgsProblem, parseCniArgs } from "./cni_args.ts";
import { CniError, ERR_INVALID_ENV } from "./errors.ts";
import type { Verb } from "./version.ts";

/** How long the client waits for coild, in ms, when COIL_CNI_TIMEOUT_MS is unset (2 × Coil v2's RPC timeout). */
export const DEFAULT_TIMEOUT_MS = 120_000;

/** The environment of one call, validated. Strings are "" where the verb does not use the variable. */
export interface CniEnv {
  verb: Verb;
  containerId: string;
  /** "" on DEL when the runtime no longer knows the netns. */
  netns: string;
  ifName: string;
  args: CniArgs;
  /** COIL_CNI_TIMEOUT_MS: how long to wait for coild. */
  timeoutMs: number;
}

interface EnvVar {
  name: string;
  required: readonly Verb[];
  /** Verbs that read the variable; others ignore it, invalid or not (as Go's skel does). */
  used: readonly Verb[];
  /** The problem with a present value, or undefined when it is valid. */
  problem?: (value: string) => string | undefined;
}

// A Map, not an object literal: CNI_COMMAND=constructor must not find Object.prototype's.
const VERBS: ReadonlyMap<string, Verb> = new Map([
  ["ADD", "add"],
  ["DEL", "del"],
  ["CHECK", "check"],
  ["GC", "gc"],
  ["STATUS", "status"],
  ["VERSION", "version"],
]);
const ALL: readonly Verb[] = [...VERBS.values()];
const ATTACHMENT: readonly Verb[] = ["add", "del", "check"];
const TALKS_TO_COILD: readonly Verb[] = ["add", "del", "check", "gc", "status"];

// SPEC.md, "Parameters": CNI_CONTAINERID must start with an alphanumeric character, followed by any
// mix of alphanumerics, `_`, `.` and `-`.
const CONTAINER_ID_REGEXP = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

// Bytes that the kernel's dev_valid_name() (net/core/dev.c) rejects in a link name: '/', ':' (the old
// alias syntax `eth0:1`) and isspace() from lib/ctype.c, which includes 0xA0 as well as \t\n\v\f\r and ' '.
const IFNAME_FORBIDDEN_BYTES = new Set([0x2f, 0x3a, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0xa0]);
/** IFNAMSIZ - 1: the kernel keeps a terminating NUL in 16 bytes. */
const IFNAME_MAX_BYTES = 15;

const ENV_TABLE: readonly EnvVar[] = [
  { name: "CNI_COMMAND", required: ALL, used: ALL, problem: commandProblem },
  { name: "CNI_CONTAINERID", required: ATTACHMENT, used: ATTACHMENT, problem: containerIdProblem },
  { name: "CNI_NETNS", required: ["add", "check"], used: ATTACHMENT, problem: netnsProblem },
  { name: "CNI_IFNAME", required: ATTACHMENT, used: ATTACHMENT, problem: ifNameProblem },
  { name: "CNI_ARGS", required: [], used: ATTACHMENT, problem: cniArgsProblem },
  // Coil delegates to no plugin: CNI_PATH is only required where the spec says so (SPEC.md, GC).
  { name: "CNI_PATH", required: ["gc"], used: TALKS_TO_COILD },
  { name: "COIL_CNI_TIMEOUT_MS", required: [], used: TALKS_TO_COILD, problem: timeoutProblem },
];

/**
 * Reads and validates the environment for the verb in CNI_COMMAND. An empty variable counts as missing.
 * @throws {CniError} code 4 naming every missing or invalid variable
 */
export function readEnv(getenv: (name: string) => string | undefined): CniEnv {
  const verb = VERBS.get(getenv("CNI_COMMAND") ?? "");
  const values = new Map<string, string>();
  const problems: string[] = [];
  for (const v of ENV_TABLE) {
    const value = getenv(v.name) ?? "";
    if (value === "") {
      if (v.name === "CNI_COMMAND" || (verb !== undefined && v.required.includes(verb))) {
        problems.push(`${v.name} is missing`);
      }
      continue;
    }
    if (verb === undefined ? v.name !== "CNI_COMMAND" : !v.used.includes(verb)) continue;
    const problem = v.problem?.(value);
    if (problem !== undefined) problems.push(`${v.name} ${JSON.stringify(value)} ${problem}`);
    else values.set(v.name, value);
  }
  if (problems.length > 0 || verb === undefined) {
    throw new CniError(ERR_INVALID_ENV, `Invalid environment: ${problems.join("; ")}`);
  }
  const timeout = values.get("COIL_CNI_TIMEOUT_MS");
  return {
    verb,
    containerId: values.get("CNI_CONTAINERID") ?? "",
    netns: values.get("CNI_NETNS") ?? "",
    ifName: values.get("CNI_IFNAME") ?? "",
    args: parseCniArgs(values.get("CNI_ARGS") ?? ""),
    timeoutMs: timeout === undefined ? DEFAULT_TIMEOUT_MS : Number(timeout),
  };
}

function commandProblem(value: string): string | undefined {
  if (VERBS.has(value)) return undefined;
  return `is not a CNI verb: expected one of ${[...VERBS.keys()].join(", ")}`;
}

function containerIdProblem(value: string): string | undefined {
  if (CONTAINER_ID_REGEXP.test(value)) return undefined;
  return "has invalid characters: expected an alphanumeric followed by alphanumerics, '_', '.' or '-'";
}

function netnsProblem(value: string): string | undefined {
  return value.startsWith("/") ? undefined : "is not an absolute path";
}

function ifNameProblem(value: string): string | undefined {
  const bytes = new TextEncoder().encode(value);
  if (bytes.length > IFNAME_MAX_BYTES) return `is longer than ${IFNAME_MAX_BYTES} bytes`;
  if (value === "." || value === "..") return "is not a valid interface name";
  if (bytes.some((b) => IFNAME_FORBIDDEN_BYTES.has(b))) {
    return "has a character the kernel rejects in interface names: '/', ':' or whitespace";
  }
  return undefined;
}

function timeoutProblem(value: string): string | undefined {
  // setTimeout() holds at most 2^31 - 1 ms; larger values fire at once.
  if (/^[1-9][0-9]{0,9}$/.test(value) && Number(value) <= 2 ** 31 - 1) return undefined;
  return "is not a timeout in milliseconds: expected an integer from 1 to 2147483647";
}
