// CNI_NETNS is the runtime's word, and coild opens it on its only JS thread: a path that is no network
// namespace (a FIFO would block open() for ever) fails that ADD at once while the node keeps serving,
// and coild's own network namespace is never configured as a pod's.

import assert from "node:assert/strict";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { type CniOutcome, runCni } from "../helpers/cni.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { removeLeftoverNetns } from "../helpers/netns.ts";
import { addPod, addressKeys, createPod, NETWORK, startNode, type TestNode } from "./_lifecycle_fixture.ts";

await removeLeftoverNetns();

/** ADD of a fresh container with `netns` as CNI_NETNS; the client gives up after 10 s (code 11). */
function addWithNetns(node: TestNode, netns: string): Promise<CniOutcome> {
  return runCni({
    command: "ADD",
    netconf: { cniVersion: "1.1.0", name: NETWORK, type: "coil", socket: node.coild.socket },
    containerId: `ctr-${crypto.randomUUID()}`,
    netns,
    ifName: "eth0",
    args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=guarded",
    inNetns: node.ns.name,
    env: { COIL_CNI_TIMEOUT_MS: "10000" },
  });
}

function assertFails(out: CniOutcome, code: number, msg: RegExp, log: string): void {
  assert.equal(out.code, 1, `${out.stdout}${out.stderr}\n${log}`);
  assert.equal(out.json?.code, code, `${out.stdout}\n${log}`);
  assert.match(String(out.json?.msg), msg);
}

Deno.test("ADD refuses a CNI_NETNS that is no pod's network namespace", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  await using dir = await fifoDir();
  await using node = await startNode({ etcd, client, subnets: ["10.154.0.0/16"] });
  // Declared after the node, so disposed before it: a coild stuck in open() could not stop.
  await using _release = { [Symbol.asyncDispose]: () => releaseFifoReaders(dir.fifo) };
  try {
    await t.step("a FIFO fails at once and the node keeps serving", async () => {
      const made = await new Deno.Command("mkfifo", { args: [dir.fifo] }).output();
      assert.ok(made.success);
      const out = await addWithNetns(node, dir.fifo);
      assertFails(
        out,
        5,
        new RegExp(`"${dir.fifo}" is not a network namespace: it is a FIFO`),
        node.coild.log(),
      );
      await using pod = await createPod();
      assert.equal((await addPod(node, pod)).length, 1, "the next ADD is served");
      const status = await runCni({
        command: "STATUS",
        netconf: { cniVersion: "1.1.0", name: NETWORK, type: "coil", socket: node.coild.socket },
        inNetns: node.ns.name,
      });
      assert.equal(status.code, 0, status.stdout);
    });

    for (const path of ["/proc/self/ns/net", node.ns.path]) {
      await t.step(
        `coild's own network namespace (${path}) is refused, nothing allocated or created`,
        async () => {
          const linkNames = async () => (await node.ns.ipJson(["link", "show"])).map((l) => l.ifname);
          const [keys, links] = [await addressKeys(client, node), await linkNames()];
          const out = await addWithNetns(node, path);
          assertFails(out, 5, /is coild's own network namespace/, node.coild.log());
          assert.deepEqual(await addressKeys(client, node), keys);
          assert.deepEqual(await linkNames(), links);
        },
      );
    }
  } finally {
    client.close();
  }
});

/** A temporary directory for the FIFO; `await using` removes it. */
async function fifoDir(): Promise<AsyncDisposable & { fifo: string }> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-podnetns-" });
  return { fifo: `${dir}/netns`, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** Opens the FIFO for writing (giving up after 2 s), which releases any reader blocked in open(). */
async function releaseFifoReaders(fifo: string): Promise<void> {
  await new Deno.Command("timeout", { args: ["2", "sh", "-c", `[ -p "${fifo}" ] && : > "${fifo}"`] })
    .output();
}
