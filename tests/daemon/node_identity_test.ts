// Node identity is fenced: a node name is held by one coild process at a time (real processes, each in
// its own or a shared network namespace, run with coild's permission flags), and a node that only paused
// is not removable without --force, against a real etcd.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Etcd3 } from "etcd3";
import { judgeHolder } from "../../daemon/node_identity.ts";
import type { ProcessIdentity } from "../../daemon/process_identity.ts";
import { parseCidr, parseIp } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor, prefixRangeEnd } from "../../ipam/keys.ts";
import { type NodeHolder, parseNodeRecord } from "../../ipam/records.ts";
import { type CliRun, runCoilCli } from "../helpers/coil_cli.ts";
import { startEtcd, type TestEtcd } from "../helpers/etcd.ts";
import { createNetns, removeLeftoverNetns, type TestNetns } from "../helpers/netns.ts";
import { waitUntil } from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

const ROOT = new URL("../../", import.meta.url).pathname;
const HOLDER = new URL("./_identity_holder.ts", import.meta.url).pathname;
const FLAGS = (await Deno.readTextFile(`${ROOT}scripts/deno_flags`)).trim().split(/\s+/);

/** A process holding a node name (see _identity_holder.ts). */
interface Holder extends AsyncDisposable {
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Waits until stdout has a line starting with `word`. */
  waitFor(word: string): Promise<void>;
  status: Promise<Deno.CommandStatus>;
  signal(signal: Deno.Signal): void;
}

function startHolder(
  etcd: TestEtcd,
  ns: TestNetns,
  prefix: string,
  node: string,
  options: { ttl: number; deadAfter: number },
): Holder {
  const args = [
    "netns",
    "exec",
    ns.name,
    Deno.execPath(),
    "run",
    ...FLAGS,
    "--config",
    `${ROOT}deno.json`,
    HOLDER,
    etcd.unixEndpoint,
    prefix,
    node,
    String(options.ttl),
    String(options.deadAfter),
  ];
  const process = new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).spawn();
  const text = { out: "", err: "" };
  const collect = (stream: ReadableStream<Uint8Array>, field: "out" | "err") => {
    const decoder = new TextDecoder();
    return stream.pipeTo(
      new WritableStream({ write: (chunk) => void (text[field] += decoder.decode(chunk, { stream: true })) }),
    ).catch(() => {});
  };
  const piped = Promise.all([collect(process.stdout, "out"), collect(process.stderr, "err")]);
  let exited = false;
  const status = process.status.then(async (s) => {
    exited = true;
    await piped;
    return s;
  });
  const holder: Holder = {
    pid: process.pid,
    stdout: () => text.out,
    stderr: () => text.err,
    status,
    signal: (signal) => process.kill(signal),
    waitFor: (word) =>
      waitUntil(
        `holder ${process.pid} printed "${word}"`,
        () => {
          if (text.out.split("\n").some((line) => line.startsWith(word))) return true;
          if (exited) throw new Error(`holder ${process.pid} exited:\n${text.out}\n${text.err}`);
          return false;
        },
        () => `${text.out}\n${text.err}`,
      ),
    async [Symbol.asyncDispose]() {
      if (!exited) {
        try {
          process.kill("SIGCONT");
          process.kill("SIGKILL");
        } catch { /* already gone */ }
      }
      await status;
    },
  };
  return holder;
}

/** Every key under `prefix` with its value, ModRevision and lease: what "nothing changed" compares. */
async function state(client: Etcd3, prefix: string) {
  const res = await client.kv.range({
    key: Buffer.from(prefix),
    range_end: Buffer.from(prefixRangeEnd(prefix)),
  });
  return res.kvs.map((kv) => [kv.key.toString(), kv.value.toString(), kv.mod_revision, kv.lease]);
}

async function leaseIds(client: Etcd3): Promise<string[]> {
  return (await client.leaseClient.leaseLeases({})).leases.map((l) => l.ID).sort();
}

async function holderOf(client: Etcd3, prefix: string, node: string): Promise<NodeHolder | undefined> {
  const key = keysFor(prefix).node(node);
  const kv = (await client.kv.range({ key: Buffer.from(key) })).kvs[0];
  return kv && { ...parseNodeRecord(key, kv.value.toString()).holder!, leaseId: kv.lease };
}

function coil(etcd: TestEtcd, prefix: string, args: string[]): Promise<CliRun> {
  return runCoilCli([...args, "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix]);
}

/** A block of pool `default` owned by `node`, with one address in it. */
async function putBlock(client: Etcd3, prefix: string, node: string): Promise<void> {
  const keys = keysFor(prefix);
  const block = parseCidr("10.9.0.0/27");
  await client.put(keys.block("default", block)).value(
    JSON.stringify({ node, pool: "default", claimedAt: "2025-01-02T03:04:05Z" }),
  );
  await client.put(keys.address(block, parseIp("10.9.0.1"))).value(JSON.stringify({
    network: "k8s-pod-network",
    containerId: "ctr-1",
    ifName: "eth0",
    podNamespace: "default",
    podName: "p1",
    podUid: "uid-1",
    netns: "/var/run/netns/cni-1",
    node,
    pool: "default",
    createdAt: "2025-01-02T03:04:06Z",
  }));
}

const SELF: ProcessIdentity = {
  host: "h1",
  bootId: "boot-1",
  netns: "net:[1]",
  pidns: "pid:[1]",
  pid: 100,
  startTicks: "5000",
};

Deno.test("judgeHolder() takes over only from this process or a crashed coild of this node", async (t) => {
  const holder = (change: Partial<NodeHolder>): NodeHolder => ({ ...SELF, leaseId: "7", ...change });
  const cases: [string, NodeHolder | undefined, boolean, string][] = [
    ["this very process", holder({}), true, "self"],
    ["a crashed coild of this node", holder({ pid: 99, startTicks: "4000" }), false, "crashed"],
    ["a running coild of this node", holder({ pid: 99, startTicks: "4000" }), true, "other"],
    ["another boot", holder({ bootId: "boot-2", pid: 99 }), false, "other"],
    ["another network namespace (another lab node)", holder({ netns: "net:[2]", pid: 99 }), false, "other"],
    [
      "another PID namespace (pids cannot be compared)",
      holder({ pidns: "pid:[2]", pid: 99 }),
      false,
      "other",
    ],
    ["a record without holder (an older coild)", undefined, false, "other"],
  ];
  for (const [name, h, runs, expected] of cases) {
    await t.step(name, () => assert.equal(judgeHolder(h, SELF, () => runs), expected));
  }
});

Deno.test("acquireNodeIdentity() holds a node name for one process at a time", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  await using ns1 = await createNetns();
  await using ns2 = await createNetns();
  try {
    await t.step(
      "a second holder in another netns refuses, names the first, and changes nothing",
      async () => {
        const prefix = etcd.newPrefix();
        await using first = startHolder(etcd, ns1, prefix, "n1", { ttl: 3, deadAfter: 60 });
        await first.waitFor("acquired");
        const before = await state(client, prefix);
        const leasesBefore = await leaseIds(client);
        await using second = startHolder(etcd, ns2, prefix, "n1", { ttl: 3, deadAfter: 60 });
        const status = await second.status;
        assert.equal(status.code, 3, second.stderr());
        assert.match(
          second.stderr(),
          new RegExp(
            `^Node name "n1" is held by another coild: host "${Deno.hostname()}" \\(netns net:\\[\\d+\\], ` +
              `pid ${first.pid}, started at \\d{4}-.*Z, version test\\); .* Give each host its own name`,
            "m",
          ),
        );
        assert.deepEqual(await state(client, prefix), before, "etcd unchanged");
        assert.deepEqual(await leaseIds(client), leasesBefore, "no lease left behind");
        assert.equal((await holderOf(client, prefix, "n1"))?.pid, first.pid, "the first keeps the name");
        assert.equal(first.stdout(), "acquired\n", "the first was neither fenced nor re-registered");
      },
    );

    await t.step("a second holder in the same netns is refused while the first runs", async () => {
      const prefix = etcd.newPrefix();
      await using first = startHolder(etcd, ns1, prefix, "n1", { ttl: 2, deadAfter: 60 });
      await first.waitFor("acquired");
      await using second = startHolder(etcd, ns1, prefix, "n1", { ttl: 2, deadAfter: 60 });
      assert.equal((await second.status).code, 3, second.stderr());
      assert.equal((await holderOf(client, prefix, "n1"))?.pid, first.pid);
    });

    await t.step("a SIGKILLed holder restarted in the same netns takes over without waiting", async () => {
      const prefix = etcd.newPrefix();
      // A long TTL: waiting for it to expire would take the test's whole time limit.
      await using first = startHolder(etcd, ns1, prefix, "n1", { ttl: 120, deadAfter: 600 });
      await first.waitFor("acquired");
      const old = (await holderOf(client, prefix, "n1"))!;
      first.signal("SIGKILL");
      await first.status;
      await using second = startHolder(etcd, ns1, prefix, "n1", { ttl: 120, deadAfter: 600 });
      await second.waitFor("acquired");
      assert.match(second.stderr(), new RegExp(`"msg":"node name acquired".*"tookOverFromPid":${first.pid}`));
      const now = (await holderOf(client, prefix, "n1"))!;
      assert.equal(now.pid, second.pid);
      const oldLease = await client.leaseClient.leaseTimeToLive({ ID: old.leaseId });
      assert.equal(oldLease.TTL, "-1", "the crashed holder's lease was revoked");
    });

    await t.step("a clean stop deletes the node key and leaves the fence key on its lease", async () => {
      const prefix = etcd.newPrefix();
      const keys = keysFor(prefix);
      await using holder = startHolder(etcd, ns1, prefix, "n1", { ttl: 5, deadAfter: 60 });
      await holder.waitFor("acquired");
      holder.signal("SIGTERM");
      assert.equal((await holder.status).code, 0, holder.stderr());
      assert.equal(await client.get(keys.node("n1")).exists(), false);
      const fence = (await client.kv.range({ key: Buffer.from(keys.nodeFence("n1")) })).kvs[0];
      assert.ok(fence, "the fence key stays");
      const ttl = Number((await client.leaseClient.leaseTimeToLive({ ID: fence.lease })).TTL);
      assert.ok(ttl > 5 && ttl <= 60, `fence lease TTL ${ttl}`);
      assert.equal(parseNodeRecord(keys.nodeFence("n1"), fence.value.toString()).holder?.pid, holder.pid);
    });
  } finally {
    client.close();
  }
});

Deno.test("a paused node is not removable without --force, and finds out on SIGCONT", async (t) => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  await using ns1 = await createNetns();
  await using ns2 = await createNetns();
  try {
    await t.step("paused past its TTL: remove refused, --force removes, SIGCONT re-acquires", async () => {
      const prefix = etcd.newPrefix();
      const keys = keysFor(prefix);
      await using holder = startHolder(etcd, ns1, prefix, "n1", { ttl: 2, deadAfter: 300 });
      await holder.waitFor("acquired");
      await putBlock(client, prefix, "n1");
      holder.signal("SIGSTOP");
      await waitUntil("the node key expired", async () => !await client.get(keys.node("n1")).exists());
      const list = await coil(etcd, prefix, ["node", "list"]);
      assert.match(list.stdout, /^n1 +not running, alive recently \(removable in (4m\d+s|5m)\) +1 +1\/30/m);
      const before = await state(client, prefix);
      const refused = await coil(etcd, prefix, ["node", "remove", "n1"]);
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        /^coil: Refusing to remove node "n1": its coild was alive recently \(key ".*node-fences\/n1" exists\), so it may only be paused .* removable in (4m\d+s|5m), .* --force is only for a host known to be down\n$/,
      );
      assert.deepEqual(await state(client, prefix), before, "nothing changed");
      const forced = await coil(etcd, prefix, ["node", "remove", "n1", "--force", "--json"]);
      assert.equal(forced.code, 0, forced.stderr);
      assert.deepEqual(JSON.parse(forced.stdout), {
        node: "n1",
        wasAlive: false,
        wasRecentlyAlive: true,
        blocks: [{ pool: "default", block: "10.9.0.0/27", addresses: 1 }],
      });
      assert.deepEqual(await state(client, prefix), [], "blocks, addresses and the fence key are gone");
      holder.signal("SIGCONT");
      await holder.waitFor("reacquired");
      assert.equal((await holderOf(client, prefix, "n1"))?.pid, holder.pid);
      assert.ok(await client.get(keys.nodeFence("n1")).exists(), "the fence key is back");
    });

    await t.step("paused while another coild took the name: SIGCONT fences it", async () => {
      const prefix = etcd.newPrefix();
      const keys = keysFor(prefix);
      await using paused = startHolder(etcd, ns1, prefix, "n1", { ttl: 2, deadAfter: 300 });
      await paused.waitFor("acquired");
      paused.signal("SIGSTOP");
      await waitUntil("the node key expired", async () => !await client.get(keys.node("n1")).exists());
      await using other = startHolder(etcd, ns2, prefix, "n1", { ttl: 2, deadAfter: 300 });
      await other.waitFor("acquired");
      paused.signal("SIGCONT");
      assert.equal((await paused.status).code, 4, paused.stdout() + paused.stderr());
      assert.match(
        paused.stdout(),
        new RegExp(`^fenced Node name "n1" is held by another coild: .*pid ${other.pid}`, "m"),
      );
      assert.equal((await holderOf(client, prefix, "n1"))?.pid, other.pid, "the other keeps the name");
      assert.equal(
        parseNodeRecord(keys.nodeFence("n1"), (await client.get(keys.nodeFence("n1")).string())!).holder?.pid,
        other.pid,
        "and the fence key",
      );
      assert.equal(other.stdout(), "acquired\n");
    });
  } finally {
    client.close();
  }
});
