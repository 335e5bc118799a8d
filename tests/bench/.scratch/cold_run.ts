import { startNode } from "../_fixture.ts";
import { DENO, execOk, ROOT } from "../_exec.ts";
await using fx = await startNode(["10.96.0.0/16"]);
for (let i = 0; i < 6; i++) {
  const r = await execOk("cold", { cmd: DENO, args: ["run", "-A", "--config", `${ROOT}deno.json`, `${ROOT}tests/bench/.scratch/cold.ts`], env: { SOCK: fx.coild.socket }, stdin: "{\"a\":1}" });
  console.log(r.ms.toFixed(1), r.stderr.trim());
}
