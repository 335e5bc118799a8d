// Sustained allocations per second with 32 requests in flight: coild over its socket (the lean client
// the CNI binary uses, without the exec) against Debian's host-local exec'd 32 at a time, in alternating
// rounds; plus the whole CNI path (coil exec'd) for scale.

import type { AddRequest, DelRequest } from "../../cni/api.ts";
import { callCoild } from "../../cni/client.ts";
import { type BenchContext, type Benchmark, iterations } from "./_bench.ts";
import { bareDeno, cniEnv, COIL, emptyModule, execOk, HOST_LOCAL } from "./_exec.ts";
import { startNode } from "./_fixture.ts";
import { median, rotate } from "./_stats.ts";

export const benchmark: Benchmark = {
  name: "ipam-throughput",
  description: "allocations/s with 32 in flight: coild's socket vs host-local execs",
  run,
};

const IN_FLIGHT = 32;
const TARGET_PER_SECOND = 1000;
/**
 * ADDs per chunk, each chunk followed by its DELs, so that at most this many addresses are live: a node
 * holds ~110 pods, and host-local's ADD reads every allocation file it holds (disk store GetByID), so an
 * ever-growing data dir would make the baseline look worse than it is on a real node.
 */
const CHUNK = 250;

/** Runs `work(0…count-1)` with at most `limit` at a time; returns the wall time in ms. */
export async function inFlight(
  limit: number,
  count: number,
  work: (i: number) => Promise<void>,
): Promise<number> {
  let next = 0;
  const worker = async () => {
    while (next < count) await work(next++);
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return performance.now() - started;
}

function request(verb: "add", id: string, netns: string): AddRequest;
function request(verb: "del", id: string, netns: string): DelRequest;
function request(verb: "add" | "del", id: string, netns: string): AddRequest | DelRequest {
  const attachment = {
    network: "bench",
    containerId: id,
    ifName: "eth0",
    netns,
    podNamespace: "default",
    podName: id,
    podUid: "",
  };
  return verb === "add"
    ? { verb, mode: "ipam", mtu: 0, hostRouteTable: 0, ...attachment }
    : { verb, mode: "ipam", hostRouteTable: 0, ...attachment };
}

function assertUnique(what: string, addresses: string[], expected: number): void {
  if (new Set(addresses).size !== expected) {
    throw new Error(`${what} handed out ${new Set(addresses).size} distinct addresses for ${expected} ADDs`);
  }
}

async function run(ctx: BenchContext): Promise<void> {
  const rounds = iterations(ctx, 3, 1);
  const perRound = iterations(ctx, 2000, 200);
  const execCount = iterations(ctx, 256, 32);
  await using fx = await startNode(["10.64.0.0/14"]);
  const socket = fx.coild.socket;
  const netns = fx.node.path;
  const hostLocalDir = await Deno.makeTempDir({ prefix: "coil-bench-host-local-" });
  const conf = JSON.stringify({
    cniVersion: "1.0.0",
    name: "bench",
    type: "ptp",
    ipam: {
      type: "host-local",
      ranges: [[{ subnet: "10.68.0.0/16" }]],
      routes: [{ dst: "0.0.0.0/0" }],
      dataDir: hostLocalDir,
    },
  });
  const rates: Record<string, number[]> = { coilAdd: [], coilDel: [], hlAdd: [], hlDel: [] };

  /** One round: `count` ADDs in chunks, each chunk's DELs after it; returns ADD/s and DEL/s. */
  const chunked = async (
    count: number,
    addOne: (i: number) => Promise<string[]>,
    delOne: (i: number) => Promise<void>,
    what: string,
  ) => {
    let addMs = 0;
    let delMs = 0;
    for (let first = 0; first < count; first += CHUNK) {
      const size = Math.min(CHUNK, count - first);
      const addresses: string[] = [];
      addMs += await inFlight(IN_FLIGHT, size, async (k) => void addresses.push(...await addOne(first + k)));
      assertUnique(what, addresses, size);
      delMs += await inFlight(IN_FLIGHT, size, (k) => delOne(first + k));
    }
    return { add: count / (addMs / 1000), del: count / (delMs / 1000) };
  };
  const coilRound = async (tag: string, record: boolean) => {
    const rate = await chunked(
      record ? perRound : 64,
      async (i) =>
        ((await callCoild(socket, request("add", `${tag}-${i}`, netns), 30_000))?.ips ?? []).map((ip) =>
          ip.address
        ),
      async (i) => void await callCoild(socket, request("del", `${tag}-${i}`, netns), 30_000),
      "coild",
    );
    if (record) {
      rates.coilAdd.push(rate.add);
      rates.coilDel.push(rate.del);
    }
  };
  const hostLocalRound = async (tag: string, record: boolean) => {
    const env = (command: "ADD" | "DEL", i: number) => cniEnv(command, { containerId: `${tag}-${i}`, netns });
    const rate = await chunked(
      record ? perRound : 64,
      async (i) => {
        const out = await execOk("host-local ADD", { cmd: HOST_LOCAL, env: env("ADD", i), stdin: conf });
        return (JSON.parse(out.stdout).ips ?? []).map((ip: { address: string }) => ip.address);
      },
      async (i) => void await execOk("host-local DEL", { cmd: HOST_LOCAL, env: env("DEL", i), stdin: conf }),
      "host-local",
    );
    if (record) {
      rates.hlAdd.push(rate.add);
      rates.hlDel.push(rate.del);
    }
  };

  try {
    await coilRound("warm-coil", false);
    await hostLocalRound("warm-hl", false);
    for (let r = 0; r < rounds; r++) {
      for (const who of rotate(["coil", "hl"], r)) {
        await (who === "coil" ? coilRound(`coil-${r}`, true) : hostLocalRound(`hl-${r}`, true));
      }
    }
  } finally {
    await Deno.remove(hostLocalDir, { recursive: true });
  }
  ctx.info(
    `${rounds} alternating rounds of ${perRound} ADDs, in chunks of ${CHUNK} each followed by its DELs, ` +
      `${IN_FLIGHT} in flight`,
  );
  ctx.info(
    `coild ADD rates per round: ${rates.coilAdd.map(Math.round).join(", ")}/s; ` +
      `host-local: ${rates.hlAdd.map(Math.round).join(", ")}/s`,
  );
  const coilAdd = median(rates.coilAdd);
  ctx.report({
    name: "allocations/s over coild's socket, 32 in flight, median round",
    value: coilAdd,
    unit: "/s",
    baseline: { name: "host-local execs, 32 in flight", value: median(rates.hlAdd) },
    target: { text: `≥ ${TARGET_PER_SECOND}/s`, pass: coilAdd >= TARGET_PER_SECOND },
  });
  ctx.report({
    name: "releases/s over coild's socket, 32 in flight, median round",
    value: median(rates.coilDel),
    unit: "/s",
    baseline: { name: "host-local DEL execs", value: median(rates.hlDel) },
  });

  // The whole CNI path: each allocation is a scripts/coil exec, as a runtime makes it, next to as many
  // bare deno starts with as many in flight.
  const empty = await emptyModule();
  try {
    const bareMs = await inFlight(
      IN_FLIGHT,
      execCount,
      async () => void await execOk("bare deno", bareDeno(empty.path)),
    );
    const ids = Array.from({ length: execCount }, (_, i) => `exec-${i}`);
    const confCoil = JSON.stringify({
      cniVersion: "1.0.0",
      name: "bench",
      type: "ptp",
      ipam: { type: "coil", socket },
    });
    const execMs = await inFlight(IN_FLIGHT, execCount, async (i) => {
      await execOk("coil ADD", {
        cmd: COIL,
        env: cniEnv("ADD", { containerId: ids[i], netns }),
        stdin: confCoil,
      });
    });
    await inFlight(IN_FLIGHT, execCount, async (i) => {
      await callCoild(socket, request("del", ids[i], netns), 30_000);
    });
    ctx.report({
      name: `allocations/s through coil execs (scripts/coil), 32 in flight, ${execCount} ADDs`,
      value: execCount / (execMs / 1000),
      unit: "/s",
      baseline: { name: "bare deno starts, 32 in flight", value: execCount / (bareMs / 1000) },
      note:
        `host-local execs did ${
          Math.round(median(rates.hlAdd))
        }/s above; on 2 cores deno's start-up, not coild, ` +
        "bounds the exec path",
    });
  } finally {
    await Deno.remove(empty.dir, { recursive: true });
  }
}
