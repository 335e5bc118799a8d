// Malformed CNI calls that coil must refuse before it contacts coild, with the CNI code and the message
// each must give; shared by the CNI-mode test (no coild) and the e2e test (a live coild on a real etcd).

/** One malformed call: the env, the stdin (a string or bytes as they are, else JSON), the expected answer. */
export type BadCniCase = [
  title: string,
  env: Record<string, string>,
  stdin: unknown,
  code: number,
  message: RegExp,
];

export interface BadCniInputs {
  /** A valid netconf with coil as the main plugin. */
  conf: Record<string, unknown>;
  /** A valid netconf with ptp delegating IPAM to coil. */
  ipam: Record<string, unknown>;
  /** A valid ADD environment. */
  add: Record<string, string>;
  /** A GC environment. */
  gc: Record<string, string>;
  cases: BadCniCase[];
}

/**
 * Builds the valid conf, env and the malformed cases around them for coild at `socket`, a pod at `netns`
 * and, when given, `cniArgs` in the ADD env. Pure; every call returns fresh objects.
 */
export function badCniInputs(context: { socket: string; netns: string; cniArgs?: string }): BadCniInputs {
  const { socket } = context;
  const conf = { cniVersion: "1.1.0", name: "net", type: "coil", socket };
  const ipam = { cniVersion: "1.0.0", name: "net", type: "ptp", ipam: { type: "coil", socket } };
  const add: Record<string, string> = {
    CNI_COMMAND: "ADD",
    CNI_CONTAINERID: "c1",
    CNI_NETNS: context.netns,
    CNI_IFNAME: "eth0",
    ...(context.cniArgs !== undefined ? { CNI_ARGS: context.cniArgs } : {}),
  };
  const gc = { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" };
  const cases: BadCniCase[] = [
    // The environment.
    ["empty CNI_COMMAND", { ...add, CNI_COMMAND: "" }, conf, 4, /CNI_COMMAND is missing/],
    ["unknown CNI_COMMAND", { ...add, CNI_COMMAND: "FOO" }, conf, 4, /CNI_COMMAND "FOO" is not a CNI verb/],
    ["lower-case CNI_COMMAND", { ...add, CNI_COMMAND: "add" }, conf, 4, /CNI_COMMAND "add"/],
    ["ADD without CNI_CONTAINERID", { ...add, CNI_CONTAINERID: "" }, conf, 4, /CNI_CONTAINERID is missing/],
    ["ADD without CNI_NETNS", { ...add, CNI_NETNS: "" }, conf, 4, /CNI_NETNS is missing/],
    ["ADD without CNI_IFNAME", { ...add, CNI_IFNAME: "" }, conf, 4, /CNI_IFNAME is missing/],
    [
      "ADD with no attachment at all",
      { CNI_COMMAND: "ADD" },
      conf,
      4,
      /CNI_CONTAINERID is missing; CNI_NETNS is missing; CNI_IFNAME is missing/,
    ],
    [
      "CHECK without CNI_NETNS",
      { ...add, CNI_COMMAND: "CHECK", CNI_NETNS: "" },
      conf,
      4,
      /CNI_NETNS is missing/,
    ],
    [
      "DEL without CNI_IFNAME",
      { ...add, CNI_COMMAND: "DEL", CNI_IFNAME: "" },
      conf,
      4,
      /CNI_IFNAME is missing/,
    ],
    ["GC without CNI_PATH", { CNI_COMMAND: "GC" }, conf, 4, /CNI_PATH is missing/],
    [
      "container ID starting with -",
      { ...add, CNI_CONTAINERID: "-c1" },
      conf,
      4,
      /CNI_CONTAINERID "-c1" has invalid/,
    ],
    ["container ID with /", { ...add, CNI_CONTAINERID: "a/b" }, conf, 4, /CNI_CONTAINERID "a\/b"/],
    [
      "container ID with /../",
      { ...add, CNI_CONTAINERID: "a/../b" },
      conf,
      4,
      /CNI_CONTAINERID "a\/\.\.\/b"/,
    ],
    ["relative netns", { ...add, CNI_NETNS: "netns/x" }, conf, 4, /CNI_NETNS "netns\/x" is not an absolute/],
    [
      "ifname of 16 bytes",
      { ...add, CNI_IFNAME: "a".repeat(16) },
      conf,
      4,
      /CNI_IFNAME "a+" is longer than 15 bytes/,
    ],
    ["ifname .", { ...add, CNI_IFNAME: "." }, conf, 4, /CNI_IFNAME "\." is not a valid interface name/],
    ["ifname ..", { ...add, CNI_IFNAME: ".." }, conf, 4, /CNI_IFNAME "\.\." is not a valid interface name/],
    ["ifname with /", { ...add, CNI_IFNAME: "eth/0" }, conf, 4, /CNI_IFNAME "eth\/0" has a character/],
    ["ifname with :", { ...add, CNI_IFNAME: "eth0:1" }, conf, 4, /CNI_IFNAME "eth0:1" has a character/],
    ["ifname with a space", { ...add, CNI_IFNAME: "eth 0" }, conf, 4, /CNI_IFNAME "eth 0"/],
    ["ifname with a tab", { ...add, CNI_IFNAME: "eth\t0" }, conf, 4, /CNI_IFNAME "eth\\t0"/],
    ["timeout not a number", { ...add, COIL_CNI_TIMEOUT_MS: "soon" }, conf, 4, /COIL_CNI_TIMEOUT_MS "soon"/],
    ["timeout 0", { ...add, COIL_CNI_TIMEOUT_MS: "0" }, conf, 4, /COIL_CNI_TIMEOUT_MS "0"/],
    // CNI_ARGS.
    [
      "CNI_ARGS pair without =",
      { ...add, CNI_ARGS: "K8S_POD_NAME" },
      conf,
      4,
      /malformed pair "K8S_POD_NAME"/,
    ],
    ["CNI_ARGS pair with two =", { ...add, CNI_ARGS: "A=b=c" }, conf, 4, /malformed pair "A=b=c"/],
    ["CNI_ARGS empty key", { ...add, CNI_ARGS: "=x" }, conf, 4, /malformed pair "=x"/],
    ["CNI_ARGS trailing ;", { ...add, CNI_ARGS: "K8S_POD_NAME=p;" }, conf, 4, /malformed pair ""/],
    ["CNI_ARGS unknown key", { ...add, CNI_ARGS: "FOO=bar" }, conf, 4, /unknown keys FOO/],
    ["CNI_ARGS IgnoreUnknown=0", { ...add, CNI_ARGS: "IgnoreUnknown=0;X=1" }, conf, 4, /unknown keys X/],
    ["CNI_ARGS bad IgnoreUnknown", { ...add, CNI_ARGS: "IgnoreUnknown=yes" }, conf, 4, /IgnoreUnknown "yes"/],
    [
      "CNI_ARGS name twice",
      { ...add, CNI_ARGS: "K8S_POD_NAME=a;K8S_POD_NAME=b" },
      conf,
      4,
      /K8S_POD_NAME twice/,
    ],
    [
      "CNI_ARGS namespace twice",
      { ...add, CNI_ARGS: "K8S_POD_NAMESPACE=a;K8S_POD_NAMESPACE=b" },
      conf,
      4,
      /K8S_POD_NAMESPACE twice/,
    ],
    // Decoding.
    ["stdin not JSON", add, "{cniVersion", 6, /Cannot decode netconf/],
    ["stdin empty", add, "", 6, /Cannot decode netconf/],
    ["stdin a JSON array", add, "[]", 6, /\[\] is not an object/],
    ["stdin a JSON string", add, '"coil"', 6, /is not an object/],
    ["stdin not UTF-8", add, new Uint8Array([0x7b, 0xc3, 0x28, 0x7d]), 6, /Cannot decode netconf/],
    // Versions.
    ["no cniVersion", add, { ...conf, cniVersion: undefined }, 1, /no cniVersion/],
    ["cniVersion 0.2.0", add, { ...conf, cniVersion: "0.2.0" }, 1, /cniVersion "0.2.0": Coil supports/],
    ["cniVersion 2.0.0", add, { ...conf, cniVersion: "2.0.0" }, 1, /cniVersion "2.0.0"/],
    ["cniVersion 9.9.9", add, { ...conf, cniVersion: "9.9.9" }, 1, /cniVersion "9.9.9"/],
    [
      "CHECK at 0.3.1",
      { ...add, CNI_COMMAND: "CHECK" },
      { ...conf, cniVersion: "0.3.1" },
      1,
      /not allow CHECK/,
    ],
    ["GC at 1.0.0", gc, { ...conf, cniVersion: "1.0.0" }, 1, /"1.0.0" does not allow GC/],
    ["STATUS at 0.4.0", { CNI_COMMAND: "STATUS" }, { ...conf, cniVersion: "0.4.0" }, 1, /not allow STATUS/],
    // The netconf.
    ["cniVersion a number", add, { ...conf, cniVersion: 1.1 }, 7, /key cniVersion 1.1: expected a string/],
    ["no name", add, { ...conf, name: undefined }, 7, /key name is missing/],
    ["name with a space", add, { ...conf, name: "my net" }, 7, /key name "my net"/],
    ["no type", add, { ...conf, type: undefined }, 7, /key type is missing/],
    [
      "another plugin's type, no ipam",
      add,
      { ...conf, type: "bridge" },
      7,
      /type is "bridge" and ipam.type is undefined/,
    ],
    ["another IPAM plugin", add, { ...ipam, ipam: { type: "host-local" } }, 7, /ipam.type is "host-local"/],
    ["ipam a string", add, { ...ipam, ipam: "coil" }, 7, /key ipam "coil": expected an object/],
    [
      "type coil with an ipam section",
      add,
      { ...conf, ipam: { type: "coil" } },
      2,
      /Unsupported netconf key ipam/,
    ],
    [
      "type coil with a host-local ipam section",
      add,
      { ...conf, ipam: { type: "host-local" } },
      2,
      /Unsupported netconf key ipam/,
    ],
    ["mtu a string", add, { ...conf, mtu: "1500" }, 7, /key mtu "1500": expected an integer from 68/],
    ["mtu below IPv4's minimum", add, { ...conf, mtu: 60 }, 7, /key mtu 60/],
    ["mtu above 65535", add, { ...conf, mtu: 70000 }, 7, /key mtu 70000/],
    ["hostRouteTable local (255)", add, { ...conf, hostRouteTable: 255 }, 7, /key hostRouteTable 255/],
    ["hostRouteTable default (253)", add, { ...conf, hostRouteTable: 253 }, 7, /key hostRouteTable 253/],
    ["hostRouteTable negative", add, { ...conf, hostRouteTable: -5 }, 7, /key hostRouteTable -5/],
    ["hostRouteTable fractional", add, { ...conf, hostRouteTable: 1.5 }, 7, /key hostRouteTable 1.5/],
    ["socket a number", add, { ...conf, socket: 1 }, 7, /key socket 1: expected a string/],
    [
      "socket relative",
      add,
      { ...conf, socket: "coild.sock" },
      7,
      /key socket "coild.sock": not an absolute/,
    ],
    [
      "socket longer than sun_path",
      add,
      { ...conf, socket: `/${"s".repeat(120)}` },
      7,
      /key socket "\/s+.*longer than 107 bytes/,
    ],
    ["ipam.socket relative", add, { ...ipam, ipam: { type: "coil", socket: "x" } }, 7, /key ipam.socket "x"/],
    ["prevResult a list", add, { ...conf, prevResult: [] }, 7, /key prevResult \[\]: expected an object/],
    ["runtimeConfig a string", add, { ...conf, runtimeConfig: "x" }, 7, /key runtimeConfig "x"/],
    ["cniVersions a string", add, { ...conf, cniVersions: "1.1.0" }, 7, /key cniVersions "1.1.0"/],
    [
      "valid-attachments a map",
      gc,
      { ...conf, "cni.dev/valid-attachments": {} },
      7,
      /valid-attachments \{\}/,
    ],
    [
      "attachment without ifname",
      gc,
      { ...conf, "cni.dev/attachments": [{ containerID: "c" }] },
      7,
      /attachments\[0\]/,
    ],
    // Verb needs.
    ["CHECK without prevResult", { ...add, CNI_COMMAND: "CHECK" }, conf, 7, /prevResult is missing/],
    [
      "CHECK with a prevResult address that is not CIDR",
      { ...add, CNI_COMMAND: "CHECK" },
      { ...conf, prevResult: { ips: [{ address: "10.0.0.1" }] } },
      7,
      /prevResult: ips\[0\].address "10.0.0.1" is not CIDR/,
    ],
    [
      "CHECK with a pool address that is not CIDR",
      { ...add, CNI_COMMAND: "CHECK" },
      { ...conf, prevResult: { ips: [{ address: "10.140.0.5" }] } },
      7,
      /prevResult: ips\[0\].address "10.140.0.5" is not CIDR/,
    ],
    ["GC without valid-attachments", gc, conf, 7, /cni.dev\/valid-attachments is missing/],
    [
      "GC valid-attachment without ifname",
      gc,
      { ...conf, "cni.dev/valid-attachments": [{ containerID: "c" }] },
      7,
      /valid-attachments\[0\]/,
    ],
  ];
  return { conf, ipam, add, gc, cases };
}

/** What a case writes on stdin: strings and bytes as they are, anything else as JSON. */
export function stdinOf(stdin: unknown): string | Uint8Array {
  return typeof stdin === "string" || stdin instanceof Uint8Array ? stdin : JSON.stringify(stdin);
}
