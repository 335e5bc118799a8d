// coild and its socket path at start: a path another coild serves, or one taken by something that is
// no socket, makes coild exit 1 with a message before it changes the kernel or etcd, and leaves the path
// as it was; a coild that stops removes only its own socket, never one a later coild put there.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { runCni } from "../helpers/cni.ts";
import { COIL, startCoild } from "../helpers/coild.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { createNetns, removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";
import { NETWORK, startNode } from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

const FORWARDING = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"];

/** A node netns with forwarding off, so that a coild that changed its kernel gives itself away. */
async function bareNode(): Promise<TestNetns> {
  const ns = await createNetns();
  await ns.exec(["sysctl", "-q", "-w", ...FORWARDING.map((name) => `${name}=0`)]);
  return ns;
}

/**
 * Runs a coild that must refuse to start and asserts how it ends: exit 1 (not a hang, not a crash's
 * stack trace), an error log line with `message`, no sysctl changed, and nothing of its node in etcd.
 */
async function assertRefusesToStart(
  options: { etcd: TestEtcd; client: Etcd3; prefix: string; ns: TestNetns; socket: string; message: string },
): Promise<void> {
  const { ns, prefix } = options;
  const args = [
    "netns",
    "exec",
    ns.name,
    COIL,
    "daemon",
    "--node-name",
    ns.name,
    "--etcd-endpoints",
    options.etcd.unixEndpoint,
    "--etcd-prefix",
    prefix,
    "--socket",
    options.socket,
  ];
  const out = await new Deno.Command("ip", {
    args,
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const log = new TextDecoder().decode(out.stderr);
  assert.equal(out.signal, null, `coild did not exit within 60 s:\n${log}`);
  assert.equal(out.code, 1, log);
  assert.doesNotMatch(log, /Uncaught/, "coild reports the problem instead of crashing");
  const errors = log.split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line))
    .filter((entry) => entry.level === "error");
  const says = (entry: Record<string, unknown>) =>
    Object.values(entry).some((value) => typeof value === "string" && value.includes(options.message));
  assert.ok(errors.some(says), `no error line says: ${options.message}\n${log}`);
  assert.equal(await ns.exec(["sysctl", "-n", ...FORWARDING]), "0\n0\n", "coild changed its kernel");
  const keys = Object.keys(await options.client.getAll().prefix(prefix).keys());
  assert.deepEqual(keys.filter((key) => key.includes(ns.name)), [], "coild left its node in etcd");
}

function status(node: TestNetns, socket: string) {
  return runCni({
    command: "STATUS",
    netconf: { cniVersion: "1.1.0", name: NETWORK, type: "coil", socket },
    inNetns: node.name,
  });
}

/** A directory for a socket that is no coild's own (the test helper removes a coild's when it stops). */
async function socketDir(): Promise<AsyncDisposable & { socket: string }> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-sockpath-" });
  return { socket: `${dir}/coild.sock`, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

Deno.test("coild's socket path", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  const subnets = ["10.152.0.0/16"];
  try {
    await t.step("a second coild on a live socket exits 1 and the first keeps serving", async () => {
      await using first = await startNode({ etcd, client, subnets });
      const socket = first.coild.socket;
      const before = await Deno.lstat(socket);
      await using second = await bareNode();
      await assertRefusesToStart({
        etcd,
        client,
        prefix: first.prefix,
        ns: second,
        socket,
        message: `Cannot serve on socket "${socket}": another coild serves it`,
      });
      const after = await Deno.lstat(socket);
      assert.deepEqual([after.dev, after.ino], [before.dev, before.ino], "the live socket was replaced");
      const out = await status(first.ns, socket);
      assert.equal(out.code, 0, `${out.stdout}${out.stderr}`);
    });

    await t.step("a regular file at the socket path makes coild exit 1 and stays unchanged", async () => {
      await using dir = await socketDir();
      await Deno.writeTextFile(dir.socket, "not coild's\n");
      await Deno.chown(dir.socket, 65534, 65534);
      await using ns = await bareNode();
      await assertRefusesToStart({
        etcd,
        client,
        prefix: etcd.newPrefix(),
        ns,
        socket: dir.socket,
        message: `Cannot serve on socket "${dir.socket}": it exists and is a regular file, not a socket`,
      });
      assert.equal(await Deno.readTextFile(dir.socket), "not coild's\n");
      assert.equal((await Deno.lstat(dir.socket)).uid, 65534);
    });

    await t.step("the first coild's stop leaves the socket a second coild put in its place", async () => {
      await using dir = await socketDir();
      const { socket } = dir;
      await using first = await startNode({ etcd, client, subnets, args: ["--socket", socket] });
      // The operator removes the live socket by hand, then starts another coild on the free path.
      await Deno.remove(socket);
      await using secondNs = await createNetns();
      await using second = await startCoild({
        etcd,
        prefix: first.prefix,
        node: secondNs,
        args: ["--socket", socket],
      });
      await first.stop();
      assert.ok((await Deno.lstat(socket)).isSocket, "the first coild removed the second's socket");
      const out = await status(secondNs, socket);
      assert.equal(out.code, 0, `${out.stdout}${out.stderr}\n${second.log()}`);
      await second.stop();
      await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound, "a coild removes its own socket");
    });
  } finally {
    client.close();
  }
});
