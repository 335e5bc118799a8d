// etcd failing under a running coild: ADD must answer 11 (try again later) saying etcd is unreachable,
// promptly enough that the runtime's retry is what waits, and succeed again once etcd is back.

import assert from "node:assert/strict";
import { parseIp, tryParseCidr } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import { parsePool } from "../../ipam/pool.ts";
import { PoolStore } from "../../ipam/pool_store.ts";
import { type CniOutcome, runCni } from "../helpers/cni.ts";
import { startCoild } from "../helpers/coild.ts";
import { killEtcdForRestart, startEtcd } from "../helpers/etcd.ts";
import { createNetns } from "../helpers/netns.ts";

/**
 * How long the CNI client waits for coild. coild must answer within it: when it does not, the client's
 * own 11 says "coild … no reply", which the message assertions below tell apart from coild's answer.
 */
const CLIENT_TIMEOUT_MS = 15_000;

function cniError(outcome: CniOutcome): { code: number; msg: string } {
  assert.notEqual(outcome.code, 0, `expected a failure, got ${outcome.stdout}`);
  assert.ok(outcome.json, `no error JSON: ${outcome.stdout} ${outcome.stderr}`);
  return outcome.json as { code: number; msg: string };
}

Deno.test("coild answers ADD with 11 while etcd is down and recovers when it is back", async (t) => {
  await using etcd = await startEtcd();
  // Holds the restarted etcd: disposed after coild (declared later) and before the data dir goes.
  await using restarted = new AsyncDisposableStack();
  const prefix = etcd.newPrefix();
  const keys = keysFor(prefix);
  const setup = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  try {
    await new PoolStore(setup, prefix).createPool(parsePool("default", { subnets: ["10.150.0.0/16"] }));
  } finally {
    setup.close();
  }
  await using node = await createNetns();
  await node.exec(["ip", "link", "set", "lo", "up"]);
  // The pods' netns path must exist (coild's sweep releases addresses whose netns is gone).
  await using pods = await createNetns();
  await using coild = await startCoild({ etcd, prefix, node });
  const netconf = {
    cniVersion: "1.1.0",
    name: "k8s",
    type: "ptp",
    ipam: { type: "coil", socket: coild.socket },
  };
  const call = (command: "ADD" | "DEL", containerId: string) =>
    runCni({
      command,
      netconf,
      containerId,
      netns: pods.path,
      ifName: "eth0",
      args: `K8S_POD_NAMESPACE=default;K8S_POD_NAME=${containerId}`,
      env: { COIL_CNI_TIMEOUT_MS: String(CLIENT_TIMEOUT_MS) },
    });
  /** ADD until it succeeds, as a runtime retries on 11; any other failure ends the wait. */
  const addUntilServed = async (containerId: string) => {
    const deadline = Date.now() + 90_000;
    for (;;) {
      const outcome = await call("ADD", containerId);
      if (outcome.code === 0) return outcome;
      const err = cniError(outcome);
      assert.equal(err.code, 11, err.msg);
      if (Date.now() > deadline) assert.fail(`ADD still failing after etcd came back: ${err.msg}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  /** The address keys whose record names `containerId`. */
  const keysOf = async (containerId: string) => {
    const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
    try {
      const records = await client.getAll().prefix(keys.addresses()).strings();
      return Object.entries(records).filter(([, v]) => JSON.parse(v).containerId === containerId).map(([k]) =>
        k
      );
    } finally {
      client.close();
    }
  };
  const keyOf = (outcome: CniOutcome) => {
    const address = (outcome.json as { ips: { address: string }[] }).ips[0].address;
    return keys.address(tryParseCidr(address, { strict: false })!, parseIp(address.split("/")[0]));
  };
  const addressExists = async (outcome: CniOutcome) => {
    const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
    try {
      const ip = (outcome.json as { ips: { address: string }[] }).ips[0].address.split("/")[0];
      const found = await client.getAll().prefix(keys.addresses()).keys();
      return found.some((key) => key.endsWith(`/${ip}`));
    } finally {
      client.close();
    }
  };

  await t.step("ADD succeeds while etcd runs", async () => {
    const outcome = await call("ADD", "before");
    assert.equal(outcome.code, 0, outcome.stdout + outcome.stderr);
    assert.ok(await addressExists(outcome));
  });

  await t.step("ADD answers 11 naming etcd while etcd hangs (SIGSTOP), and works after SIGCONT", async () => {
    etcd.process.kill("SIGSTOP");
    try {
      const err = cniError(await call("ADD", "hung"));
      assert.equal(err.code, 11, err.msg);
      assert.match(err.msg, /etcd is unreachable/);
      assert.doesNotMatch(err.msg, /coild is not reachable/);
    } finally {
      etcd.process.kill("SIGCONT");
    }
    const outcome = await addUntilServed("hung");
    assert.ok(await addressExists(outcome));
    // The ADD that answered 11 must have left nothing behind: its txn, cut off by coild's deadline,
    // may still reach etcd when it resumes.
    assert.deepEqual(await keysOf("hung"), [keyOf(outcome)], "an address the failed ADD wrote stayed behind");
  });

  await t.step("ADD answers 11 naming etcd while etcd is killed, and works after a restart", async () => {
    const restart = await killEtcdForRestart(etcd);
    const err = cniError(await call("ADD", "down"));
    assert.equal(err.code, 11, err.msg);
    assert.match(err.msg, /etcd is unreachable/);
    assert.doesNotMatch(err.msg, /coild is not reachable/);
    // DEL needs etcd too: it must say so (11) rather than claim success and leak the address.
    const del = cniError(await call("DEL", "before"));
    assert.equal(del.code, 11, del.msg);
    restarted.use(await restart());
    const outcome = await addUntilServed("down");
    assert.ok(await addressExists(outcome));
    const again = await call("DEL", "before");
    assert.equal(again.code, 0, again.stdout);
    for (const id of ["hung", "down"]) assert.equal((await call("DEL", id)).code, 0);
    const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
    try {
      assert.deepEqual(await client.getAll().prefix(keys.addresses()).keys(), []);
    } finally {
      client.close();
    }
  });
});
