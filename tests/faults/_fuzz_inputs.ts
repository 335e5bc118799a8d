// Generated CNI inputs for the fuzz campaign: an environment and stdin bytes, from a seed. Most start
// from a valid call and break one to three things in it (netconf keys and values, the JSON text, CNI_*
// variables, CNI_ARGS); the rest are random JSON and random bytes.

import type { Random } from "./_random.ts";

/** One call as a runtime would make it. */
export interface FuzzInput {
  /** What the generator did, e.g. "netconf: mtu=-1; env: CNI_IFNAME". */
  kind: string;
  env: Record<string, string>;
  stdin: Uint8Array;
}

/** What the inputs may point at: our coild's socket and a real pod netns (main-mode ADDs go through). */
export interface FuzzTargets {
  socket: string;
  podNetns: string;
}

const VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const ODD_STRINGS = [
  "",
  " ",
  "\t",
  "\n",
  "a",
  "A".repeat(300),
  "x".repeat(5000),
  "ünïcödé",
  "😀",
  "\u202e",
  "\u0001",
  "\u007f",
  "\ufffd",
  "\ud800",
  "../../etc/passwd",
  "/",
  ".",
  "..",
  "-",
  "null",
  "true",
  "0",
  "-1",
  "1e309",
  "NaN",
  "constructor",
  "__proto__",
  "toString",
  "hasOwnProperty",
  "%s%n",
  "${x}",
  "a;b",
  "a=b",
  "=",
  ";",
  "\\",
  '"',
  "'",
];
const ODD_NUMBERS = [
  0,
  -0,
  1,
  -1,
  0.5,
  67,
  68,
  1400,
  1500,
  65535,
  65536,
  200,
  253,
  254,
  255,
  4294967295,
  4294967296,
  2 ** 53,
  -(2 ** 53),
  1e308,
  1e-308,
];
const KEYS = [
  "cniVersion",
  "name",
  "type",
  "ipam",
  "socket",
  "mtu",
  "hostRouteTable",
  "prevResult",
  "runtimeConfig",
  "cniVersions",
  "cni.dev/valid-attachments",
  "cni.dev/attachments",
  "args",
  "dns",
  "ips",
  "routes",
  "interfaces",
  "containerID",
  "ifname",
  "__proto__",
  "constructor",
];

/** Draws one input; the same `random` state gives the same input. */
export function generateInput(random: Random, targets: FuzzTargets): FuzzInput {
  const roll = random.next();
  if (roll < 0.4) return mutatedNetconf(random, targets);
  if (roll < 0.6) return mutatedEnv(random, targets);
  if (roll < 0.75) return cniArgsPermutation(random, targets);
  if (roll < 0.85) return randomJsonInput(random, targets);
  if (roll < 0.95) return randomBytesInput(random, targets);
  return textMutation(random, targets);
}

function validEnv(random: Random, targets: FuzzTargets, verb = pickVerb(random)): Record<string, string> {
  const id = `fz${random.int(1 << 30).toString(16)}`;
  const env: Record<string, string> = {
    CNI_COMMAND: verb,
    CNI_CONTAINERID: id,
    CNI_NETNS: targets.podNetns,
    CNI_IFNAME: random.pick(["eth0", "net1"]),
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=${id};K8S_POD_INFRA_CONTAINER_ID=${id}`,
    CNI_PATH: "/opt/cni/bin",
  };
  if (random.chance(0.3)) env.COIL_CNI_TIMEOUT_MS = "10000";
  return env;
}

function pickVerb(random: Random): string {
  return random.pick(["ADD", "ADD", "ADD", "DEL", "DEL", "CHECK", "GC", "STATUS", "VERSION"]);
}

function validNetconf(
  random: Random,
  targets: FuzzTargets,
  env: Record<string, string>,
): Record<string, unknown> {
  const verb = env.CNI_COMMAND;
  const newVerb = verb === "GC" || verb === "STATUS";
  const cniVersion = newVerb
    ? "1.1.0"
    : random.pick(VERSIONS.filter((v) => verb !== "CHECK" || v >= "0.4.0"));
  const conf: Record<string, unknown> = random.chance(0.5)
    ? { cniVersion, name: "fuzznet", type: "coil", socket: targets.socket }
    : {
      cniVersion,
      name: "fuzznet",
      type: "ptp",
      ipMasq: true,
      ipam: { type: "coil", socket: targets.socket },
    };
  if (conf.type === "coil" && random.chance(0.3)) conf.mtu = random.pick([1400, 1500, 9000]);
  if (conf.type === "coil" && random.chance(0.2)) conf.hostRouteTable = random.pick([0, 200, 254]);
  if (verb === "CHECK" || (verb === "DEL" && random.chance(0.5))) {
    conf.prevResult = {
      cniVersion,
      interfaces: [{ name: "eth0", mac: "0a:58:0a:f4:00:05", sandbox: targets.podNetns }],
      ips: [{ address: "10.67.0.5/32", gateway: "169.254.1.1", interface: 0 }],
      routes: [{ dst: "0.0.0.0/0", gw: "169.254.1.1" }],
    };
  }
  if (verb === "GC") {
    conf["cni.dev/valid-attachments"] = [{ containerID: env.CNI_CONTAINERID, ifname: env.CNI_IFNAME }];
  }
  if (random.chance(0.2)) conf.runtimeConfig = { portMappings: [] };
  return conf;
}

function randomJson(random: Random, depth = 0): unknown {
  switch (random.int(depth > 3 ? 5 : 8)) {
    case 0:
      return null;
    case 1:
      return random.chance(0.5);
    case 2:
      return random.pick(ODD_NUMBERS);
    case 3:
      return random.pick(ODD_STRINGS);
    case 4:
      return random.chance(0.5) ? random.pick(VERSIONS) : random.pick(["coil", "ptp", "fuzznet", "eth0"]);
    case 5:
      return Array.from({ length: random.int(5) }, () => randomJson(random, depth + 1));
    default: {
      const obj: Record<string, unknown> = {};
      for (let i = random.int(6); i > 0; i--) {
        setKey(
          obj,
          random.chance(0.8) ? random.pick(KEYS) : random.pick(ODD_STRINGS),
          randomJson(random, depth + 1),
        );
      }
      return obj;
    }
  }
}

/** A valid call with one to three netconf keys deleted, renamed or given another value. */
function mutatedNetconf(random: Random, targets: FuzzTargets): FuzzInput {
  const env = validEnv(random, targets);
  const conf = validNetconf(random, targets, env);
  const what: string[] = [];
  for (let i = random.between(1, 3); i > 0; i--) {
    const target = conf.ipam && typeof conf.ipam === "object" && random.chance(0.3)
      ? conf.ipam as Record<string, unknown>
      : conf;
    const keys = Object.keys(target);
    const key = random.chance(0.8) && keys.length > 0 ? random.pick(keys) : random.pick(KEYS);
    const action = random.int(4);
    if (action === 0) {
      delete target[key];
      what.push(`-${key}`);
    } else if (action === 1) {
      const renamed = random.pick([key.toUpperCase(), key.toLowerCase(), ` ${key}`, `${key}\u0000`]);
      setKey(target, renamed, target[key]);
      delete target[key];
      what.push(`${key}->${JSON.stringify(renamed)}`);
    } else {
      setKey(target, key, randomJson(random));
      what.push(`${key}=${short(target[key])}`);
    }
  }
  keepOurSocket(conf, targets);
  return { kind: `netconf: ${what.join(", ")}`, env, stdin: encode(JSON.stringify(conf)) };
}

/** A valid netconf with one to three CNI_* variables missing or odd. */
function mutatedEnv(random: Random, targets: FuzzTargets): FuzzInput {
  const env = validEnv(random, targets);
  const conf = validNetconf(random, targets, env);
  const odd: Record<string, string[]> = {
    CNI_COMMAND: [
      "add",
      "Add",
      " ADD",
      "ADD ",
      "",
      "VERSIONS",
      "constructor",
      "__proto__",
      "toString",
      "ÄDD",
    ],
    CNI_CONTAINERID: ["", "-a", "_a", "a/b", "a".repeat(10000), "ü", "a b", "a;b", ".", "a\nb"],
    CNI_NETNS: [
      "",
      "relative/path",
      `/var/run/netns/coil-t-absent-${random.int(1 << 30)}`,
      "/dev/null",
      "/",
      "/tmp",
      `/${"x".repeat(5000)}`,
      `${targets.podNetns}/`,
      `${targets.podNetns}\n`,
    ],
    CNI_IFNAME: [
      "",
      "a".repeat(16),
      "a".repeat(15),
      "eth0:1",
      "a b",
      ".",
      "..",
      "ü",
      "/",
      "lo",
      "eth0\n",
      "-",
    ],
    CNI_PATH: ["", ":", "relative", "/nonexistent"],
    COIL_CNI_TIMEOUT_MS: [
      "",
      "0",
      "1",
      "-5",
      "1.5",
      "abc",
      "2147483647",
      "2147483648",
      "99999999999",
      "01000",
    ],
    CNI_FOO: ["bar"],
  };
  const what: string[] = [];
  for (let i = random.between(1, 3); i > 0; i--) {
    const name = random.pick(Object.keys(odd));
    if (name !== "CNI_COMMAND" && random.chance(0.2)) {
      delete env[name];
      what.push(`-${name}`);
    } else {
      env[name] = random.pick(odd[name]);
      what.push(`${name}=${short(env[name])}`);
    }
  }
  return { kind: `env: ${what.join(", ")}`, env, stdin: encode(JSON.stringify(conf)) };
}

/** A valid call whose CNI_ARGS is a random arrangement of good, duplicate, unknown and malformed pairs. */
function cniArgsPermutation(random: Random, targets: FuzzTargets): FuzzInput {
  const env = validEnv(random, targets, random.pick(["ADD", "DEL", "CHECK"]));
  const conf = validNetconf(random, targets, env);
  const id = env.CNI_CONTAINERID;
  const pool = [
    "K8S_POD_NAMESPACE=fuzz",
    `K8S_POD_NAME=${id}`,
    `K8S_POD_INFRA_CONTAINER_ID=${id}`,
    "K8S_POD_UID=0b4c7d5e-1f2a-4b3c-8d9e-0f1a2b3c4d5e",
    random.pick(["IgnoreUnknown=1", "IgnoreUnknown=true", "IgnoreUnknown=0", "IgnoreUnknown=false"]),
    random.pick(["IgnoreUnknown=TRUE", "IgnoreUnknown=yes", "IgnoreUnknown="]),
    "FOO=bar",
    "K8S_POD_NAME=other",
    "K8S_POD_NAMESPACE=fuzz",
    "novalue",
    "=x",
    "a==b",
    "",
    `K8S_POD_NAME=${random.pick(ODD_STRINGS.filter((s) => !s.includes("\u0000")))}`,
  ];
  const pairs = Array.from({ length: random.int(7) }, () => random.pick(pool));
  env.CNI_ARGS = pairs.join(";") + (random.chance(0.1) ? ";" : "");
  return { kind: `CNI_ARGS=${short(env.CNI_ARGS)}`, env, stdin: encode(JSON.stringify(conf)) };
}

function randomJsonInput(random: Random, targets: FuzzTargets): FuzzInput {
  const value = randomJson(random);
  if (value && typeof value === "object" && !Array.isArray(value)) {
    keepOurSocket(value as Record<string, unknown>, targets);
  }
  return {
    kind: `random JSON ${short(value)}`,
    env: validEnv(random, targets),
    stdin: encode(JSON.stringify(value) ?? "null"),
  };
}

function randomBytesInput(random: Random, targets: FuzzTargets): FuzzInput {
  const length = random.chance(0.01) ? random.between(1 << 20, 2 << 20) : random.int(513);
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = random.int(256);
  return { kind: `random bytes (${length})`, env: validEnv(random, targets), stdin: bytes };
}

/** A valid netconf whose JSON text is cut, spliced, wrapped or given a duplicate key. */
function textMutation(random: Random, targets: FuzzTargets): FuzzInput {
  const env = validEnv(random, targets);
  const text = JSON.stringify(validNetconf(random, targets, env));
  const at = random.int(text.length);
  const variants: [string, string][] = [
    ["cut", text.slice(0, at)],
    [
      "char inserted",
      text.slice(0, at) + random.pick(["{", "}", '"', ",", ":", "\\", "\u0000"]) + text.slice(at),
    ],
    ["BOM", "\ufeff" + text],
    ["trailing garbage", text + random.pick(["x", "{}", ",", "\n\n", "\u0000"])],
    ["array", `[${text}]`],
    ["duplicate type", text.replace("{", '{"type":"other",')],
    ["duplicate cniVersion", text.replace(/}$/, ',"cniVersion":"9.9.9"}')],
    ["huge number", text.replace(/}$/, ',"mtu":1e999}')],
    ["deep nesting", text.replace(/}$/, `,"x":${"[".repeat(5000)}${"]".repeat(5000)}}`)],
    ["lone surrogate", text.replace(/}$/, ',"name":"\\ud800"}')],
  ];
  const [kind, mutated] = random.pick(variants);
  return { kind: `text: ${kind}`, env, stdin: encode(mutated) };
}

/**
 * A netconf without `socket` would make coil call the default /run/coild.sock, which may be a real
 * coild on this machine: the fuzz always names ours (or the odd value a mutation put there). So the
 * default path itself is never exercised.
 */
function keepOurSocket(conf: Record<string, unknown>, targets: FuzzTargets): void {
  // null reads as absent too (netconf.ts optional()).
  if (conf.socket === undefined || conf.socket === null) conf.socket = targets.socket;
  const ipam = conf.ipam as Record<string, unknown> | undefined;
  if (ipam && typeof ipam === "object" && !Array.isArray(ipam) && (ipam.socket ?? null) === null) {
    ipam.socket = targets.socket;
  }
}

/** Sets an own enumerable key, `__proto__` included (plain assignment would set the prototype). */
function setKey(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function short(value: unknown): string {
  const text = typeof value === "string" ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function encode(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}
