import { startNode } from "../_fixture.ts";
import { cniEnv, DENO, execOk, ROOT } from "../_exec.ts";
await using fx = await startNode(["10.96.0.0/16"]);
const flags = (await Deno.readTextFile(`${ROOT}scripts/deno_flags`)).trim().split(/\s+/);
const conf = JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "ptp", ipam: { type: "coil", socket: fx.coild.socket } });
const out = "/tmp/bx/prof";
await Deno.mkdir(out, { recursive: true });
for (let i = 0; i < 5; i++) {
  const r = await execOk("add", { cmd: DENO, args: ["run", ...flags, "--cpu-prof", "--cpu-prof-dir", out, "--config", `${ROOT}deno.json`, `${ROOT}main.ts`], env: cniEnv("ADD", { containerId: `p${i}`, netns: fx.node.path }), stdin: conf });
  console.log(r.ms);
}
