// etcd over TLS with client certificates, as production clusters run it: a CA, server and client
// certificates made with openssl for each run; the admin CLI and coild connect with --etcd-tls-*, and
// a client without an acceptable certificate fails with one clear line.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd, type EtcdOptions } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import { addPod, createPod, startNode } from "../daemon/_lifecycle_fixture.ts";
import { type CliRun, runCoilCli } from "../helpers/coil_cli.ts";
import { makePki, startTlsEtcd, tlsFlags } from "../helpers/pki.ts";
import { removeLeftoverNetns } from "../helpers/netns.ts";

await removeLeftoverNetns();

/** One `coil: …` line on stderr naming the endpoint, exit 1, no stack trace. */
function assertCannotReach(run: CliRun, endpoint: string, cause: RegExp): void {
  assert.equal(run.code, 1, `exit ${run.code}: ${run.stdout}${run.stderr}`);
  assert.match(run.stderr, /^coil: [^\n]+\n$/, `one line: ${JSON.stringify(run.stderr)}`);
  assert.ok(run.stderr.startsWith(`coil: Cannot reach etcd at ${endpoint}: `), run.stderr);
  assert.match(run.stderr, cause);
  assert.doesNotMatch(run.stderr, /\bat .*\.(ts|js):\d+/, "no stack trace");
}

/** How the client learns that etcd refused its certificate: the alert, or the closed connection. */
const REJECTED = /write EPIPE|received fatal alert: (BadCertificate|CertificateRequired|UnknownCA)/;

Deno.test("etcd over TLS with client certificates", async (t) => {
  const pki = await makePki();
  try {
    await using etcd = await startTlsEtcd(pki);
    const tls = tlsFlags(pki);
    const tlsOptions: EtcdOptions = {
      endpoints: [etcd.endpoint],
      prefix: "/",
      tlsCa: pki.ca,
      tlsCert: pki.clientCert,
      tlsKey: pki.clientKey,
    };
    const client: Etcd3 = await connectEtcd(tlsOptions);
    try {
      await t.step("coil pool create and list work with the client certificate", async () => {
        const prefix = etcd.newPrefix();
        const at = ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, ...tls];
        const created = await runCoilCli(["pool", "create", "default", "10.160.0.0/16", ...at]);
        assert.equal(created.code, 0, created.stderr);
        const listed = await runCoilCli(["pool", "list", "--json", ...at]);
        assert.equal(listed.code, 0, listed.stderr);
        assert.deepEqual(JSON.parse(listed.stdout).map((p: { name: string }) => p.name), ["default"]);
        assert.ok(await client.get(keysFor(prefix).pool("default")).exists(), "the pool is in etcd");
      });

      await t.step("without an acceptable client certificate the CLI fails clearly", async (t) => {
        const prefix = etcd.newPrefix();
        const at = ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix];
        const cases: [string, string[], RegExp][] = [
          ["CA only, no client certificate", ["--etcd-tls-ca", pki.ca], REJECTED],
          [
            "a client certificate from an untrusted CA",
            ["--etcd-tls-ca", pki.ca, "--etcd-tls-cert", pki.rogueCert, "--etcd-tls-key", pki.rogueKey],
            REJECTED,
          ],
          ["the system CAs, which do not know the server", [], /unable to verify the first certificate/],
        ];
        for (const [what, flags, cause] of cases) {
          await t.step(what, async () => {
            assertCannotReach(
              await runCoilCli(["pool", "create", "default", "10.161.0.0/16", ...at, ...flags]),
              etcd.endpoint,
              cause,
            );
          });
        }
        await t.step("plain HTTP to the TLS port", async () => {
          const plain = etcd.endpoint.replace("https:", "http:");
          const run = await runCoilCli(["pool", "list", "--etcd-endpoints", plain, "--etcd-timeout", "3000"]);
          assert.equal(run.code, 1);
          assert.match(
            run.stderr,
            new RegExp(`^coil: Cannot reach etcd at ${plain.replaceAll(".", "\\.")}: `),
          );
        });
        assert.equal(
          await client.get(keysFor(prefix).pool("default")).exists(),
          false,
          "nothing was written",
        );
      });

      await t.step("coild connects over TLS and serves ADD", async () => {
        await using node = await startNode({ etcd, client, subnets: ["10.162.0.0/16"], args: tls });
        await using pod = await createPod();
        const [ip] = await addPod(node, pod);
        assert.match(ip, /^10\.162\./);
        const nodeKey = node.keys.node(node.coild.nodeName);
        assert.ok(await client.get(nodeKey).exists(), "its liveness key is there");
      });
    } finally {
      client.close();
    }
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
