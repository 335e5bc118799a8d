// coild's socket is the node's IPAM and pod-network API, so only root may use it: the file is mode 0600
// and owned by root, and the kernel refuses a connect() from any other user, even when the directory
// holding the socket is open to everyone.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns } from "../helpers/netns.ts";
import { startNode } from "./_lifecycle_fixture.ts";

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

Deno.test("coild's socket accepts root only", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  // A directory anyone may enter, so that only the socket's own mode stands between a user and coild.
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
