// readSysctl() and writeSysctl() inside a test namespace (root): libc calls, which Deno's permission
// flags do not cover, and per-namespace net.* parameters.

import assert from "node:assert/strict";
import { NetlinkError } from "../../netlink/errors.ts";
import { closeNetns, openNetns, withNetns } from "../../netlink/netns.ts";
import { readSysctl, writeSysctl } from "../../netlink/sysctl.ts";
import { createNetns, removeLeftoverNetns } from "../helpers/netns.ts";

await removeLeftoverNetns();

Deno.test("writeSysctl() sets a parameter of the namespace the thread is in", async () => {
  await using ns = await createNetns();
  await ns.exec(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"]);
  const fd = openNetns(ns.path);
  try {
    withNetns(fd, () => {
      assert.equal(readSysctl("net.ipv4.ip_forward"), "0");
      writeSysctl("net.ipv4.ip_forward", "1");
      writeSysctl("net/ipv6/conf/all/forwarding", "1");
      assert.equal(readSysctl("net.ipv4.ip_forward"), "1");
    });
  } finally {
    closeNetns(fd);
  }
  const seen = await ns.exec(["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"]);
  assert.equal(seen, "1\n1\n");
});

Deno.test("readSysctl() and writeSysctl() of a missing parameter throw ENOENT", () => {
  for (
    const call of [
      () => readSysctl("net.ipv4.coil_t_missing"),
      () => writeSysctl("net.ipv4.coil_t_missing", "1"),
    ]
  ) {
    assert.throws(call, (err) => {
      assert.ok(err instanceof NetlinkError);
      assert.equal(err.code, "ENOENT");
      assert.match(err.message, /sysctl net\.ipv4\.coil_t_missing: ENOENT/);
      return true;
    });
  }
});

Deno.test("writeSysctl() of a value the kernel rejects throws EINVAL", async () => {
  await using ns = await createNetns();
  const fd = openNetns(ns.path);
  try {
    assert.throws(
      () => withNetns(fd, () => writeSysctl("net.ipv4.ip_default_ttl", "0")),
      (err) => err instanceof NetlinkError && err.code === "EINVAL",
    );
  } finally {
    closeNetns(fd);
  }
});
