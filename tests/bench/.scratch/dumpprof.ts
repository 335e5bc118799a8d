import { blockAt, parseCidr } from "../../../ipam/cidr.ts";
import { routeDump } from "../../../netlink/route.ts";
import { createRouteExporter } from "../../../daemon/route_exporter.ts";
import { createNetns, openNetnsSocket } from "../../helpers/netns.ts";
await using ns = await createNetns();
await ns.exec(["ip", "link", "set", "lo", "up"]);
using s = openNetnsSocket(ns);
const ex = createRouteExporter({ sock: s.sock, table: 119, protocol: 30 });
const space = parseCidr("10.0.0.0/8");
const blocks = Array.from({ length: 10000 }, (_, i) => blockAt(space, 27, BigInt(i)));
for (let r = 0; r < 8; r++) {
  const t0 = performance.now(); ex.sync(blocks); const t1 = performance.now();
  const d = routeDump(s.sock, { family: 4, table: 119 }); const t2 = performance.now();
  ex.sync(blocks); const t3 = performance.now();
  ex.sync([]); const t4 = performance.now();
  console.log(`add ${(t1 - t0).toFixed(1)} dump ${(t2 - t1).toFixed(1)} (${d.length}) noop ${(t3 - t2).toFixed(1)} del ${(t4 - t3).toFixed(1)}`);
}
