import assert from "node:assert/strict";
import {
  CniError,
  ERR_CHECK_FAILED,
  ERR_INTERNAL,
  ERR_INVALID_CONFIG,
  ERR_NO_POOL,
  ERR_POOL_EXHAUSTED,
} from "../../cni/errors.ts";

Deno.test("CniError() keeps code, msg and details for the error JSON", () => {
  const err = new CniError(ERR_INVALID_CONFIG, "Invalid netconf key mtu 1", "more");
  assert.equal(err.code, 7);
  assert.equal(err.msg, "Invalid netconf key mtu 1");
  assert.equal(err.details, "more");
  assert.equal(err.message, "Invalid netconf key mtu 1 (more)");
  assert.equal(err.name, "CniError");
  assert.ok(err instanceof Error);
});

Deno.test("CniError() has no details and a plain message when none are given", () => {
  const err = new CniError(ERR_INTERNAL, "Internal error: boom");
  assert.equal(err.message, "Internal error: boom");
  assert.equal(err.details, undefined);
});

Deno.test("ERR_NO_POOL, ERR_POOL_EXHAUSTED and ERR_CHECK_FAILED are plugin codes of 100 and up", () => {
  assert.deepEqual([ERR_NO_POOL, ERR_POOL_EXHAUSTED, ERR_CHECK_FAILED], [100, 101, 102]);
});
