// coild turns IPv4 and IPv6 forwarding on in its node at start, with the permission flags it really
// runs with (scripts/deno_flags: no --allow-all), so no test fixture may set these sysctls for it.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { connectEtcd } from "../../../ipam/etcd_client.ts";
import { startEtcd } from "../../helpers/etcd.ts";
import { removeLeftoverNetns } from "../../helpers/netns.ts";
import { startNode } from "../_lifecycle_fixture.ts";

await removeLeftoverNetns();

const FORWARDING = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"];

Deno.test("coild enables IPv4 and IPv6 forwarding in its netns", async () => {
  await using etcd = await startEtcd();
  const client: Etcd3 = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/", callTimeoutMs: 5000 });
  try {
    let before = "";
    await using node = await startNode({
      etcd,
      client,
      subnets: ["10.151.0.0/16"],
      // A fresh netns copies IPv4 settings from the machine's: start from 0 whatever the machine has.
      setup: async (ns) => {
        await ns.exec(["sysctl", "-q", "-w", ...FORWARDING.map((name) => `${name}=0`)]);
        before = await ns.exec(["sysctl", "-n", ...FORWARDING]);
      },
    });
    assert.equal(before, "0\n0\n");
    assert.equal(await node.ns.exec(["sysctl", "-n", ...FORWARDING]), "1\n1\n", node.coild.log());
    const log = node.coild.log();
    assert.doesNotMatch(log, /cannot enable forwarding/);
    for (const name of FORWARDING) {
      assert.ok(log.includes(`"msg":"forwarding enabled","sysctl":"${name}"`), log);
    }
  } finally {
    client.close();
  }
});
