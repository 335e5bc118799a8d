import { DENO, execOk, ROOT } from "../_exec.ts";
import { median } from "../_stats.ts";
const flags = (await Deno.readTextFile(`${ROOT}scripts/deno_flags`)).trim().split(/\s+/);
const a: number[] = [], b: number[] = [];
for (let i = 0; i < 20; i++) {
  for (const exit of ["", "1"]) {
    const r = await execOk("v", { cmd: DENO, args: ["run", ...flags, "--config", `${ROOT}deno.json`, `${ROOT}tests/bench/.scratch/v1.ts`], env: { CNI_COMMAND: "VERSION", EXIT: exit } });
    (exit ? b : a).push(r.ms);
    if (i < 2) console.log(exit, r.ms.toFixed(1), r.stderr.trim());
  }
}
console.log("no exit", median(a).toFixed(2), "exit", median(b).toFixed(2));
