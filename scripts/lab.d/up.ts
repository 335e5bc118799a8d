// `scripts/lab up`: builds the lab step by step (namespaces and links, etcd, BIRD, then coild and CNI
// pods, or static blocks and pods with --no-coil) and waits until BGP has spread every block.

import { bgpSessions, renderNodeConfig, renderRouterConfig, startBird } from "./bird.ts";
import { waitConverged, waitSessions } from "./bgp_state.ts";
import { coildAvailable, createPools } from "./coil.ts";
import { startCoild } from "./coild.ts";
import { down } from "./down.ts";
import { startEtcd } from "./etcd.ts";
import { defaultStateRoot, type LabOptions, type LabPlan, planLab } from "./plan.ts";
import { detail, mapLimit, step } from "./run.ts";
import { addPods, podState } from "./pods.ts";
import { checkPrograms } from "./preflight.ts";
import { type LabState, saveState } from "./state.ts";
import { addStaticBlocks, addStaticPod, staticPodAddresses } from "./static_pods.ts";
import { createTopology, listLabNetns } from "./topology.ts";

/**
 * Brings lab `options.name` up, first tearing down whatever exists under that name. Throws on the
 * first failure and leaves what it made for inspection (logs in the state dir); `down` removes it.
 */
export async function up(options: LabOptions, stateRoot = defaultStateRoot()): Promise<LabPlan> {
  const plan = planLab(options, stateRoot);
  await checkPrograms();
  if (options.coil && !await coildAvailable()) {
    throw new Error("coild is not available (`scripts/coil daemon --help` fails): run `up --no-coil`");
  }
  const leftovers = await listLabNetns(options.name);
  const stateExists = await Deno.stat(plan.stateDir).then(() => true, () => false);
  if (leftovers.length > 0 || stateExists) await down(options.name, stateRoot);

  try {
    await build(plan);
  } catch (err) {
    console.error(
      `up failed; what was made is left for inspection in ${plan.stateDir} (scripts/lab down removes it)`,
    );
    throw err;
  }
  return plan;
}

async function build(plan: LabPlan): Promise<void> {
  const { options } = plan;
  for (const dir of [plan.router.dir, ...plan.nodes.map((n) => n.dir)]) {
    await Deno.mkdir(dir, { recursive: true });
  }
  const state: LabState = { options, pods: [] };
  await saveState(plan, state);

  const family = options.dualStack ? "IPv4 + IPv6" : "IPv4";
  step(`Creating namespaces and links (${options.nodes} nodes, ${family})`);
  await createTopology(plan);
  detail(`router ${plan.router.netns}, management ${plan.mgmt.netns} (bridge ${plan.mgmt.bridge})`);
  for (const node of plan.nodes) {
    const v6 = options.dualStack ? `, ${node.uplink.node6} <-> ${node.uplink.router6}` : "";
    detail(
      `${node.netns}: uplink ${node.uplink.node4} <-> ${node.uplink.router4}${v6}, mgmt ${node.mgmtAddress}`,
    );
  }

  step(`Starting etcd in ${plan.mgmt.netns} at ${plan.mgmt.etcdEndpoint}`);
  await startEtcd(plan);
  detail("healthy from every node namespace");

  step(`Starting BIRD: router AS ${plan.router.asn}, nodes AS ${plan.nodes.map((n) => n.asn).join(", ")}`);
  await startBird(plan.router.netns, birdFiles(plan.router), await renderRouterConfig(plan));
  for (const node of plan.nodes) {
    await startBird(node.netns, birdFiles(node), await renderNodeConfig(plan, node));
  }
  await waitSessions(plan);
  const sessions = await bgpSessions(plan.router.birdSocket);
  detail(`sessions: ${sessions.map((s) => `${s.name} ${s.info}`).join(", ")}`);

  if (options.coil) {
    await upWithCoil(plan, state);
  } else {
    await upStatic(plan, state);
  }

  step("Waiting for the router and every node to learn every exported block");
  const exported = await waitConverged(plan);
  for (const [node, blocks] of exported) detail(`${node} exports ${blocks.join(", ") || "nothing"}`);
}

async function upWithCoil(plan: LabPlan, state: LabState): Promise<void> {
  step(`Creating pools: ${plan.pools.map((p) => `${p.name} ${p.subnets.join(" ")}`).join("; ")}`);
  await createPools(plan);
  step("Starting coild on every node");
  await mapLimit(plan.nodes, 4, (node) => startCoild(plan, node));
  for (const node of plan.nodes) detail(`${node.name}: socket ${node.coildSocket}, log ${node.coildLog}`);
  step(`Adding ${plan.pods.length} pods with CNI ADD`);
  for (const pod of await addPods(plan, state, plan.pods)) {
    detail(`${pod.namespace}/${pod.name} on ${pod.node}: ${pod.addresses.join(", ")}`);
  }
}

async function upStatic(plan: LabPlan, state: LabState): Promise<void> {
  step("Writing static block routes into table 119 (--no-coil: the lab stands in for coild)");
  for (const node of plan.nodes) {
    await addStaticBlocks(node);
    detail(`${node.name}: ${node.staticBlocks.map((b) => `${b} dev lo proto 30 table 119`).join("; ")}`);
  }
  step(`Adding ${plan.pods.length} static pods (veth, 169.254.1.1 gateway, host routes)`);
  for (const pod of plan.pods) {
    const node = plan.nodes.find((n) => n.name === pod.node)!;
    const addresses = staticPodAddresses(plan, node, pod);
    await addStaticPod(node, pod, addresses);
    state.pods.push(podState(pod, addresses));
    await saveState(plan, state);
  }
}

function birdFiles(where: { birdConfig: string; birdSocket: string; birdPid: string }) {
  return { config: where.birdConfig, socket: where.birdSocket, pid: where.birdPid };
}
