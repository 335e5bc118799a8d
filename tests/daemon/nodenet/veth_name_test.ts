// Host veth names: Calico's and Coil's "veth" + sha1("<ns>.<pod>")[:11], with the expected hashes
// computed here independently of the module.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { hostVethName, type PodIdentity } from "../../../daemon/nodenet/veth_name.ts";

function sha1Hex(text: string): string {
  return createHash("sha1").update(text, "utf8").digest("hex");
}

function pod(fields: Partial<PodIdentity>): PodIdentity {
  return { podNamespace: "default", podName: "web-0", containerId: "c0ffee", ifName: "eth0", ...fields };
}

Deno.test("hostVethName() is veth plus the first 11 hex digits of sha1 of namespace.pod", async (t) => {
  const cases: [string, string][] = [
    ["default", "web-0"],
    ["kube-system", "coredns-5d78c9869d-8xk2p"],
    ["a", "b"],
    ["team-ünïcode", "pod.with.dots"],
    // Kubernetes' longest names: 63-byte namespace, 253-byte pod name.
    ["n".repeat(63), "p".repeat(253)],
  ];
  for (const [podNamespace, podName] of cases) {
    await t.step(`${podNamespace.slice(0, 20)}/${podName.slice(0, 20)}`, () => {
      const name = hostVethName(pod({ podNamespace, podName }));
      assert.equal(name, "veth" + sha1Hex(`${podNamespace}.${podName}`).slice(0, 11));
      assert.equal(name.length, 15);
    });
  }
});

Deno.test("hostVethName() gives the name Calico gives the same pod, with veth for cali", () => {
  // `printf default.nginx | sha1sum` = c440f455693b…; Calico names this pod's veth calic440f455693.
  assert.equal(hostVethName(pod({ podName: "nginx" })), "vethc440f455693");
  assert.equal(
    hostVethName(pod({ podNamespace: "kube-system", podName: "coredns-5d78c9869d-8xk2p" })),
    "veth73128771e49",
  );
});

Deno.test("hostVethName() ignores the container ID when the pod has a name", () => {
  assert.equal(
    hostVethName(pod({ containerId: "first-sandbox" })),
    hostVethName(pod({ containerId: "second-sandbox" })),
  );
});

Deno.test("hostVethName() derives from the container ID when the runtime sends no pod name", () => {
  const name = hostVethName(pod({ podNamespace: "", podName: "", containerId: "abc123" }));
  assert.equal(name, "veth" + sha1Hex("abc123").slice(0, 11));
});

Deno.test("hostVethName() gives a second interface of the same pod its own name", () => {
  const eth0 = hostVethName(pod({}));
  const net1 = hostVethName(pod({ ifName: "net1" }));
  assert.notEqual(net1, eth0);
  assert.equal(net1, "veth" + sha1Hex("default.web-0.net1").slice(0, 11));
  assert.equal(net1.length, 15);
});

Deno.test("hostVethName() gives pods that differ in namespace or name different veths", () => {
  const names = new Set([
    hostVethName(pod({ podNamespace: "ab", podName: "c" })),
    hostVethName(pod({ podNamespace: "a", podName: "bc" })),
    hostVethName(pod({ podNamespace: "default", podName: "web-1" })),
    hostVethName(pod({ podNamespace: "other", podName: "web-0" })),
  ]);
  assert.equal(names.size, 4);
});

Deno.test("hostVethName() gives names the kernel accepts: 15 lowercase hex-suffixed bytes", () => {
  for (let i = 0; i < 200; i++) {
    const name = hostVethName(pod({ podName: `pod-${i}` }));
    assert.match(name, /^veth[0-9a-f]{11}$/);
  }
});
