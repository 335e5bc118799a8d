import { linkAddVeth, linkDel } from "../../../netlink/link.ts";
import { openNetns, closeNetns } from "../../../netlink/netns.ts";
import { createNetns, openNetnsSocket } from "../../helpers/netns.ts";
import { median } from "../_stats.ts";
await using host = await createNetns();
using hs = openNetnsSocket(host);
const adds: number[] = [], dels: number[] = [];
for (let i = 0; i < 20; i++) {
  await using pod = await createNetns();
  const fd = openNetns(pod.path);
  const t0 = performance.now();
  linkAddVeth(hs.sock, { name: `v${i}`, peerName: "eth0", peerNetnsFd: fd, mtu: 1500 });
  const t1 = performance.now();
  linkDel(hs.sock, `v${i}`);
  const t2 = performance.now();
  closeNetns(fd);
  adds.push(t1 - t0); dels.push(t2 - t1);
}
console.log("veth add median", median(adds).toFixed(2), "ms; veth del median", median(dels).toFixed(2), "ms");
