import { startNode } from "../_fixture.ts";
import { DENO, execOk, ROOT } from "../_exec.ts";
await using fx = await startNode(["10.96.0.0/16"]);
const flags = (await Deno.readTextFile(`${ROOT}scripts/deno_flags`)).trim().split(/\s+/);
const conf = JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "ptp", ipam: { type: "coil", socket: fx.coild.socket } });
for (let i = 0; i < 8; i++) {
  const r = await execOk("steps", { cmd: DENO, args: ["run", ...flags, "--config", `${ROOT}deno.json`, `${ROOT}tests/bench/.scratch/steps.ts`], env: { CID: `s${i}` }, stdin: conf });
  console.log(r.ms.toFixed(1), r.stderr.trim());
}
