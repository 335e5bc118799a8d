import assert from "node:assert/strict";
import { CniError } from "../../cni/errors.ts";
import {
  checkVerbAllowed,
  compareVersions,
  CURRENT_VERSION,
  isSupportedVersion,
  parseVersion,
  SUPPORTED_VERSIONS,
  type Verb,
} from "../../cni/version.ts";

Deno.test("SUPPORTED_VERSIONS lists 0.3.0 to 1.1.0, oldest first, ending at CURRENT_VERSION", () => {
  assert.deepEqual(SUPPORTED_VERSIONS, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
  assert.equal(CURRENT_VERSION, SUPPORTED_VERSIONS.at(-1));
  const sorted = [...SUPPORTED_VERSIONS].sort(compareVersions);
  assert.deepEqual(sorted, SUPPORTED_VERSIONS);
});

Deno.test("parseVersion() reads major.minor.patch and rejects anything else", async (t) => {
  assert.deepEqual(parseVersion("1.10.0"), [1, 10, 0]);
  for (const bad of ["1.0", "1", "01.0.0", "1.0.0-rc1", " 1.0.0", "v1.0.0", "1.0.0.0", "", "1.x.0"]) {
    await t.step(`rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(
        () => parseVersion(bad),
        (err: unknown) => err instanceof TypeError && err.message.includes(bad),
      );
    });
  }
});

Deno.test("compareVersions() orders numerically, not as text", () => {
  assert.equal(compareVersions("0.4.0", "0.10.0"), -1);
  assert.equal(compareVersions("1.0.0", "0.4.0"), 1);
  assert.equal(compareVersions("1.1.0", "1.1.0"), 0);
  assert.equal(compareVersions("0.3.1", "0.3.0"), 1);
});

Deno.test("isSupportedVersion() accepts exactly the supported list", () => {
  for (const v of SUPPORTED_VERSIONS) assert.ok(isSupportedVersion(v));
  for (const v of ["0.1.0", "0.2.0", "1.2.0", "1.0", "", "1.0.0 "]) {
    assert.equal(isSupportedVersion(v), false);
  }
});

Deno.test("checkVerbAllowed() gates CHECK below 0.4.0 and GC and STATUS below 1.1.0 with code 1", async (t) => {
  const allowed: Record<Verb, string[]> = {
    add: SUPPORTED_VERSIONS as string[],
    del: SUPPORTED_VERSIONS as string[],
    version: SUPPORTED_VERSIONS as string[],
    check: ["0.4.0", "1.0.0", "1.1.0"],
    gc: ["1.1.0"],
    status: ["1.1.0"],
  };
  for (const [verb, versions] of Object.entries(allowed) as [Verb, string[]][]) {
    for (const version of SUPPORTED_VERSIONS) {
      await t.step(`${verb} at ${version}`, () => {
        if (versions.includes(version)) {
          checkVerbAllowed(verb, version);
        } else {
          assert.throws(
            () => checkVerbAllowed(verb, version),
            (err: unknown) =>
              err instanceof CniError && err.code === 1 && err.msg.includes(verb.toUpperCase()) &&
              err.msg.includes(version),
          );
        }
      });
    }
  }
});
