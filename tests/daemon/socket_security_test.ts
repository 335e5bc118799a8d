// coild's socket is the node's IPAM and pod-network API, so only root may use it: the file is mode 0600
// and owned by root, and the kernel refuses a connect() from any other user. coild also refuses, before
// it changes anything, a socket path whose directory another user could write (or swap through an
// ancestor): that user could put a socket of their own at the path and answer the runtime's ADDs.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { coildRefusing } from "../helpers/coild.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { createNetns, removeLeftoverNetns } from "../helpers/netns.ts";
import { logEntries, startNode } from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

const NOBODY = 65534;

// Connects to the socket given as argv[1], sends a STATUS request and prints the reply.
const CLIENT = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError as e:
    print("refused:", e.strerror)
    sys.exit(3)
s.sendall(b'{"verb":"status","network":"k8s-pod-network"}\\n')
print(s.recv(65536).decode())
`;

/** Runs the client as `uid` (0: root), with no supplementary groups. */
async function connectAs(uid: number, socket: string) {
  const args = [
    `--reuid=${uid}`,
    `--regid=${uid}`,
    "--clear-groups",
    "/usr/bin/python3",
    "-c",
    CLIENT,
    socket,
  ];
  const out = await new Deno.Command("setpriv", { args, stdin: "null" }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test("coild's socket accepts root only, in a directory open to everyone", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  // A directory anyone may enter (not write), so that only the socket's own mode stands between a user
  // and coild.
  const dir = await Deno.makeTempDir({ prefix: "coil-t-sock-" });
  try {
    await Deno.chmod(dir, 0o755);
    const socket = `${dir}/coild.sock`;
    await using node = await startNode({
      etcd,
      client,
      subnets: ["10.150.0.0/16"],
      args: ["--socket", socket],
    });
    assert.ok(node.coild.log().includes(socket), "coild listens where told");

    await t.step("the socket is mode 0600, owned by root", async () => {
      const info = await Deno.lstat(socket);
      assert.ok(info.isSocket);
      assert.equal(info.mode! & 0o777, 0o600);
      assert.equal(info.uid, 0);
    });

    await t.step("user nobody cannot connect", async () => {
      const out = await connectAs(NOBODY, socket);
      assert.equal(out.code, 3, `exit ${out.code}: ${out.stdout}${out.stderr}`);
      assert.match(out.stdout, /^refused: Permission denied$/m);
    });

    await t.step("root can connect and gets an answer", async () => {
      const out = await connectAs(0, socket);
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(JSON.parse(out.stdout), { ok: true });
    });
  } finally {
    client.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Every file and directory under `root` with its mode and owner, to show that nothing changed. */
async function tree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const path = `${dir}/${entry.name}`;
      const info = await Deno.lstat(path);
      out.push(`${path} ${(info.mode! & 0o7777).toString(8)} ${info.uid}`);
      if (info.isDirectory) await walk(path);
    }
  };
  await walk(root);
  return out.sort();
}

const FORWARDING = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"];

Deno.test("coild refuses a socket directory that another user could write or swap", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  // The root stands where /run would: root's, mode 0755. Each case builds its directories below it.
  const root = await Deno.makeTempDir({ prefix: "coil-t-sockdir-" });
  try {
    await Deno.chmod(root, 0o755);
    // [case, directories below root as [path, mode, owner uid], socket path below root, the one named]
    const refusals: [string, [string, number, number][], string, string, string][] = [
      ["its directory is writable by everyone", [["d", 0o777, 0]], "d/coild.sock", "d", "0777, owner uid 0"],
      ["its directory is sticky and writable by everyone", [["d", 0o1777, 0]], "d/coild.sock", "d", "1777"],
      ["its directory is writable by its group", [["d", 0o775, 0]], "d/coild.sock", "d", "0775"],
      [
        "its directory belongs to another user",
        [["d", 0o755, NOBODY]],
        "d/coild.sock",
        "d",
        "0755, owner uid 65534",
      ],
      [
        "an ancestor is writable by everyone and not sticky",
        [["a", 0o777, 0], ["a/d", 0o700, 0]],
        "a/d/coild.sock",
        "a",
        "0777",
      ],
      [
        "an ancestor is sticky and writable by everyone but not root's",
        [["a", 0o1777, NOBODY], ["a/d", 0o700, 0]],
        "a/d/coild.sock",
        "a",
        "1777, owner uid 65534",
      ],
      [
        "the directory would be created under an ancestor others can write",
        [["a", 0o777, 0]],
        "a/new/coild.sock",
        "a",
        "0777",
      ],
      [
        "a symbolic link leads into a directory others can write",
        [["target", 0o777, 0]],
        "link/coild.sock",
        "target",
        "0777",
      ],
    ];
    for (const [what, dirs, socketPath, named, modeText] of refusals) {
      await t.step(`exit 1, nothing changed: ${what}`, async () => {
        const base = await Deno.makeTempDir({ dir: root, prefix: "case-" });
        try {
          for (const [path, mode, uid] of dirs) {
            await Deno.mkdir(`${base}/${path}`);
            await Deno.chmod(`${base}/${path}`, mode);
            await Deno.chown(`${base}/${path}`, uid, uid);
          }
          if (socketPath.startsWith("link/")) await Deno.symlink(`${base}/target`, `${base}/link`);
          const before = await tree(base);
          await using ns = await createNetns();
          await ns.exec(["sysctl", "-q", "-w", ...FORWARDING.map((name) => `${name}=0`)]);
          const prefix = etcd.newPrefix();
          const socket = `${base}/${socketPath}`;
          const { status, log } = await coildRefusing({ etcd, prefix, node: ns, args: ["--socket", socket] });
          assert.equal(status.code, 1, log);
          const errors = log.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
            .filter((entry) => entry.level === "error");
          assert.equal(errors.length, 1, `one error line:\n${log}`);
          assert.equal(errors[0].msg, "refusing to start");
          const expected =
            `Cannot serve on socket "${socket}": directory "${base}/${named}" (mode ${modeText}`;
          assert.ok(errors[0].error.startsWith(expected), `${errors[0].error}\n  wanted: ${expected}`);
          assert.deepEqual(await tree(base), before, "the directories are as they were");
          assert.equal(await ns.exec(["sysctl", "-n", ...FORWARDING]), "0\n0\n", "coild changed its kernel");
          assert.deepEqual(
            Object.keys(await client.getAll().prefix(prefix).keys()),
            [],
            "coild wrote to etcd",
          );
        } finally {
          await Deno.remove(base, { recursive: true });
        }
      });
    }

    await t.step(
      "serves below a sticky root-owned ancestor, and creates a missing directory 0755",
      async () => {
        const base = await Deno.makeTempDir({ dir: root, prefix: "case-" });
        try {
          await Deno.chmod(base, 0o1777);
          const socket = `${base}/new/coild.sock`;
          await using node = await startNode({
            etcd,
            client,
            subnets: ["10.151.0.0/16"],
            args: ["--socket", socket],
          });
          assert.ok(logEntries(node.coild).some((e) => e.msg === "ready"));
          const dir = await Deno.lstat(`${base}/new`);
          assert.equal(dir.mode! & 0o7777, 0o755);
          assert.equal(dir.uid, 0);
          assert.ok((await Deno.lstat(socket)).isSocket);
        } finally {
          await Deno.remove(base, { recursive: true });
        }
      },
    );
  } finally {
    client.close();
    await Deno.remove(root, { recursive: true });
  }
});
