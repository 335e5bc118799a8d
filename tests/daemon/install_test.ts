// `coil install` / `coil uninstall` / `coil version` run as an admin runs them (scripts/coil, its own
// process), into throw-away staging roots: what lands where, idempotence, --dry-run, what uninstall
// leaves; the unit checked by systemd-analyze; and the installed launcher, conflist and environment
// file driving a real ADD and DEL against a real coild held to the unit's capabilities.

import assert from "node:assert/strict";
import { COILD_UNIT } from "../../daemon/install/unit.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { runCni } from "../helpers/cni.ts";
import { assertCliOk, runCoilCli } from "../helpers/coil_cli.ts";
import { COIL } from "../helpers/coild.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { createNetns, removeLeftoverNetns } from "../helpers/netns.ts";
import { createPod, waitUntil } from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

const SAMPLE_UNIT = new URL("../../scripts/systemd/coild.service", import.meta.url).pathname;
const SECRET = `p"a$s\`w\\d 'x'`;
const FOREIGN_CONFLIST = '{"cniVersion":"0.4.0","name":"other","plugins":[{"type":"bridge"}]}\n';

/** A staging root holding another network's conflist and another plugin, as a real node would. */
async function stagingRoot(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "coil-t-install-" });
  await Deno.mkdir(`${root}/etc/cni/net.d`, { recursive: true });
  await Deno.mkdir(`${root}/opt/cni/bin`, { recursive: true });
  await Deno.writeTextFile(`${root}/etc/cni/net.d/05-other.conflist`, FOREIGN_CONFLIST);
  await Deno.writeTextFile(`${root}/etc/cni/net.d/99-loopback.conf`, '{"type":"loopback"}\n');
  await Deno.writeTextFile(`${root}/opt/cni/bin/portmap`, "#!/bin/sh\n", { mode: 0o755 });
  // An old mtime: a rewrite with the same bytes would still show.
  const past = new Date("2020-01-01T00:00:00Z");
  for (
    const path of ["etc/cni/net.d/05-other.conflist", "etc/cni/net.d/99-loopback.conf", "opt/cni/bin/portmap"]
  ) {
    await Deno.utime(`${root}/${path}`, past, past);
  }
  return root;
}

/** Every path under `root` with its type, mode, mtime and content (or symlink target). */
async function snapshot(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const path = `${dir}/${entry.name}`;
      const info = await Deno.lstat(path);
      const mode = (info.mode! & 0o7777).toString(8);
      if (info.isSymlink) out.set(path, `symlink -> ${await Deno.readLink(path)}`);
      else if (info.isDirectory) {
        out.set(path, `dir ${mode}`);
        await walk(path);
      } else out.set(path, `file ${mode} ${info.mtime?.getTime()} ${await Deno.readTextFile(path)}`);
    }
  };
  await walk(root);
  return out;
}

function install(root: string, args: string[] = []) {
  return runCoilCli(["install", "--root", root, ...args]);
}

const SETTINGS = ["--node-name", "n1", "--etcd-username", "coil", "--etcd-password", SECRET];

Deno.test("coil install writes Coil's files and leaves the other conflists byte-identical", async () => {
  const root = await stagingRoot();
  try {
    const before = await snapshot(root);
    const stdout = assertCliOk(
      await install(root, [...SETTINGS, "--mtu", "1400", "--network-name", "testnet"]),
    );
    const after = await snapshot(root);
    for (const [path, state] of before) {
      if (!(await Deno.lstat(path)).isDirectory) assert.equal(after.get(path), state, `${path} changed`);
    }
    assert.deepEqual(
      [...after.keys()].filter((p) => p.startsWith(`${root}/etc/cni/net.d/`)).sort(),
      [
        `${root}/etc/cni/net.d/05-other.conflist`,
        `${root}/etc/cni/net.d/10-coil.conflist`,
        `${root}/etc/cni/net.d/99-loopback.conf`,
      ],
    );

    const mode = async (path: string) => (await Deno.lstat(`${root}${path}`)).mode! & 0o7777;
    assert.equal(await mode("/opt/cni/bin/coil"), 0o755);
    assert.equal(await Deno.readLink(`${root}/usr/local/sbin/coild`), "/opt/cni/bin/coil");
    assert.equal(await mode("/etc/cni/net.d/10-coil.conflist"), 0o644);
    assert.equal(await mode("/etc/systemd/system/coild.service"), 0o644);
    assert.equal(await mode("/etc/default/coild"), 0o600);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${root}/etc/cni/net.d/10-coil.conflist`)), {
      cniVersion: "1.0.0",
      cniVersions: ["1.0.0", "1.1.0"],
      name: "testnet",
      plugins: [
        { type: "coil", socket: "/run/coild.sock", mtu: 1400 },
        { type: "portmap", capabilities: { portMappings: true } },
      ],
    });
    assert.equal(await Deno.readTextFile(`${root}/etc/systemd/system/coild.service`), COILD_UNIT);

    // The launcher runs this checkout: the installed file answers as coil does.
    assert.match(
      await Deno.readTextFile(`${root}/opt/cni/bin/coil`),
      new RegExp(`^exec '${COIL}' "\\$@"$`, "m"),
    );
    const launched = await new Deno.Command(`${root}/opt/cni/bin/coil`, { args: ["version", "--json"] })
      .output();
    assert.equal(launched.code, 0, new TextDecoder().decode(launched.stderr));
    assert.equal(JSON.parse(new TextDecoder().decode(launched.stdout)).compiled, false);

    // The settings read back by a shell as coild's unit gets them; the secret nowhere else.
    const env = `${root}/etc/default/coild`;
    const sourced = await new Deno.Command("sh", {
      args: [
        "-c",
        `. "$1"; printf '%s|%s|%s' "$COIL_NODE_NAME" "$COIL_ETCD_USERNAME" "$COIL_ETCD_PASSWORD"`,
        "sh",
        env,
      ],
    }).output();
    assert.equal(new TextDecoder().decode(sourced.stdout), `n1|coil|${SECRET}`);
    assert.ok(!stdout.includes(SECRET));
    for (const [path, state] of after) {
      if (path !== env) assert.ok(!state.includes(SECRET), `the etcd password leaked into ${path}`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("coil install run again with the same flags changes nothing", async () => {
  const root = await stagingRoot();
  try {
    assertCliOk(await install(root, SETTINGS));
    const before = await snapshot(root);
    const stdout = assertCliOk(await install(root, SETTINGS));
    assert.deepEqual(await snapshot(root), before);
    const lines = stdout.split("\n").filter((l) => /^\w+ +\//.test(l));
    assert.ok(lines.length >= 6, stdout);
    assert.ok(lines.every((l) => l.startsWith("unchanged ")), stdout);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("coil install --dry-run changes nothing, on a fresh node and over an install", async () => {
  const root = await stagingRoot();
  try {
    const fresh = await snapshot(root);
    const stdout = assertCliOk(await install(root, [...SETTINGS, "--dry-run"]));
    assert.deepEqual(await snapshot(root), fresh);
    assert.match(stdout, new RegExp(`^would create +${root}/etc/cni/net.d/10-coil.conflist$`, "m"));

    assertCliOk(await install(root, SETTINGS));
    const installed = await snapshot(root);
    const changed = assertCliOk(await install(root, ["--mtu", "9000", "--force", "--dry-run"]));
    assert.deepEqual(await snapshot(root), installed);
    assert.match(changed, new RegExp(`^would replace +${root}/etc/cni/net.d/10-coil.conflist$`, "m"));
    assert.match(changed, new RegExp(`^would replace +${root}/etc/default/coild$`, "m"));

    const uninstallRun = assertCliOk(await runCoilCli(["uninstall", "--root", root, "--dry-run"]));
    assert.deepEqual(await snapshot(root), installed);
    assert.match(uninstallRun, new RegExp(`^would remove +${root}/opt/cni/bin/coil$`, "m"));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("coil install keeps an existing /etc/default/coild unless --force, and uninstall leaves it", async () => {
  const root = await stagingRoot();
  try {
    await Deno.mkdir(`${root}/etc/default`);
    await Deno.writeTextFile(`${root}/etc/default/coild`, "COIL_NODE_NAME=mine\n", { mode: 0o640 });
    const stdout = assertCliOk(await install(root, SETTINGS));
    assert.match(stdout, /^keep +.*\/etc\/default\/coild \(exists; --force replaces it\)$/m);
    assert.equal(await Deno.readTextFile(`${root}/etc/default/coild`), "COIL_NODE_NAME=mine\n");
    assertCliOk(await runCoilCli(["uninstall", "--root", root]));
    assert.equal(await Deno.readTextFile(`${root}/etc/default/coild`), "COIL_NODE_NAME=mine\n");

    assertCliOk(await install(root, SETTINGS));
    assertCliOk(await install(root, [...SETTINGS, "--force"]));
    assert.match(await Deno.readTextFile(`${root}/etc/default/coild`), /^COIL_NODE_NAME="n1"$/m);
    assert.equal((await Deno.lstat(`${root}/etc/default/coild`)).mode! & 0o7777, 0o600);
    // Written by install now: uninstall takes it.
    assertCliOk(await runCoilCli(["uninstall", "--root", root]));
    await assert.rejects(Deno.lstat(`${root}/etc/default/coild`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("coil uninstall removes exactly what install wrote", async () => {
  const root = await stagingRoot();
  try {
    const before = await snapshot(root);
    assertCliOk(await install(root, SETTINGS));
    // A renamed conflist: the re-install removes Coil's old one, not the others.
    assertCliOk(await install(root, [...SETTINGS, "--conflist-name", "20-coil.conflist"]));
    await assert.rejects(Deno.lstat(`${root}/etc/cni/net.d/10-coil.conflist`), Deno.errors.NotFound);
    // The admin's file in a directory install created: it and its directory stay.
    await Deno.writeTextFile(`${root}/usr/local/sbin/other-tool`, "#!/bin/sh\n");
    const stdout = assertCliOk(await runCoilCli(["uninstall", "--root", root]));
    assert.match(stdout, new RegExp(`^remove +${root}/etc/cni/net.d/20-coil.conflist$`, "m"));
    const after = await snapshot(root);
    const expected = new Map(before);
    for (const dir of ["/usr", "/usr/local", "/usr/local/sbin"]) expected.set(`${root}${dir}`, "dir 755");
    expected.set(`${root}/usr/local/sbin/other-tool`, after.get(`${root}/usr/local/sbin/other-tool`)!);
    assert.deepEqual(new Map([...after].sort()), new Map([...expected].sort()));
    assert.match(assertCliOk(await runCoilCli(["uninstall", "--root", root])), /^nothing to uninstall/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("coild.service passes systemd-analyze verify and equals the checked-in sample", async () => {
  assert.equal(await Deno.readTextFile(SAMPLE_UNIT), COILD_UNIT);
  const root = await stagingRoot();
  try {
    assertCliOk(await install(root, SETTINGS));
    const verify = async (text: string) => {
      // verify checks that ExecStart= exists: point it at the staged launcher.
      const unit = `${root}/coild.service`;
      await Deno.writeTextFile(unit, text.replace(/^ExecStart=.*$/m, `ExecStart=${root}/opt/cni/bin/coil`));
      const out = await new Deno.Command("systemd-analyze", { args: ["verify", unit] }).output();
      return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
    };
    assert.deepEqual(await verify(await Deno.readTextFile(`${root}/etc/systemd/system/coild.service`)), {
      code: 0,
      stderr: "",
    });
    // The check can fail: verify reports a bad value on stderr (with exit 0).
    const bad = await verify(COILD_UNIT.replace("KillMode=mixed", "KillMode=processes"));
    assert.match(bad.stderr, /kill mode/i);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("coil version and --version print the version, Deno and V8, compiled or not", async () => {
  const pkg = JSON.parse(await Deno.readTextFile(new URL("../../package.json", import.meta.url)));
  const text = assertCliOk(await runCoilCli(["version"]));
  assert.equal(
    text,
    `coil ${pkg.version} (deno run, ${Deno.build.target}; deno ${Deno.version.deno}, ` +
      `v8 ${Deno.version.v8}, typescript ${Deno.version.typescript})\n`,
  );
  const json = JSON.parse(assertCliOk(await runCoilCli(["--version", "--json"])));
  assert.deepEqual(json, {
    version: pkg.version,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    compiled: false,
    target: Deno.build.target,
  });
  assert.equal((await runCoilCli(["version", "--yaml"])).code, 2);
});

/** Capability numbers (linux/capability.h) of those the unit may grant. */
const CAPABILITY_BITS: Record<string, number> = {
  CAP_NET_RAW: 13,
  CAP_NET_ADMIN: 12,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_PTRACE: 19,
};

/**
 * Starts coild as the unit does, as far as this machine allows: through the installed link name, with
 * the installed environment file, the unit's capability bounding set and no_new_privs, in `netns`.
 */
async function startInstalledCoild(root: string, link: string, netns: string) {
  const caps = /^CapabilityBoundingSet=(.+)$/m.exec(COILD_UNIT)![1].split(" ");
  const bounding = ["-all", ...caps.map((c) => `+${c.replace(/^CAP_/, "").toLowerCase()}`)].join(",");
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      netns,
      "setpriv",
      "--no-new-privs",
      "--inh-caps=-all",
      `--bounding-set=${bounding}`,
      "--",
      "sh",
      "-c",
      'set -a; . "$1"; exec "$2"',
      "sh",
      `${root}/etc/default/coild`,
      link,
    ],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    clearEnv: true,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const decoder = new TextDecoder();
  const logDone = child.stderr.pipeTo(new WritableStream({ write: (c) => void (log += decoder.decode(c)) }));
  let exited = false;
  child.status.then(() => exited = true);
  const stop = async () => {
    if (!exited) child.kill("SIGTERM");
    const status = await child.status;
    await logDone.catch(() => {});
    return status;
  };
  try {
    await waitUntil("coild is ready", () => exited || log.includes('"msg":"ready"'), () => log);
    assert.ok(!exited, `coild exited:\n${log}`);
  } catch (err) {
    await stop();
    throw err;
  }
  const expected = caps.reduce((mask, c) => mask | (1n << BigInt(CAPABILITY_BITS[c])), 0n);
  return { pid: child.pid, log: () => log, stop, expectedBounding: expected };
}

Deno.test("the installed executable, conflist and settings run a real ADD and DEL under the unit's capabilities", async () => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  const root = await stagingRoot();
  const run = await Deno.makeTempDir({ prefix: "coil-t-install-run-" });
  try {
    // The runtime finds Debian's real portmap, as it would in /opt/cni/bin.
    await Deno.remove(`${root}/opt/cni/bin/portmap`);
    await Deno.symlink("/usr/lib/cni/portmap", `${root}/opt/cni/bin/portmap`);
    const prefix = etcd.newPrefix();
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.111.0.0/16"], blockSizeBits: 5 }),
    );
    await using node = await createNetns();
    await node.exec(["ip", "link", "set", "lo", "up"]);
    await node.exec(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    assertCliOk(
      await install(root, [
        "--node-name",
        node.name,
        "--etcd-endpoints",
        etcd.unixEndpoint,
        "--etcd-prefix",
        prefix,
        "--socket",
        `${run}/coild.sock`,
        "--mtu",
        "1400",
      ]),
    );
    // The installed link points at /opt/cni/bin/coil of the node; here that is the staged file.
    await Deno.symlink(`${root}/opt/cni/bin/coil`, `${run}/coild`);
    const coild = await startInstalledCoild(root, `${run}/coild`, node.name);
    try {
      const status = await Deno.readTextFile(`/proc/${coild.pid}/status`);
      assert.equal(BigInt(`0x${/^CapBnd:\s+(\w+)$/m.exec(status)![1]}`), coild.expectedBounding, status);
      assert.match(status, /^NoNewPrivs:\s+1$/m);

      await using pod = await createPod("installed-pod");
      const conflist = JSON.parse(await Deno.readTextFile(`${root}/etc/cni/net.d/10-coil.conflist`));
      const cniPath = [`${root}/opt/cni/bin`, "/usr/lib/cni"];
      // What libcni does with a conflist: each plugin in turn (DEL in reverse), with the previous result.
      const call = async (command: "ADD" | "DEL", plugin: Record<string, unknown>, prevResult?: unknown) => {
        const out = await runCni({
          command,
          netconf: {
            cniVersion: conflist.cniVersion,
            name: conflist.name,
            ...plugin,
            ...(prevResult ? { prevResult } : {}),
          },
          containerId: pod.containerId,
          netns: pod.path,
          ifName: "eth0",
          args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod.name}`,
          inNetns: node.name,
          plugin: `${cniPath[0]}/${plugin.type}`,
          env: { CNI_PATH: cniPath.join(":") },
        });
        assert.equal(out.code, 0, `${command} ${plugin.type}: ${out.stdout}${out.stderr}\n${coild.log()}`);
        return out.json;
      };
      let result: unknown;
      for (const plugin of conflist.plugins) result = await call("ADD", plugin, result);
      const ip = (result as { ips: { address: string }[] }).ips[0].address.split("/")[0];
      assert.match(ip, /^10\.111\./);
      const [eth0] = await pod.ns.ipJson<{ mtu: number }[]>(["link", "show", "eth0"]);
      assert.equal(eth0.mtu, 1400);
      await node.exec(["ping", "-n", "-q", "-c", "1", "-w", "10", ip]);

      for (const plugin of [...conflist.plugins].reverse()) await call("DEL", plugin, result);
      assert.deepEqual(await pod.ns.ipJson(["link", "show", "type", "veth"]), []);
      assert.deepEqual(Object.keys(await client.getAll().prefix(keysFor(prefix).addresses()).strings()), []);
    } finally {
      const status = await coild.stop();
      assert.equal(status.code, 0, coild.log());
    }
  } finally {
    client.close();
    await Deno.remove(run, { recursive: true });
    await Deno.remove(root, { recursive: true });
  }
});
