// NetlinkError wording and the errno predicates callers branch on (pure, no root).

import assert from "node:assert/strict";
import { errnoName, isDumpInterrupted, isExists, isNotFound, NetlinkError } from "../../netlink/errors.ts";

Deno.test("NetlinkError names the operation, the object and the errno", () => {
  const err = new NetlinkError({ op: "add route", object: "10.0.0.0/27 table 119" }, 17);
  assert.equal(err.message, "netlink: failed to add route 10.0.0.0/27 table 119: EEXIST (File exists)");
  assert.deepEqual([err.name, err.op, err.object, err.errno, err.code, err.extack], [
    "NetlinkError",
    "add route",
    "10.0.0.0/27 table 119",
    17,
    "EEXIST",
    undefined,
  ]);
});

Deno.test("NetlinkError appends the kernel's extack message", () => {
  const err = new NetlinkError(
    { op: "add route", object: "10.0.0.0/27 table 119" },
    100,
    "Nexthop device is not up",
  );
  assert.equal(
    err.message,
    "netlink: failed to add route 10.0.0.0/27 table 119: ENETDOWN (Network is down): Nexthop device is not up",
  );
  assert.equal(err.extack, "Nexthop device is not up");
});

Deno.test("errnoName() names known errnos and numbers unknown ones", () => {
  assert.deepEqual([errnoName(3), errnoName(19), errnoName(16), errnoName(250)], [
    "ESRCH",
    "ENODEV",
    "EBUSY",
    "errno 250",
  ]);
});

Deno.test("isExists(), isNotFound() and isDumpInterrupted() classify by errno", async (t) => {
  const context = { op: "x", object: "y" };
  const cases: [string, unknown, boolean, boolean, boolean][] = [
    ["EEXIST", new NetlinkError(context, 17), true, false, false],
    ["ENOENT", new NetlinkError(context, 2), false, true, false],
    ["ESRCH", new NetlinkError(context, 3), false, true, false],
    ["ENODEV", new NetlinkError(context, 19), false, true, false],
    ["EINTR", new NetlinkError(context, 4), false, false, true],
    ["EBUSY", new NetlinkError(context, 16), false, false, false],
    ["a plain Error", new Error("File exists"), false, false, false],
    ["an errno-like object", { errno: 17 }, false, false, false],
  ];
  for (const [name, err, exists, notFound, interrupted] of cases) {
    await t.step(name, () => {
      assert.deepEqual([isExists(err), isNotFound(err), isDumpInterrupted(err)], [
        exists,
        notFound,
        interrupted,
      ]);
    });
  }
});
