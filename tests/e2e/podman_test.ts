// A real container runtime drives Coil: Debian's podman (CNI backend) runs busybox containers on a Coil
// network from a 1.0.0 conflist (coil, then portmap), against a real coild on a node netns and a real etcd.

import assert from "node:assert/strict";
import { assertCliOk, runCoilCli } from "../helpers/coil_cli.ts";
import { CNI_PATH, runCni } from "../helpers/cni.ts";
import { startCoild } from "../helpers/coild.ts";
import { startEtcd } from "../helpers/etcd.ts";
import { createNetns } from "../helpers/netns.ts";
import { CNI_CACHE_DIR, type ContainerInspect, startPodman, type TestPodman } from "./podman_runtime.ts";

const POOL_V4 = "10.100.0.0/16";
const POOL_V6 = "fd00:100::/112";
/** The node's own address (on its lo), for the container → node ping. */
const NODE_ADDRESS = "10.99.0.1";
/** The link-local gateway on every host veth. */
const GATEWAY = "169.254.1.1";

/** What coil ip show --json prints. */
interface IpShow {
  allocated: boolean;
  pool: string | null;
  record:
    | { containerId: string; ifName: string; podNamespace: string; podName: string; netns: string }
    | null;
}

/** libcni's cache of one attachment: what the runtime sent at ADD and the list's final result. */
interface CniCacheEntry {
  cniArgs?: [string, string][];
  result: Record<string, unknown>;
}

/** libcni's cache of one container's attachment, which podman writes at ADD and removes at DEL. */
async function readCniCache(network: string, containerId: string): Promise<CniCacheEntry> {
  return JSON.parse(await Deno.readTextFile(cniCachePath(network, containerId))) as CniCacheEntry;
}

function cniCachePath(network: string, containerId: string): string {
  return `${CNI_CACHE_DIR}/${network}-${containerId}-eth0`;
}

/** The container's address on `network` in podman inspect. */
function addressesOf(container: ContainerInspect, network: string): { v4: string; v6: string } {
  const attachment = container.NetworkSettings.Networks?.[network];
  assert.ok(attachment, `podman inspect of ${container.Id} shows no network "${network}"`);
  return { v4: attachment.IPAddress, v6: attachment.GlobalIPv6Address };
}

/** Pings `ip` from inside a container (a few tries: the first may wait for neighbours). @throws {Error} */
async function pingsFrom(podman: TestPodman, container: string, ip: string): Promise<string> {
  let last = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await podman.podman(["exec", container, "ping", "-c", "1", "-W", "2", ip]);
    } catch (err) {
      last = String(err);
    }
  }
  throw new Error(`Container ${container} cannot ping ${ip}: ${last}`);
}

/** Polls `probe` (bounded: the host veth goes on a worker thread after DEL returns) until it is true. */
async function eventually(what: string, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`Still not true after 10 s: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test("podman runs containers on a Coil network: addresses, pings, CHECK, release on rm", async (t) => {
  await using etcd = await startEtcd();
  const prefix = etcd.newPrefix();
  const etcdEnv = { COIL_ETCD_ENDPOINTS: etcd.endpoint, COIL_ETCD_PREFIX: prefix };
  // podman sends no K8S_POD_NAMESPACE, so its containers get addresses from pool "default".
  assertCliOk(await runCoilCli(["pool", "create", "default", POOL_V4, POOL_V6], etcdEnv));
  const ipShow = async (ip: string) =>
    JSON.parse(assertCliOk(await runCoilCli(["ip", "show", "--json", ip], etcdEnv))) as IpShow;

  await using node = await createNetns();
  await node.exec(["ip", "link", "set", "lo", "up"]);
  await node.exec(["ip", "addr", "add", `${NODE_ADDRESS}/32`, "dev", "lo"]);
  await using coild = await startCoild({ etcd, prefix, node });
  // Declared after coild, so disposed before it: removing the containers needs coild for their DEL.
  await using podman = await startPodman({ node, cniPluginDirs: CNI_PATH.split(":") });

  const network = `coil-t-${crypto.randomUUID().slice(0, 8)}`;
  // 1.0.0 with cniVersions: today's LTS runtimes reject 1.1.0 lists (Debian's portmap stops at 1.0.0).
  const coilPlugin = { type: "coil", socket: coild.socket };
  await Deno.writeTextFile(
    `${podman.confDir}/10-coil.conflist`,
    JSON.stringify({
      cniVersion: "1.0.0",
      cniVersions: ["1.0.0", "1.1.0"],
      name: network,
      plugins: [coilPlugin, { type: "portmap", capabilities: { portMappings: true } }],
    }),
  );
  const names = [`${network}-a`, `${network}-b`];
  const ids: string[] = [];
  const v4: string[] = [];
  const v6: string[] = [];
  const hostVeths: string[] = [];

  await t.step("podman run gives each container its own address, recorded in etcd", async () => {
    // busybox ping needs a raw socket, and CAP_NET_RAW is not among podman's built-in default capabilities.
    for (const name of names) ids.push(await podman.runBusybox(name, network, ["--cap-add", "NET_RAW"]));
    for (const [i, name] of names.entries()) {
      const container = await podman.inspect(name);
      assert.equal(container.State.Status, "running");
      const addresses = addressesOf(container, network);
      assert.match(addresses.v4, /^10\.100\./);
      assert.match(addresses.v6, /^fd00:100::/);
      v4.push(addresses.v4);
      v6.push(addresses.v6);
      for (const address of [addresses.v4, addresses.v6]) {
        const shown = await ipShow(address);
        assert.equal(shown.allocated, true, `${address} is not in etcd`);
        assert.equal(shown.pool, "default");
        assert.equal(shown.record?.containerId, ids[i]);
        assert.equal(shown.record?.ifName, "eth0");
        assert.equal(shown.record?.netns, container.NetworkSettings.SandboxKey);
      }
      // The host side of the pod's veth is on the node, with the /32 route to the pod.
      const [route] = await node.ipJson<{ dev: string }[]>(["route", "show", `${addresses.v4}/32`]);
      assert.ok(route, `node has no route to ${addresses.v4}`);
      hostVeths.push(route.dev);
    }
    assert.notEqual(v4[0], v4[1]);
    assert.notEqual(v6[0], v6[1]);
    assert.notEqual(hostVeths[0], hostVeths[1]);
  });

  await t.step("podman sends K8S_POD_NAME but no K8S_POD_NAMESPACE", async () => {
    const args = new Map((await readCniCache(network, ids[0])).cniArgs ?? []);
    assert.equal(args.get("K8S_POD_NAME"), names[0]);
    assert.equal(args.has("K8S_POD_NAMESPACE"), false);
  });

  await t.step("a container pings the other container, the gateway and the node", async () => {
    await pingsFrom(podman, names[0], v4[1]);
    await pingsFrom(podman, names[1], v4[0]);
    await pingsFrom(podman, names[0], GATEWAY);
    await pingsFrom(podman, names[0], NODE_ADDRESS);
  });

  // CRI-O runs CHECK right after ADD; cnitool and others send their own CNI_ARGS (cnitool: none). As
  // libcni does, the netconf carries the list's cached result as prevResult.
  const check = async (cniArgs: string) => {
    const cached = await readCniCache(network, ids[0]);
    const sandbox = (await podman.inspect(names[0])).NetworkSettings.SandboxKey;
    const outcome = await runCni({
      command: "CHECK",
      netconf: { cniVersion: "1.0.0", name: network, ...coilPlugin, prevResult: cached.result },
      containerId: ids[0],
      netns: sandbox,
      ifName: "eth0",
      args: cniArgs,
      inNetns: node.name,
    });
    assert.equal(outcome.code, 0, `CHECK with CNI_ARGS "${cniArgs}": ${outcome.stdout}${outcome.stderr}`);
  };

  await t.step("CHECK after podman's ADD passes with the ADD's CNI_ARGS", async () => {
    const cached = await readCniCache(network, ids[0]);
    await check((cached.cniArgs ?? []).map(([k, v]) => `${k}=${v}`).join(";"));
  });

  await t.step("CHECK after podman's ADD passes with other CNI_ARGS (cnitool sends none)", async () => {
    await check("");
  });

  await t.step("podman rm -f releases the address and removes the host veth", async () => {
    const sandbox = (await podman.inspect(names[0])).NetworkSettings.SandboxKey;
    await podman.podman(["rm", "-f", "-t", "0", names[0]]);
    for (const address of [v4[0], v6[0]]) {
      assert.equal((await ipShow(address)).allocated, false, `${address} is still allocated in etcd`);
    }
    await eventually(`host veth ${hostVeths[0]} is gone`, async () => {
      const links = await node.ipJson<{ ifname: string }[]>(["link"]);
      return !links.some((l) => l.ifname === hostVeths[0]);
    });
    assert.deepEqual(await node.ipJson(["route", "show", `${v4[0]}/32`]), []);
    // podman ran the DEL (libcni drops its cache only then) and removed the container's netns.
    await assert.rejects(Deno.lstat(cniCachePath(network, ids[0])), Deno.errors.NotFound);
    await assert.rejects(Deno.lstat(sandbox), Deno.errors.NotFound);
    // The other container is untouched.
    assert.equal((await ipShow(v4[1])).allocated, true);
    await pingsFrom(podman, names[1], GATEWAY);
  });
});
