// serveSocket() and checkSocketPath(): coild's socket path is its own only while nothing else holds
// it. A live socket is never replaced, a stale one is, anything that is no socket is refused unchanged,
// and close() removes only the socket file it created.

import assert from "node:assert/strict";
import {
  checkSocketPath,
  serveSocket,
  SocketPathError,
  type SocketServer,
} from "../../daemon/socket_server.ts";

/** A temporary directory; `await using` removes it. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "coil-t-sockpath-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** A server whose reply names it, so a client can tell which one answered. */
async function serve(path: string, name: string): Promise<SocketServer & AsyncDisposable> {
  const server = await serveSocket(path, () => Promise.resolve({ ok: true, msg: name }));
  let closed = false;
  return {
    ...server,
    close: async () => {
      closed = true;
      await server.close();
    },
    [Symbol.asyncDispose]: async () => {
      if (!closed) await server.close();
    },
  };
}

/** Sends one request line and returns the reply's `msg`. */
async function whoAnswers(path: string): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await conn.write(new TextEncoder().encode('{"verb":"status"}\n'));
    const reply = await new Response(conn.readable).text();
    return JSON.parse(reply).msg;
  } catch (err) {
    conn.close();
    throw err;
  }
}

async function assertRefused(call: Promise<unknown>, path: string, reason: RegExp): Promise<void> {
  await assert.rejects(call, (err) => {
    assert.ok(err instanceof SocketPathError, String(err));
    assert.equal(err.path, path);
    assert.ok(err.message.startsWith(`Cannot serve on socket "${path}": `), err.message);
    assert.match(err.message, reason);
    return true;
  });
}

Deno.test("serveSocket() refuses a socket another server listens on and leaves it working", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/coild.sock`;
  await using _first = await serve(path, "first");
  await assertRefused(checkSocketPath(path), path, /another coild serves it/);
  await assertRefused(serve(path, "second"), path, /another coild serves it/);
  assert.equal(await whoAnswers(path), "first");
  assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name), ["coild.sock"]);
});

Deno.test("serveSocket() replaces a stale socket nobody listens on", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/coild.sock`;
  // A process that listened and died without removing its socket file, as a crashed coild does.
  const script = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()";
  const bound = await new Deno.Command("python3", { args: ["-c", script, path] }).output();
  assert.ok(bound.success && Deno.lstatSync(path).isSocket);
  await checkSocketPath(path);
  await using _server = await serve(path, "new");
  assert.equal(await whoAnswers(path), "new");
});

Deno.test("serveSocket() refuses what is no socket and leaves it unchanged", async (t) => {
  await using dir = await tempDir();
  await t.step("a regular file", async () => {
    const path = `${dir.path}/file.sock`;
    await Deno.writeTextFile(path, "someone's data\n");
    await Deno.chown(path, 65534, 65534);
    await assertRefused(checkSocketPath(path), path, /it exists and is a regular file, not a socket$/);
    await assertRefused(serve(path, "x"), path, /it exists and is a regular file, not a socket$/);
    assert.equal(await Deno.readTextFile(path), "someone's data\n");
    assert.equal((await Deno.lstat(path)).uid, 65534);
  });
  await t.step("a directory", async () => {
    const path = `${dir.path}/dir.sock`;
    await Deno.mkdir(path);
    await assertRefused(serve(path, "x"), path, /it exists and is a directory, not a socket$/);
    assert.ok((await Deno.lstat(path)).isDirectory);
  });
  await t.step("a symbolic link to a live socket", async () => {
    const target = `${dir.path}/target.sock`;
    await using _target = await serve(target, "target");
    const path = `${dir.path}/link.sock`;
    await Deno.symlink(target, path);
    await assertRefused(serve(path, "x"), path, /it exists and is a symbolic link, not a socket$/);
    assert.equal(await whoAnswers(path), "target");
  });
  await t.step("a directory that cannot be created", async () => {
    const path = `${dir.path}/file.sock/coild.sock`;
    await assertRefused(checkSocketPath(path), path, /cannot create its directory ".*\/file\.sock"/);
  });
  const left = [...Deno.readDirSync(dir.path)].map((e) => e.name).sort();
  assert.deepEqual(left, ["dir.sock", "file.sock", "link.sock"], "no private directory left behind");
});

Deno.test("close() leaves alone a socket that another server put in its place", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/coild.sock`;
  const first = await serve(path, "first");
  // The operator removes the first socket by hand and starts a second server on the free path.
  await Deno.remove(path);
  await using second = await serve(path, "second");
  await first.close();
  assert.ok((await Deno.lstat(path)).isSocket, "the first server's close() removed the second's socket");
  assert.equal(await whoAnswers(path), "second");
  await second.close();
  await assert.rejects(Deno.lstat(path), Deno.errors.NotFound, "close() removes its own socket");
});

Deno.test("two servers starting at once on one stale socket: one serves it, the other refuses", async () => {
  // Both find the socket stale; the one that replaces it second must not remove the first one's fresh
  // socket (which would leave the first listening on a file nobody can reach).
  const script = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()";
  for (let round = 0; round < 20; round++) {
    await using dir = await tempDir();
    const path = `${dir.path}/coild.sock`;
    assert.ok((await new Deno.Command("python3", { args: ["-c", script, path] }).output()).success);
    const started = await Promise.allSettled([serve(path, "a"), serve(path, "b")]);
    const serving = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    try {
      assert.equal(serving.length, 1, `round ${round}: ${serving.length} servers think they serve ${path}`);
      for (const s of started) {
        if (s.status === "rejected") {
          assert.match(String(s.reason), /created it while coild was starting|another coild serves it/);
        }
      }
      assert.ok(["a", "b"].includes(await whoAnswers(path)));
    } finally {
      for (const s of serving) await s.close();
    }
  }
});
