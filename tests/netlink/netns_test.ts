// openNetns(), closeNetns() and withNetns() against real namespaces (root).

import assert from "node:assert/strict";
import { isNotFound, NetlinkError } from "../../netlink/errors.ts";
import { closeNetns, openNetns, withNetns } from "../../netlink/netns.ts";
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
  const fd = openNetns("/proc/self/status");
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
