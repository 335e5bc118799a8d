// Secrets campaign: the etcd password and the TLS client keys never show in anything Coil prints. A real
// etcd requires client certificates and has auth enabled (user root, a password holding characters that
// JSON and shells escape); a real coild in a netns serves with them. Every fault the setup can drive is
// driven (wrong password, missing or empty password file, a key that is not a key, an unreadable key, a
// key and certificate swapped, a certificate from an untrusted CA, credentials in an endpoint URL, etcd
// killed mid-churn and restarted), with every output collected: coild's logs, admin CLI stdout/stderr,
// CNI answers (ADD/CHECK/DEL/GC/STATUS, success and failure), /metrics, /readyz, /healthz, --help,
// `coil install --dry-run`, and coild's command line. Then every form of every secret is searched for in
// all of them (_secrets.ts). Size: COIL_FAULTS_SECRETS_PODS pods churned across the etcd kill.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd, type EtcdOptions } from "../../ipam/etcd_client.ts";
import {
  addPod,
  cni,
  createPod,
  NETWORK,
  startNode,
  type TestNode,
  type TestPod,
  waitUntil,
} from "../daemon/_lifecycle_fixture.ts";
import { runCni } from "../helpers/cni.ts";
import { type CliRun, runCoilCli } from "../helpers/coil_cli.ts";
import { coildRefusing, spawnCoild } from "../helpers/coild.ts";
import { killEtcdForRestart } from "../helpers/etcd.ts";
import { createNetns, removeLeftoverNetns } from "../helpers/netns.ts";
import { makePki, startTlsEtcd, tlsFlags } from "../helpers/pki.ts";
import { envCount } from "./_params.ts";
import { assertNoSecrets, type Output, pemKeySecrets, type Secret } from "./_secrets.ts";

await removeLeftoverNetns();

const PODS = envCount("COIL_FAULTS_SECRETS_PODS", 6);
/** etcd is killed once this many of the churned ADDs are answered. */
const KILL_AFTER = Math.ceil(PODS / 2);
/** Quotes, a backslash, a dollar and a backquote: JSON, the environment file and shells each escape one. */
const PASSWORD = `pw"\\$\`-${crypto.randomUUID()}`;
const WRONG_PASSWORD = `wrong-${crypto.randomUUID()}`;
const NOT_KEY = /--etcd-tls-key "[^"]+" is not a PEM private key: /;
const NOT_CERT = /--etcd-tls-cert "[^"]+" is not a PEM certificate: /;
const MISMATCH = /--etcd-tls-key "[^"]+" is not the private key of --etcd-tls-cert /;
/** How a TLS etcd refuses a certificate from a CA it does not trust. */
const REJECTED = /write EPIPE|received fatal alert: (BadCertificate|CertificateRequired|UnknownCA)/;
const IN_URL = /--etcd-endpoints "https:\/\/…@[^"]*" must not hold a user or password/;

/** Everything collected, and the faults driven, for the final scan and the figures. */
class Evidence {
  readonly outputs: Output[] = [];
  faults = 0;

  add(name: string, text: string): void {
    this.outputs.push({ name, text });
  }

  cli(name: string, run: CliRun): CliRun {
    this.add(`${name}: stdout`, run.stdout);
    this.add(`${name}: stderr`, run.stderr);
    return run;
  }
}

/** Makes root (with the root role) and enables auth, as `etcdctl user add root; auth enable` would. */
async function enableAuth(options: EtcdOptions): Promise<void> {
  const admin = await connectEtcd(options);
  try {
    await admin.auth.roleAdd({ name: "root" });
    await admin.auth.userAdd({ name: "root", password: PASSWORD });
    await admin.auth.userGrantRole({ user: "root", role: "root" });
    await admin.auth.authEnable();
  } finally {
    admin.close();
  }
}

/** `curl -s` inside the node netns: the status line and the body. */
async function httpIn(node: TestNode, path: string): Promise<string> {
  const out = await new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      node.ns.name,
      "curl",
      "-s",
      "-i",
      "--max-time",
      "10",
      `http://127.0.0.1:9384${path}`,
    ],
  }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test("no secret shows in any output, under every fault the secrets can meet", async (t) => {
  const pki = await makePki();
  const evidence = new Evidence();
  try {
    await using etcd = await startTlsEtcd(pki);
    // Disposed before `etcd`, whose disposal removes the data dir a restarted etcd uses.
    await using restarts = new AsyncDisposableStack();
    const tls = tlsFlags(pki);
    const tlsOptions: EtcdOptions = {
      endpoints: [etcd.endpoint],
      prefix: "/",
      tlsCa: pki.ca,
      tlsCert: pki.clientCert,
      tlsKey: pki.clientKey,
    };
    await enableAuth(tlsOptions);
    const passwordFile = `${pki.dir}/etcd-password`;
    await Deno.writeTextFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
    const secrets: Secret[] = [
      { label: "the etcd password", value: PASSWORD },
      ...pemKeySecrets("the client key", await Deno.readTextFile(pki.clientKey)),
      ...pemKeySecrets("the rogue client key", await Deno.readTextFile(pki.rogueKey)),
    ];
    const client: Etcd3 = await connectEtcd({ ...tlsOptions, username: "root", password: PASSWORD });
    const auth = ["--etcd-username", "root"];
    const at = (
      prefix: string,
    ) => ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, ...tls, ...auth];
    try {
      const prefix = etcd.newPrefix();
      await t.step("admin commands with good credentials (flag, variable, file)", async () => {
        const created = evidence.cli(
          "pool create, password file",
          await runCoilCli([
            "pool",
            "create",
            "default",
            "10.170.0.0/16",
            ...at(prefix),
            "--etcd-password-file",
            passwordFile,
          ]),
        );
        assert.equal(created.code, 0, created.stderr);
        const status = evidence.cli(
          "status, password variable",
          await runCoilCli(["status", ...at(prefix)], { COIL_ETCD_PASSWORD: PASSWORD }),
        );
        assert.equal(status.code, 0, status.stderr);
        const json = evidence.cli(
          "status --json, password file variable",
          await runCoilCli(["status", "--json", ...at(prefix)], { COIL_ETCD_PASSWORD_FILE: passwordFile }),
        );
        assert.equal(json.code, 0, json.stderr);
        const listed = evidence.cli(
          "pool list, password flag",
          await runCoilCli(["pool", "list", ...at(prefix), "--etcd-password", PASSWORD]),
        );
        assert.equal(listed.code, 0, listed.stderr);
        assert.match(listed.stdout, /10\.170\.0\.0\/16/);
      });

      await t.step("admin commands with bad credentials fail with one line", async (t) => {
        const empty = `${pki.dir}/empty-password`;
        await Deno.writeTextFile(empty, "\n");
        const notKey = `${pki.dir}/not-a-key.key`;
        await Deno.writeTextFile(
          notKey,
          `-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n`,
        );
        const endpointPort = new URL(etcd.endpoint).port;
        const base = ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix, "--etcd-timeout", "3000"];
        const withKey = (
          cert: string,
          key: string,
        ) => ["--etcd-tls-ca", pki.ca, "--etcd-tls-cert", cert, "--etcd-tls-key", key];
        const pw = { COIL_ETCD_PASSWORD: PASSWORD };
        const good = [...base, ...tls, ...auth];
        const url = `https://root:${encodeURIComponent(PASSWORD)}@127.0.0.1:${endpointPort}`;
        // [case, flags, extra environment, exit code, what the one line on stderr says]
        const cases: [string, string[], Record<string, string>, number, RegExp][] = [
          ["wrong password", good, { COIL_ETCD_PASSWORD: WRONG_PASSWORD }, 1, /authentication failed/],
          ["no password", good, {}, 1, /authentication failed/],
          [
            "missing password file",
            [...good, "--etcd-password-file", `${pki.dir}/nope`],
            {},
            1,
            /Cannot read/,
          ],
          ["empty password file", [...good, "--etcd-password-file", empty], {}, 1, /is empty$/m],
          ["password and password file", [...good, "--etcd-password-file", passwordFile], pw, 2, /not both/],
          ["password without user", [...base, ...tls], pw, 2, /needs --etcd-username/],
          [
            "a key file that is not a key",
            [...base, ...withKey(pki.clientCert, notKey), ...auth],
            pw,
            1,
            NOT_KEY,
          ],
          [
            "the certificate as the key",
            [...base, ...withKey(pki.clientCert, pki.clientCert), ...auth],
            pw,
            1,
            NOT_KEY,
          ],
          [
            "the key as the certificate",
            [...base, ...withKey(pki.clientKey, pki.clientKey), ...auth],
            pw,
            1,
            NOT_CERT,
          ],
          [
            "an unreadable key (a directory)",
            [...base, ...withKey(pki.clientCert, pki.dir), ...auth],
            pw,
            1,
            /Cannot read/,
          ],
          [
            "a certificate from an untrusted CA",
            [...base, ...withKey(pki.rogueCert, pki.rogueKey), ...auth],
            pw,
            1,
            REJECTED,
          ],
          [
            "a key of another certificate",
            [...base, ...withKey(pki.clientCert, pki.rogueKey), ...auth],
            pw,
            1,
            MISMATCH,
          ],
          ["credentials in the endpoint URL", ["--etcd-endpoints", url, ...tls], {}, 2, IN_URL],
          [
            "a malformed endpoint holding a password",
            ["--etcd-endpoints", `https://root:${PASSWORD}@`],
            {},
            2,
            IN_URL,
          ],
          [
            "a usage error with the password set",
            [...base, "--etcd-timeout", "soon"],
            pw,
            2,
            /--etcd-timeout/,
          ],
        ];
        for (const [what, flags, env, code, says] of cases) {
          await t.step(what, async () => {
            for (const command of [["status"], ["pool", "list"]]) {
              const run = evidence.cli(
                `${command.join(" ")}, ${what}`,
                await runCoilCli([...command, ...flags], env),
              );
              evidence.faults++;
              assert.equal(run.code, code, `exit ${run.code}: ${run.stdout}${run.stderr}`);
              assert.match(run.stderr, /^coil: [^\n]+\n$/, `one line: ${JSON.stringify(run.stderr)}`);
              assert.match(run.stderr, says);
            }
          });
        }
      });

      const nodeArgs = [
        ...tls,
        ...auth,
        "--etcd-password-file",
        passwordFile,
        "--verbose",
        "--sweep-interval",
        "1",
      ];
      await using node = await startNode({ etcd, client, args: nodeArgs });
      // The pool of the first step: startNode made its own prefix, so the pool is made there too.
      const pool = evidence.cli(
        "pool create for the node",
        await runCoilCli(["pool", "create", "default", "10.171.0.0/16", ...at(node.prefix)], {
          COIL_ETCD_PASSWORD: PASSWORD,
        }),
      );
      assert.equal(pool.code, 0, pool.stderr);
      const pods: TestPod[] = [];
      await using _pods = new AsyncDisposableStack();
      const newPod = async () => {
        const pod = _pods.use(await createPod());
        pods.push(pod);
        return pod;
      };
      const call = async (
        name: string,
        command: "ADD" | "DEL" | "CHECK" | "STATUS",
        pod?: TestPod,
        extra = {},
      ) => {
        const out = await cni(node, command, pod, extra);
        evidence.add(`CNI ${command} ${name}: stdout`, out.stdout);
        evidence.add(`CNI ${command} ${name}: stderr`, out.stderr);
        return out;
      };
      /** CNI GC keeping the attachments of `keep`. */
      const gc = async (name: string, keep: TestPod[]) => {
        const out = await runCni({
          command: "GC",
          netconf: {
            cniVersion: "1.1.0",
            name: NETWORK,
            type: "coil",
            socket: node.coild.socket,
            "cni.dev/valid-attachments": keep.map((pod) => ({
              containerID: pod.containerId,
              ifname: "eth0",
            })),
          },
          inNetns: node.ns.name,
        });
        evidence.add(`CNI GC ${name}: stdout`, out.stdout);
        evidence.add(`CNI GC ${name}: stderr`, out.stderr);
        return out;
      };
      let first: TestPod;

      await t.step("coild serves every CNI verb, and answers the failing ones", async () => {
        const cmdline = await Deno.readTextFile(`/proc/${node.coild.process.pid}/cmdline`);
        evidence.add("coild's command line (/proc/PID/cmdline)", cmdline.replaceAll("\0", " "));
        first = await newPod();
        await addPod(node, first);
        assert.equal((await call("after ADD", "CHECK", first)).code, 0);
        assert.equal((await call("ready", "STATUS")).code, 0);
        const stranger = await newPod();
        const unknown = await call("of a pod never added", "CHECK", stranger, {
          prevResult: first.result,
        });
        assert.notEqual(unknown.code, 0);
        const gone = await newPod();
        await gone.remove();
        const noNetns = await call("into a netns that is gone", "ADD", gone);
        assert.notEqual(noNetns.code, 0, noNetns.stdout);
        const collected = await gc("keeping the one pod", [first]);
        assert.equal(collected.code, 0, collected.stdout);
        for (const path of ["/metrics", "/readyz", "/healthz"]) {
          evidence.add(`GET ${path}`, await httpIn(node, path));
        }
        assert.match(evidence.outputs.at(-2)!.text, /^HTTP\/1\.1 200/);
      });

      await t.step("etcd killed mid-churn: ADDs answer 11, /readyz and coil status say why", async () => {
        const churn = await Promise.all(Array.from({ length: PODS }, () => newPod()));
        // Two runtime workers ADD the pods one after another; etcd dies once half are answered, with
        // calls in flight: each answer is a success or 11.
        const queue = [...churn];
        const answers: Awaited<ReturnType<typeof call>>[] = [];
        const killed = Promise.withResolvers<void>();
        const worker = async () => {
          for (let pod = queue.shift(); pod; pod = queue.shift()) {
            const out = await call(`${pod.name} while etcd goes down`, "ADD", pod);
            if (out.code === 0) pod.result = out.json;
            answers.push(out);
            if (answers.length === KILL_AFTER) killed.resolve();
          }
        };
        const workers = Promise.all([worker(), worker()]);
        await killed.promise;
        const restart = await killEtcdForRestart(etcd);
        evidence.faults++;
        await workers;
        // The CNI code is in the answer (the exit code of a failure is 1).
        const code = (out: { json?: Record<string, unknown> }) => out.json?.code ?? 0;
        for (const out of answers) assert.ok([0, 11].includes(code(out) as number), out.stdout);
        const late = await newPod();
        const eleven = await call("with etcd down", "ADD", late);
        assert.equal(code(eleven), 11, eleven.stdout);
        const del = await call("with etcd down", "DEL", first);
        assert.ok([0, 11].includes(code(del) as number), del.stdout);
        const collected = await gc("with etcd down", [...churn, late]);
        assert.ok([0, 11].includes(code(collected) as number), collected.stdout);
        evidence.add("GET /readyz with etcd down", await httpIn(node, "/readyz"));
        evidence.add("GET /metrics with etcd down", await httpIn(node, "/metrics"));
        const status = evidence.cli(
          "status with etcd down",
          await runCoilCli(["status", ...at(node.prefix), "--etcd-timeout", "2000"], {
            COIL_ETCD_PASSWORD: PASSWORD,
          }),
        );
        assert.equal(status.code, 1, status.stdout);

        restarts.use(await restart());
        evidence.faults++;
        const restarted = performance.now();
        let servedAfterMs: number | undefined;
        // A restarted etcd forgot its auth tokens: coild must log in again, and say nothing of how.
        for (const pod of [...churn, late]) {
          if (pod.result) continue;
          await waitUntil(`${pod.name} gets an address after the restart`, async () => {
            const out = await call(`${pod.name} after the restart`, "ADD", pod);
            if (out.code === 0) pod.result = out.json;
            if (out.code === 0) servedAfterMs ??= performance.now() - restarted;
            return out.code === 0;
          }, () => node.coild.log());
        }
        const elevens = answers.filter((o) => code(o) === 11).length;
        const servedMs = Math.round(servedAfterMs ?? 0);
        console.log(
          `secrets: etcd killed after ${KILL_AFTER} of ${PODS} churned ADDs, ${elevens} answered 11; ` +
            `coild with auth served an ADD ${servedMs} ms after etcd restarted`,
        );
        for (const pod of [...churn, late]) {
          assert.equal((await call("after the restart", "CHECK", pod)).code, 0);
        }
        for (const pod of [...churn, late, first]) {
          assert.equal((await call("after the restart", "DEL", pod)).code, 0);
        }
        evidence.add("GET /readyz after the restart", await httpIn(node, "/readyz"));
        evidence.add("GET /metrics after the restart", await httpIn(node, "/metrics"));
        await node.stop();
        evidence.add("coild log: the node's whole run", node.coild.log());
      });

      await t.step("coild started with bad credentials says why, and nothing more", async (t) => {
        const notKey = `${pki.dir}/garbage.key`;
        await Deno.writeTextFile(notKey, "this is not a PEM key\n");
        const withKey = (
          key: string,
        ) => ["--etcd-tls-ca", pki.ca, "--etcd-tls-cert", pki.clientCert, "--etcd-tls-key", key];
        // [case, flags, environment, what the log must say]
        const refusals: [string, string[], Record<string, string>, RegExp][] = [
          [
            "a key file that is not a key",
            [...withKey(notKey), ...auth],
            { COIL_ETCD_PASSWORD: PASSWORD },
            /key/i,
          ],
          ["a key that cannot be read (a directory)", [...withKey(pki.dir), ...auth], {
            COIL_ETCD_PASSWORD: PASSWORD,
          }, /--etcd-tls-key/],
          [
            "a missing password file",
            [...tls, ...auth, "--etcd-password-file", `${pki.dir}/nope`],
            {},
            /--etcd-password-file/,
          ],
          [
            "credentials in the endpoint URL",
            [...tls, "--etcd-endpoints", `https://root:${encodeURIComponent(PASSWORD)}@localhost:1`],
            {},
            /must not hold a user or password/,
          ],
        ];
        for (const [what, args, env, says] of refusals) {
          await t.step(`refuses: ${what}`, async () => {
            await using ns = await createNetns();
            const { status, log } = await coildRefusing({
              etcd,
              prefix: etcd.newPrefix(),
              node: ns,
              args,
              env,
            });
            evidence.add(`coild log, ${what}`, log);
            evidence.faults++;
            assert.match(log, says);
            if (what.startsWith("credentials")) {
              assert.equal(status.code, 2, `a usage error: ${log}`);
            } else {
              // Nothing started yet: the operator's file to fix, not a crash.
              assert.equal(status.code, 1, log);
              assert.match(log, /"msg":"refusing to start"/);
            }
          });
        }
        for (
          const [what, env] of [["a wrong password", { COIL_ETCD_PASSWORD: WRONG_PASSWORD }], [
            "no password",
            {},
          ]] as const
        ) {
          await t.step(`waits for etcd, saying why: ${what}`, async () => {
            await using ns = await createNetns();
            const coild = await spawnCoild({
              etcd,
              prefix: etcd.newPrefix(),
              node: ns,
              args: [...tls, ...auth],
              env,
            });
            try {
              await waitUntil(
                "coild says why etcd refuses it",
                () => coild.log().includes('"waiting for etcd"'),
                () => coild.log(),
              );
            } finally {
              await coild.stop();
            }
            evidence.add(`coild log, ${what}`, coild.log());
            evidence.faults++;
            assert.match(coild.log(), /authentication failed|user name is empty|permission denied/i);
          });
        }
      });

      await t.step("help, usage errors and coil install --dry-run", async () => {
        const env = {
          COIL_ETCD_PASSWORD: PASSWORD,
          COIL_ETCD_USERNAME: "root",
          COIL_ETCD_PASSWORD_FILE: passwordFile,
        };
        for (
          const args of [["daemon", "--help"], ["status", "--help"], ["install", "--help"], ["--help"], [
            "daemon",
            "--bogus",
          ]]
        ) {
          evidence.cli(`coil ${args.join(" ")} with the password variables set`, await runCoilCli(args, env));
        }
        const root = await Deno.makeTempDir({ prefix: "coil-t-secrets-install-" });
        try {
          const dry = evidence.cli(
            "coil install --dry-run --etcd-password",
            await runCoilCli([
              "install",
              "--dry-run",
              "--root",
              root,
              "--no-chain-portmap",
              ...auth,
              "--etcd-password",
              PASSWORD,
            ]),
          );
          assert.equal(dry.code, 0, dry.stderr);
          const file = evidence.cli(
            "coil install --etcd-password-file",
            await runCoilCli([
              "install",
              "--root",
              root,
              "--no-chain-portmap",
              ...auth,
              "--etcd-password-file",
              passwordFile,
            ]),
          );
          assert.equal(file.code, 0, file.stderr);
          const written = await Deno.readTextFile(`${root}/etc/default/coild`);
          assert.match(written, /^COIL_ETCD_PASSWORD_FILE=/m);
          evidence.add("the environment file written with --etcd-password-file", written);
          const bad = evidence.cli(
            "coil install with a bad flag and the password",
            await runCoilCli([
              "install",
              "--dry-run",
              "--root",
              root,
              "--mtu",
              "1",
              ...auth,
              "--etcd-password",
              PASSWORD,
            ]),
          );
          assert.equal(bad.code, 2);
        } finally {
          await Deno.remove(root, { recursive: true });
        }
      });

      await t.step("no form of any secret in any output", () => {
        const figures = assertNoSecrets(evidence.outputs, secrets);
        console.log(
          `secrets: ${figures.outputs} outputs checked, ${figures.bytes} bytes scanned, ${figures.needles} ` +
            `secret forms searched, ${evidence.faults} faults driven, ${PODS} pods churned across the etcd kill`,
        );
      });
    } finally {
      client.close();
    }
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
