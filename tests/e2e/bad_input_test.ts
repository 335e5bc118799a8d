// Malformed calls against a real coild on a real etcd: each netconf names a live socket, so a call that
// got past validation would reach coild and succeed; instead each must fail with the right CNI code and
// a message naming the problem, and leave every key under the prefix as it was (same mod revisions).

import assert from "node:assert/strict";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { COIL, startCoild } from "../helpers/coild.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { createNetns } from "../helpers/netns.ts";

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs coil in CNI mode with exactly `env` (plus PATH) and raw `stdin`, as a runtime does. */
async function runCoil(env: Record<string, string>, stdin: string | Uint8Array): Promise<Outcome> {
  const child = new Deno.Command(COIL, {
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", ...env },
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  try {
    await writer.write(typeof stdin === "string" ? new TextEncoder().encode(stdin) : stdin);
    await writer.close();
  } catch (err) {
    // coil may exit before reading stdin (an environment error); runtimes ignore EPIPE too.
    if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

type Case = [title: string, env: Record<string, string>, stdin: unknown, code: number, message: RegExp];

Deno.test("coil rejects malformed calls against a live coild and changes nothing in etcd", async (t) => {
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  try {
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.140.0.0/16", "fd00:140::/48"] }),
    );
    await using node = await createNetns();
    await node.exec(["ip", "link", "set", "lo", "up"]);
    await using pod = await createNetns();
    await using coild = await startCoild({ etcd, prefix, node });
    const socket = coild.socket;
    const conf = { cniVersion: "1.1.0", name: "net", type: "coil", socket };
    const ipam = { cniVersion: "1.0.0", name: "net", type: "ptp", ipam: { type: "coil", socket } };
    const add = {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "c1",
      CNI_NETNS: pod.path,
      CNI_IFNAME: "eth0",
      CNI_ARGS: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1",
    };
    const gc = { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" };
    const goodResult = {
      cniVersion: "1.1.0",
      ips: [{ address: "10.140.0.5/32", gateway: "169.254.1.1" }],
    };
    const snapshot = async () => {
      const res = await client.getAll().prefix(prefix).exec();
      return Object.fromEntries(res.kvs.map((kv) => [kv.key.toString(), String(kv.mod_revision)]));
    };

    await t.step("ADD into a missing netns on a node without blocks leaves etcd as it was", async () => {
      const before = await snapshot();
      const out = await runCoil({ ...add, CNI_NETNS: "/var/run/netns/coil-t-gone" }, JSON.stringify(conf));
      assert.equal(JSON.parse(out.stdout).code, 5, out.stdout);
      assert.deepEqual(await snapshot(), before, "etcd changed");
    });

    await t.step("a valid ADD and DEL with the same socket succeed (the baseline)", async () => {
      const added = await runCoil(add, JSON.stringify(conf));
      assert.equal(added.code, 0, added.stdout + added.stderr);
      const deleted = await runCoil({ ...add, CNI_COMMAND: "DEL" }, JSON.stringify(conf));
      assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    });

    const cases: Case[] = [
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
      ["container ID starting with -", { ...add, CNI_CONTAINERID: "-c1" }, conf, 4, /CNI_CONTAINERID "-c1"/],
      ["container ID with /", { ...add, CNI_CONTAINERID: "a/../b" }, conf, 4, /CNI_CONTAINERID "a\/\.\.\/b"/],
      [
        "relative netns",
        { ...add, CNI_NETNS: "netns/x" },
        conf,
        4,
        /CNI_NETNS "netns\/x" is not an absolute/,
      ],
      ["ifname of 16 bytes", { ...add, CNI_IFNAME: "a".repeat(16) }, conf, 4, /longer than 15 bytes/],
      ["ifname ..", { ...add, CNI_IFNAME: ".." }, conf, 4, /CNI_IFNAME "\.\." is not a valid interface name/],
      ["ifname with /", { ...add, CNI_IFNAME: "eth/0" }, conf, 4, /CNI_IFNAME "eth\/0" has a character/],
      ["ifname with :", { ...add, CNI_IFNAME: "eth0:1" }, conf, 4, /CNI_IFNAME "eth0:1" has a character/],
      ["ifname with a tab", { ...add, CNI_IFNAME: "eth\t0" }, conf, 4, /CNI_IFNAME "eth\\t0"/],
      [
        "timeout not a number",
        { ...add, COIL_CNI_TIMEOUT_MS: "soon" },
        conf,
        4,
        /COIL_CNI_TIMEOUT_MS "soon"/,
      ],
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
      [
        "CNI_ARGS bad IgnoreUnknown",
        { ...add, CNI_ARGS: "IgnoreUnknown=yes" },
        conf,
        4,
        /IgnoreUnknown "yes"/,
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
      ["another plugin's type, no ipam", add, { ...conf, type: "bridge" }, 7, /type is "bridge"/],
      ["another IPAM plugin", add, { ...ipam, ipam: { type: "host-local" } }, 7, /ipam.type is "host-local"/],
      ["ipam a string", add, { ...ipam, ipam: "coil" }, 7, /key ipam "coil": expected an object/],
      [
        "type coil with an ipam section",
        add,
        { ...conf, ipam: { type: "coil" } },
        2,
        /Unsupported netconf key ipam/,
      ],
      ["mtu a string", add, { ...conf, mtu: "1500" }, 7, /key mtu "1500": expected an integer from 68/],
      ["mtu below IPv4's minimum", add, { ...conf, mtu: 60 }, 7, /key mtu 60/],
      ["mtu above 65535", add, { ...conf, mtu: 70000 }, 7, /key mtu 70000/],
      ["hostRouteTable local (255)", add, { ...conf, hostRouteTable: 255 }, 7, /key hostRouteTable 255/],
      ["hostRouteTable default (253)", add, { ...conf, hostRouteTable: 253 }, 7, /key hostRouteTable 253/],
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
      [
        "ipam.socket relative",
        add,
        { ...ipam, ipam: { type: "coil", socket: "x" } },
        7,
        /key ipam.socket "x"/,
      ],
      ["prevResult a list", add, { ...conf, prevResult: [] }, 7, /key prevResult \[\]: expected an object/],
      ["runtimeConfig a string", add, { ...conf, runtimeConfig: "x" }, 7, /key runtimeConfig "x"/],
      // Verb needs.
      ["CHECK without prevResult", { ...add, CNI_COMMAND: "CHECK" }, conf, 7, /prevResult is missing/],
      [
        "CHECK with an address that is not CIDR",
        { ...add, CNI_COMMAND: "CHECK" },
        { ...conf, prevResult: { ips: [{ address: "10.140.0.5" }] } },
        7,
        /prevResult: ips\[0\].address "10.140.0.5" is not CIDR/,
      ],
      ["GC without valid-attachments", gc, conf, 7, /cni.dev\/valid-attachments is missing/],
      [
        "GC attachment without ifname",
        gc,
        { ...conf, "cni.dev/valid-attachments": [{ containerID: "c" }] },
        7,
        /valid-attachments\[0\]/,
      ],
      // Valid for the client, refused by coild: the request reaches the daemon.
      [
        "ADD into a netns path that does not exist",
        { ...add, CNI_NETNS: "/var/run/netns/coil-t-none" },
        conf,
        5,
        /Pod network namespace "\/var\/run\/netns\/coil-t-none" does not exist/,
      ],
      [
        "ADD into a file that is no netns",
        { ...add, CNI_NETNS: "/etc/hostname" },
        conf,
        5,
        /Pod network namespace "\/etc\/hostname" is not a network namespace/,
      ],
      [
        "CHECK of a container never added",
        { ...add, CNI_COMMAND: "CHECK", CNI_CONTAINERID: "never-added" },
        { ...conf, prevResult: goodResult },
        3,
        /"never-added"/,
      ],
      [
        "IPAM-mode CHECK of a container never added",
        { ...add, CNI_COMMAND: "CHECK", CNI_CONTAINERID: "never-added" },
        { ...ipam, prevResult: goodResult },
        3,
        /"never-added"/,
      ],
    ];
    assert.ok(cases.length >= 40, `${cases.length} cases`);

    for (const [title, env, stdin, code, message] of cases) {
      await t.step(title, async () => {
        const before = await snapshot();
        const text = typeof stdin === "string" || stdin instanceof Uint8Array ? stdin : JSON.stringify(stdin);
        const out = await runCoil(env, text);
        assert.equal(out.code, 1, `exit ${out.code}: ${out.stdout} ${out.stderr}`);
        assert.ok(out.stdout.endsWith("\n"), `stdout ${JSON.stringify(out.stdout)}`);
        const error = JSON.parse(out.stdout);
        assert.equal(error.code, code, error.msg);
        assert.match(error.msg, message);
        assert.doesNotMatch(error.msg, /\.$/, "no trailing period");
        assert.match(error.msg, /^[A-Z]/, "capital first letter");
        assert.deepEqual(await snapshot(), before, "etcd changed");
      });
    }

    await t.step("coild still serves a valid ADD and DEL after all that", async () => {
      const added = await runCoil({ ...add, CNI_CONTAINERID: "c2" }, JSON.stringify(conf));
      assert.equal(added.code, 0, added.stdout + added.stderr);
      const deleted = await runCoil(
        { ...add, CNI_COMMAND: "DEL", CNI_CONTAINERID: "c2" },
        JSON.stringify(conf),
      );
      assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
      assert.deepEqual(await client.getAll().prefix(`${prefix}addresses/`).keys(), []);
    });
  } finally {
    client.close();
  }
});
