import { startNode } from "/work/main/tests/bench/_fixture.ts";
import { cniEnv, COIL, spawnAll } from "/work/main/tests/bench/_exec.ts";
import { createNetns } from "/work/main/tests/helpers/netns.ts";
await using fx = await startNode(["10.96.0.0/16"]);
const conf = JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "coil", socket: fx.coild.socket });
for (const verbRound of [0, 1]) {
const pods = [];
for (let k = 0; k < 50; k++) pods.push(await createNetns());
const t0 = performance.now();
const specs = (cmd: "ADD" | "DEL") => pods.map((p, k) => ({ cmd: COIL, env: cniEnv(cmd, { containerId: `d${verbRound}-${k}`, netns: p.path, podName: `d${verbRound}-${k}` }), stdin: conf, netnsFd: fx.nodeFd }));
const res = await Promise.all(spawnAll(specs("ADD")).map((r) => r.done));
console.log("ADD wall", performance.now() - t0, res.filter((r) => r.code !== 0).length, "failed");
const t1 = performance.now();
const res2 = await Promise.all(spawnAll(specs("DEL")).map((r) => r.done));
console.log("DEL wall", performance.now() - t1, res2.filter((r) => r.code !== 0).length, "failed");
for (const p of pods) await p[Symbol.asyncDispose]();
}
const lines = fx.coild.log().split("\n").filter((l) => l.includes('"request"')).map((l) => JSON.parse(l));
for (const l of lines) console.log(l.time, l.verb, l.containerId, l.durationMs);
