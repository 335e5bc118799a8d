// The secrets campaign's detector (_secrets.ts) on its own: each form a leak takes is caught, wherever it
// sits in a longer text, and text without the secret passes. A detector that missed them would make the
// campaign's "no leak" worthless.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { assertNoSecrets, pemKeySecrets, secretForms } from "./_secrets.ts";

const PASSWORD = 'pw"\\$`-0b6f3c1e-52a4-4d7e-9a55-2f1d3c4b5a69';
const KEY = [
  "-----BEGIN PRIVATE KEY-----",
  "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgk1u9bO3mJ0yq7dQx",
  "Zl2cN8Wm4bY5pT6sVfR0aE1hKjihRANCAAQ3t9v2Xo7n8c4m6q1P0rS5u7w9y2A4",
  "-----END PRIVATE KEY-----",
].join("\n");

Deno.test("assertNoSecrets() catches every form of a secret inside a longer text", async (t) => {
  const secrets = [{ label: "the password", value: PASSWORD }, ...pemKeySecrets("the key", KEY)];
  const base64At = (prefix: string) => Buffer.from(`${prefix}${PASSWORD} and more`).toString("base64");
  const leaks: [string, string][] = [
    ["as written", `error: cannot log in as root with ${PASSWORD}.`],
    ["in a JSON log line", JSON.stringify({ msg: "auth", options: { password: PASSWORD } })],
    ["URL-encoded", `https://root:${encodeURIComponent(PASSWORD)}@10.0.0.1:2379`],
    ["in base64 at offset 0", `token ${base64At("")}`],
    ["in base64 at offset 1", `token ${base64At("x")}`],
    ["in base64 at offset 2", `token ${base64At("xy")}`],
    ["in URL-safe base64", base64At("xy").replaceAll("+", "-").replaceAll("/", "_")],
    ["one line of the key", `bad key: ${KEY.split("\n")[2]}`],
    ["the key without line breaks", JSON.stringify({ key: KEY.split("\n").slice(1, 3).join("") })],
    ["the key in a JSON string", JSON.stringify({ key: KEY })],
  ];
  for (const [what, text] of leaks) {
    await t.step(what, () => {
      assert.throws(() => assertNoSecrets([{ name: what, text }], secrets), /secrets leaked:\n/);
    });
  }
  await t.step("the failure names the output and the secret, never the secret's value", () => {
    let message = "";
    try {
      assertNoSecrets([{ name: "coild log", text: PASSWORD }], secrets);
    } catch (err) {
      message = (err as Error).message;
    }
    assert.match(message, /coild log: the password \(form 0\) at offset 0/);
    for (const form of secretForms(PASSWORD)) {
      assert.ok(!message.includes(form), "the message shows the secret");
    }
  });
  await t.step("text without them passes, and is counted", () => {
    const outputs = [{ name: "a", text: "coil: Cannot reach etcd: authentication failed" }, {
      name: "b",
      text: "",
    }];
    assert.deepEqual(assertNoSecrets(outputs, secrets), {
      outputs: 2,
      bytes: outputs[0].text.length,
      needles: new Set(secrets.flatMap((s) => secretForms(s.value))).size,
    });
  });
});
