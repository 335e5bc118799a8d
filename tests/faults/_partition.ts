// A node that etcd reaches over TCP, so that it can be cut off: a veth pair between the machine's netns
// and the node netns on a /30 of 10.255.240.0/20, and iptables rules inside the node netns that drop
// the traffic to and from etcd's address (both ways, or only etcd's replies).

import { createNetns, run, type TestNetns } from "../helpers/netns.ts";

/** The link and the cut; dispose removes the rules, the link and the netns (if still there). */
export interface EtcdLink extends AsyncDisposable {
  /** The node netns, for CoildNode (NodeOptions.netns). */
  netns: TestNetns;
  /** The host side's address: etcd serves clients there (EtcdStartOptions.extraClientHosts). */
  hostAddress: string;
  /** Drops everything between the node and etcd (`both`), or only what etcd sends (`replies`). */
  cutOff(mode: "both" | "replies"): Promise<void>;
  /** Removes the rules. Idempotent. */
  heal(): Promise<void>;
}

/** The chain that holds the rules, in the filter table of the node netns only. */
const CHAIN = "COIL-T-CUT";
/** The /30s the link may use: 10.255.240.0 to 10.255.255.252. */
const SUBNET_BASE = (10 << 24 | 255 << 16 | 240 << 8) >>> 0;
const SUBNET_COUNT = 1 << 10;

/**
 * Creates a node netns with a veth to the machine's netns on a /30 that no address or route of the
 * machine touches. @throws {Error} when no free /30 is found, or a command fails (after cleaning up).
 */
export async function createEtcdLink(): Promise<EtcdLink> {
  const netns = await createNetns();
  const tag = crypto.randomUUID().slice(0, 6);
  const hostLink = `coilt-${tag}`;
  const removeLink = () => run(["ip", "link", "del", hostLink]).catch(() => {});
  try {
    const base = await freeSlash30();
    const hostAddress = ipv4(base + 1);
    const nodeAddress = ipv4(base + 2);
    await run(["ip", "link", "add", hostLink, "type", "veth", "peer", "name", "etcd0", "netns", netns.name]);
    await run(["ip", "addr", "add", `${hostAddress}/30`, "dev", hostLink]);
    await run(["ip", "link", "set", hostLink, "up"]);
    await netns.exec(["ip", "addr", "add", `${nodeAddress}/30`, "dev", "etcd0"]);
    await netns.exec(["ip", "link", "set", "etcd0", "up"]);
    await netns.exec(["iptables", "-N", CHAIN]);
    await netns.exec(["iptables", "-I", "INPUT", "-j", CHAIN]);
    await netns.exec(["iptables", "-I", "OUTPUT", "-j", CHAIN]);
    let cut = false;
    const heal = async () => {
      if (!cut) return;
      await netns.exec(["iptables", "-F", CHAIN]);
      cut = false;
    };
    return {
      netns,
      hostAddress,
      async cutOff(mode) {
        await heal();
        cut = true;
        await netns.exec(["iptables", "-A", CHAIN, "-s", hostAddress, "-j", "DROP"]);
        if (mode === "both") await netns.exec(["iptables", "-A", CHAIN, "-d", hostAddress, "-j", "DROP"]);
      },
      heal,
      async [Symbol.asyncDispose]() {
        try {
          await heal().catch(() => {});
        } finally {
          await removeLink();
          // Gone already when a CoildNode took it over and was disposed first.
          await Promise.resolve(netns[Symbol.asyncDispose]()).catch(() => {});
        }
      },
    };
  } catch (err) {
    await removeLink();
    await netns[Symbol.asyncDispose]();
    throw err;
  }
}

/** A random /30 in 10.255.240.0/20 that no IPv4 address or route of the machine overlaps. */
async function freeSlash30(): Promise<number> {
  const addrs = JSON.parse(await run(["ip", "-j", "-4", "addr", "show"])) as {
    addr_info: { local: string; prefixlen: number }[];
  }[];
  const routes = JSON.parse(await run(["ip", "-j", "-4", "route", "show", "table", "all"])) as {
    dst: string;
  }[];
  const taken: [number, number][] = [
    ...addrs.flatMap((l) => l.addr_info.map((a) => range(a.local, a.prefixlen))),
    ...routes.filter((r) => r.dst !== "default").map((r) => {
      const [ip, len] = r.dst.split("/");
      return range(ip, len === undefined ? 32 : Number(len));
    }),
  ];
  for (let attempt = 0; attempt < 64; attempt++) {
    const base = SUBNET_BASE + 4 * Math.floor(Math.random() * SUBNET_COUNT);
    if (!taken.some(([lo, hi]) => lo <= base + 3 && base <= hi)) return base;
  }
  throw new Error("No free /30 in 10.255.240.0/20 for a test link: the machine uses that range");
}

/** The first and last address of `ip/len`, as numbers. */
function range(ip: string, len: number): [number, number] {
  const value = ip.split(".").reduce((n, o) => (n * 256 + Number(o)), 0);
  const size = 2 ** (32 - len);
  const lo = value - (value % size);
  return [lo, lo + size - 1];
}

function ipv4(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}
