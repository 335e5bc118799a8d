// Syncing 10,000 block routes into table 119: the exporter's sync(blocks) (dump, diff, one batch over
// libmnl) against `ip -batch` adding the same routes, then the delete direction (sync([]) against
// `ip -batch` of deletes), in a throw-away netns, rounds alternating. The floor: the same changes as
// prebuilt messages through sock.batch() (sendto/recv alone: the kernel's own cost per route).

import { blockAt, formatCidr, ipToBytes, parseCidr } from "../../ipam/cidr.ts";
import { linkByName } from "../../netlink/link.ts";
import { routeDump } from "../../netlink/route.ts";
import { encodeRoute } from "../../netlink/route_wire.ts";
import { createRouteExporter } from "../../daemon/nodenet/route_exporter.ts";
import { createNetns, openNetnsSocket } from "../helpers/netns.ts";
import { type BenchContext, type Benchmark, iterations } from "./_bench.ts";
import { execOk } from "./_exec.ts";
import { median, rotate } from "./_stats.ts";

export const benchmark: Benchmark = {
  name: "route-sync",
  description: "10,000 block routes into table 119: exporter sync vs ip -batch, add and delete",
  run,
};

const COUNT = 10_000;
const TABLE = 119;
const PROTOCOL = 30;
const SPEEDUP_TARGET = 2;

async function run(ctx: BenchContext): Promise<void> {
  const rounds = iterations(ctx, 9, 2);
  await using ns = await createNetns();
  await ns.exec(["ip", "link", "set", "lo", "up"]);
  using netnsSocket = openNetnsSocket(ns);
  const sock = netnsSocket.sock;
  const exporter = createRouteExporter({ sock, table: TABLE, protocol: PROTOCOL });
  const space = parseCidr("10.0.0.0/8");
  // Every other /27: blocks of no aggregate, so that the exporter writes one route per block, as ip does.
  const blocks = Array.from({ length: COUNT }, (_, i) => blockAt(space, 27, BigInt(2 * i)));
  const lo = linkByName(sock, "lo")!.index;
  const prebuilt = (op: "add" | "del") =>
    blocks.map((b) =>
      encodeRoute(op, {
        family: 4,
        dst: ipToBytes({ family: 4, value: b.base }),
        dstLen: b.prefix,
        oif: lo,
        table: TABLE,
        protocol: PROTOCOL,
      })
    );
  const addMessages = prebuilt("add");
  const delMessages = prebuilt("del");
  const noError = { op: "floor", object: "route" };
  const dir = await Deno.makeTempDir({ prefix: "coil-bench-routes-" });
  try {
    const lines = (verb: string) =>
      blocks.map((b) => `route ${verb} ${formatCidr(b)} dev lo proto ${PROTOCOL} table ${TABLE}\n`).join("");
    const addFile = `${dir}/add.batch`;
    const delFile = `${dir}/del.batch`;
    await Deno.writeTextFile(addFile, lines("add"));
    await Deno.writeTextFile(delFile, lines("del"));
    const present = () => routeDump(sock, { family: 4, table: TABLE }).length;
    const expect = (what: string, count: number) => {
      const found = present();
      if (found !== count) {
        throw new Error(`After ${what}, table ${TABLE} holds ${found} routes, not ${count}`);
      }
    };
    const timed = (fn: () => unknown) => {
      const started = performance.now();
      fn();
      return performance.now() - started;
    };
    const samples: Record<string, number[]> = {
      oursAdd: [],
      oursDel: [],
      oursNoop: [],
      ipAdd: [],
      ipDel: [],
      floorAdd: [],
      floorDel: [],
    };
    const floor = (record: boolean) => {
      const add = timed(() => sock.batch(addMessages, () => noError));
      expect("prebuilt adds", COUNT);
      const del = timed(() => sock.batch(delMessages, () => noError));
      expect("prebuilt deletes", 0);
      if (record) {
        samples.floorAdd.push(add);
        samples.floorDel.push(del);
      }
    };
    const ours = (record: boolean) => {
      const add = timed(() => exporter.sync(blocks));
      expect("sync(10,000 blocks)", COUNT);
      const noop = timed(() => exporter.sync(blocks));
      const del = timed(() => exporter.sync([]));
      expect("sync([])", 0);
      if (record) {
        samples.oursAdd.push(add);
        samples.oursNoop.push(noop);
        samples.oursDel.push(del);
      }
    };
    const ip = async (record: boolean) => {
      const add = await execOk("ip -batch add", { cmd: "ip", args: ["-n", ns.name, "-batch", addFile] });
      expect("ip -batch add", COUNT);
      const del = await execOk("ip -batch del", { cmd: "ip", args: ["-n", ns.name, "-batch", delFile] });
      expect("ip -batch del", 0);
      if (record) {
        samples.ipAdd.push(add.ms);
        samples.ipDel.push(del.ms);
      }
    };
    ours(false);
    await ip(false);
    floor(false);
    for (let r = 0; r < rounds; r++) {
      for (const who of rotate(["ours", "ip", "floor"], r)) {
        await (who === "ours" ? ours(true) : who === "ip" ? ip(true) : floor(true));
      }
    }
    ctx.info(
      `${rounds} rounds each, alternating; ${COUNT} /27 routes dev lo proto ${PROTOCOL} table ${TABLE}`,
    );
    const directions = [["add", "oursAdd", "ipAdd", "floorAdd"], ["delete", "oursDel", "ipDel", "floorDel"]];
    for (const [direction, oursKey, ipKey, floorKey] of directions) {
      const oursMs = median(samples[oursKey]);
      const ipMs = median(samples[ipKey]);
      const floorMs = median(samples[floorKey]);
      ctx.report({
        name: `${direction} ${COUNT} routes: exporter sync, median`,
        value: oursMs,
        unit: "ms",
        baseline: { name: `ip -batch ${direction === "add" ? "add" : "del"}`, value: ipMs },
        target: {
          text: `≥ ${SPEEDUP_TARGET}× faster (≤ ${(ipMs / SPEEDUP_TARGET).toFixed(0)} ms)`,
          pass: oursMs * SPEEDUP_TARGET <= ipMs,
        },
        note: `${(ipMs / oursMs).toFixed(2)}× faster than ip -batch; ${
          Math.round(COUNT / (oursMs / 1000))
        } routes/s; floor (prebuilt messages, sendto/recv alone) ${floorMs.toFixed(1)} ms = ${
          (floorMs * 1000 / COUNT).toFixed(2)
        } µs/route, ${Math.round(COUNT / (floorMs / 1000))} routes/s`,
      });
    }
    ctx.report({
      name: `no-op sync of ${COUNT} routes already in place (dump + diff), median`,
      value: median(samples.oursNoop),
      unit: "ms",
    });
  } finally {
    exporter.sync([]);
    await Deno.remove(dir, { recursive: true });
  }
}
