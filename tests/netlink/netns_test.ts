// openNetns(), closeNetns(), withNetns() and isOwnNetns() against real namespaces and files (root).

import assert from "node:assert/strict";
import { isNotFound, NetlinkError } from "../../netlink/errors.ts";
import { cString, libc, O_CLOEXEC, O_RDONLY } from "../../netlink/ffi.ts";
import {
  closeNetns,
  isOwnNetns,
  netnsId as fdNetnsId,
  NotNetnsError,
  openNetns,
  withNetns,
} from "../../netlink/netns.ts";
import { createNetns, removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";

await removeLeftoverNetns();

// The namespace the JS thread is in, as `net:[inode]`.
function threadNetns(): string {
  return Deno.readLinkSync("/proc/thread-self/ns/net");
}

function netnsId(ns: TestNetns): string {
  return `net:[${Deno.statSync(ns.path).ino}]`;
}

Deno.test("openNetns() of a missing path throws a NetlinkError coded ENOENT", () => {
  assert.throws(() => openNetns("/var/run/netns/coil-t-does-not-exist"), (err) => {
    assert.ok(err instanceof NetlinkError);
    assert.equal(err.code, "ENOENT");
    assert.ok(isNotFound(err));
    assert.match(
      err.message,
      /^netlink: failed to open netns \/var\/run\/netns\/coil-t-does-not-exist: ENOENT/,
    );
    return true;
  });
});

Deno.test("withNetns() runs fn inside the namespace and switches back", async () => {
  await using ns = await createNetns();
  const home = threadNetns();
  const fd = openNetns(ns.path);
  try {
    assert.equal(withNetns(fd, threadNetns), netnsId(ns));
    assert.equal(threadNetns(), home);
  } finally {
    closeNetns(fd);
  }
});

Deno.test("withNetns() switches back when fn throws", async () => {
  await using ns = await createNetns();
  const home = threadNetns();
  const fd = openNetns(ns.path);
  try {
    let inside = "";
    assert.throws(() =>
      withNetns(fd, () => {
        inside = threadNetns();
        throw new Error("boom");
      }), /boom/);
    assert.equal(inside, netnsId(ns));
    assert.equal(threadNetns(), home);
  } finally {
    closeNetns(fd);
  }
});

Deno.test("withNetns() rejects an async fn after switching back", async () => {
  await using ns = await createNetns();
  const home = threadNetns();
  const fd = openNetns(ns.path);
  try {
    assert.throws(() => withNetns(fd, async () => {}), TypeError);
    assert.equal(threadNetns(), home);
  } finally {
    closeNetns(fd);
  }
});

Deno.test("withNetns() nests and returns to the outer namespace", async () => {
  await using a = await createNetns();
  await using b = await createNetns();
  const home = threadNetns();
  const fdA = openNetns(a.path);
  const fdB = openNetns(b.path);
  try {
    const seen = withNetns(fdA, () => [threadNetns(), withNetns(fdB, threadNetns), threadNetns()]);
    assert.deepEqual(seen, [netnsId(a), netnsId(b), netnsId(a)]);
    assert.equal(threadNetns(), home);
  } finally {
    closeNetns(fdA);
    closeNetns(fdB);
  }
});

Deno.test("withNetns() of a non-namespace fd throws and stays home", () => {
  const home = threadNetns();
  // openNetns() refuses this file; open it directly to hand withNetns() an fd of the wrong kind.
  const fd = libc().open(cString("/proc/self/status"), O_RDONLY | O_CLOEXEC);
  assert.ok(fd >= 0);
  try {
    assert.throws(
      () => withNetns(fd, () => "never"),
      (err) => err instanceof NetlinkError && err.code === "EINVAL",
    );
    assert.equal(threadNetns(), home);
  } finally {
    closeNetns(fd);
  }
});

Deno.test("closeNetns() of a closed fd throws EBADF", async () => {
  await using ns = await createNetns();
  const fd = openNetns(ns.path);
  closeNetns(fd);
  assert.throws(() => closeNetns(fd), (err) => err instanceof NetlinkError && err.code === "EBADF");
});

/** Asserts that openNetns(path) throws a NotNetnsError saying what `path` is instead. */
function assertNotNetns(path: string, found: string): void {
  assert.throws(() => openNetns(path), (err) => {
    assert.ok(err instanceof NotNetnsError, String(err));
    assert.equal(err.code, "EINVAL");
    assert.equal(err.found, found);
    assert.equal(err.message, `netlink: netns ${path} is not a network namespace: it is ${found}`);
    return true;
  });
}

// A regression blocks the JS thread in open(), where no timer can fire: the call runs in a child
// process that is killed after a timeout, so the test fails instead of hanging.
Deno.test("openNetns() of a FIFO returns NotNetnsError at once instead of waiting for a writer", async () => {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-fifo-" });
  try {
    const fifo = `${dir}/netns`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(made.success);
    const netnsModule = new URL("../../netlink/netns.ts", import.meta.url).href;
    const script = `
      const { openNetns } = await import(${JSON.stringify(netnsModule)});
      try { openNetns(${JSON.stringify(fifo)}); console.log("opened"); }
      catch (err) { console.log(err.name + ": " + err.message); }`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-check", script],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(15_000),
    }).output();
    const stdout = new TextDecoder().decode(out.stdout).trim();
    assert.equal(out.signal, null, `openNetns() of a FIFO blocked (killed after 15 s)`);
    assert.equal(
      stdout,
      `NotNetnsError: netlink: netns ${fifo} is not a network namespace: it is a FIFO`,
      new TextDecoder().decode(out.stderr),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openNetns() refuses what is no network namespace", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-notns-" });
  try {
    await t.step("a regular file (a netns file whose bind mount is gone)", async () => {
      await Deno.writeTextFile(`${dir}/file`, "");
      assertNotNetns(`${dir}/file`, "a regular file");
    });
    await t.step("a directory", () => assertNotNetns(dir, "a directory"));
    await t.step("a character device", () => assertNotNetns("/dev/null", "a character device"));
    await t.step("a socket", () => {
      using _listener = Deno.listen({ transport: "unix", path: `${dir}/sock` });
      assertNotNetns(`${dir}/sock`, "a socket");
    });
    await t.step(
      "another kind of namespace",
      () => assertNotNetns("/proc/self/ns/mnt", "another kind of namespace"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("isOwnNetns() recognises the process's own namespace under any path", async (t) => {
  await using ns = await createNetns();
  for (const path of ["/proc/self/ns/net", "/proc/thread-self/ns/net", `/proc/${Deno.pid}/ns/net`]) {
    await t.step(path, () => {
      const fd = openNetns(path);
      try {
        assert.equal(isOwnNetns(fd), true);
      } finally {
        closeNetns(fd);
      }
    });
  }
  await t.step("also while the thread is inside another namespace", () => {
    const own = openNetns("/proc/self/ns/net");
    const other = openNetns(ns.path);
    try {
      assert.deepEqual(withNetns(other, () => [isOwnNetns(own), isOwnNetns(other)]), [true, false]);
    } finally {
      closeNetns(own);
      closeNetns(other);
    }
  });
});

Deno.test("openNetns() accepts a test namespace, which isOwnNetns() does not call own", async () => {
  await using ns = await createNetns();
  const fd = openNetns(ns.path);
  try {
    assert.equal(isOwnNetns(fd), false);
    assert.equal(fdNetnsId(fd).split(":")[2], String(Deno.statSync(ns.path).ino));
    assert.equal(withNetns(fd, threadNetns), netnsId(ns));
  } finally {
    closeNetns(fd);
  }
});
