// Timestamps of each step of an IPAM ADD inside a fresh process.
const t0 = performance.now();
const { callCoild } = await import("../../../cni/client.ts");
const t1 = performance.now();
const bytes = new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer());
const t2 = performance.now();
const conf = JSON.parse(new TextDecoder().decode(bytes));
const t3 = performance.now();
const req = { verb: "add", mode: "ipam", network: "bench", containerId: Deno.env.get("CID")!, ifName: "eth0", netns: "", podNamespace: "default", podName: "x", podUid: "", mtu: 0, hostRouteTable: 0 } as const;
await callCoild(conf.ipam.socket, req, 10000);
const t4 = performance.now();
await callCoild(conf.ipam.socket, { ...req, containerId: req.containerId + "b" }, 10000);
const t5 = performance.now();
console.error(JSON.stringify({ startup: t0.toFixed(1), import: (t1 - t0).toFixed(1), stdin: (t2 - t1).toFixed(1), parse: (t3 - t2).toFixed(1), call1: (t4 - t3).toFixed(1), call2: (t5 - t4).toFixed(1) }));
