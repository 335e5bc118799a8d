// Malformed calls against a real coild on a real etcd: each netconf names a live socket, so a call that
// got past validation would reach coild and succeed; instead each must fail with the right CNI code and
// a message naming the problem, and leave every key under the prefix as it was (same mod revisions).

import assert from "node:assert/strict";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { type BadCniCase, badCniInputs, stdinOf } from "../helpers/bad_cni_inputs.ts";
import { runCoil } from "../helpers/cni.ts";
import { startCoild } from "../helpers/coild.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { createNetns } from "../helpers/netns.ts";

Deno.test("coil rejects malformed calls against a live coild and changes nothing in etcd", async (t) => {
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  try {
    await new PoolStore(client, prefix).createPool(
      parsePool("default", { subnets: ["10.140.0.0/16", "fd00:140::/48"] }),
    );
    await using node = await createNetns();
    await node.exec(["ip", "link", "set", "lo", "up"]);
    await using pod = await createNetns();
    await using coild = await startCoild({ etcd, prefix, node });
    const { conf, ipam, add, cases: shared } = badCniInputs({
      socket: coild.socket,
      netns: pod.path,
      cniArgs: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1",
    });
    const goodResult = {
      cniVersion: "1.1.0",
      ips: [{ address: "10.140.0.5/32", gateway: "169.254.1.1" }],
    };
    const snapshot = async () => {
      const res = await client.getAll().prefix(prefix).exec();
      return Object.fromEntries(res.kvs.map((kv) => [kv.key.toString(), String(kv.mod_revision)]));
    };

    await t.step("ADD into a missing netns on a node without blocks leaves etcd as it was", async () => {
      const before = await snapshot();
      const out = await runCoil({ ...add, CNI_NETNS: "/var/run/netns/coil-t-gone" }, JSON.stringify(conf));
      assert.equal(JSON.parse(out.stdout).code, 5, out.stdout);
      assert.deepEqual(await snapshot(), before, "etcd changed");
    });

    await t.step("a valid ADD and DEL with the same socket succeed (the baseline)", async () => {
      const added = await runCoil(add, JSON.stringify(conf));
      assert.equal(added.code, 0, added.stdout + added.stderr);
      const deleted = await runCoil({ ...add, CNI_COMMAND: "DEL" }, JSON.stringify(conf));
      assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    });

    const cases: BadCniCase[] = [
      ...shared,
      // Valid for the client, refused by coild: the request reaches the daemon.
      [
        "ADD into a netns path that does not exist",
        { ...add, CNI_NETNS: "/var/run/netns/coil-t-none" },
        conf,
        5,
        /Pod network namespace "\/var\/run\/netns\/coil-t-none" does not exist/,
      ],
      [
        "ADD into a file that is no netns",
        { ...add, CNI_NETNS: "/etc/hostname" },
        conf,
        5,
        /Pod network namespace "\/etc\/hostname" is not a network namespace/,
      ],
      [
        "CHECK of a container never added",
        { ...add, CNI_COMMAND: "CHECK", CNI_CONTAINERID: "never-added" },
        { ...conf, prevResult: goodResult },
        3,
        /"never-added"/,
      ],
      [
        "IPAM-mode CHECK of a container never added",
        { ...add, CNI_COMMAND: "CHECK", CNI_CONTAINERID: "never-added" },
        { ...ipam, prevResult: goodResult },
        3,
        /"never-added"/,
      ],
    ];
    assert.ok(cases.length >= 40, `${cases.length} cases`);

    for (const [title, env, stdin, code, message] of cases) {
      await t.step(title, async () => {
        const before = await snapshot();
        const out = await runCoil(env, stdinOf(stdin));
        assert.equal(out.code, 1, `exit ${out.code}: ${out.stdout} ${out.stderr}`);
        assert.ok(out.stdout.endsWith("\n"), `stdout ${JSON.stringify(out.stdout)}`);
        const error = JSON.parse(out.stdout);
        assert.equal(error.code, code, error.msg);
        assert.match(error.msg, message);
        assert.doesNotMatch(error.msg, /\.$/, "no trailing period");
        assert.match(error.msg, /^[A-Z]/, "capital first letter");
        assert.deepEqual(await snapshot(), before, "etcd changed");
      });
    }

    await t.step("coild still serves a valid ADD and DEL after all that", async () => {
      const added = await runCoil({ ...add, CNI_CONTAINERID: "c2" }, JSON.stringify(conf));
      assert.equal(added.code, 0, added.stdout + added.stderr);
      const deleted = await runCoil(
        { ...add, CNI_COMMAND: "DEL", CNI_CONTAINERID: "c2" },
        JSON.stringify(conf),
      );
      assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
      assert.deepEqual(await client.getAll().prefix(`${prefix}addresses/`).keys(), []);
    });
  } finally {
    client.close();
  }
});
