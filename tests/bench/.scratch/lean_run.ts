import { startNode } from "../_fixture.ts";
import { cniEnv, DENO, execOk, ROOT, type ExecSpec } from "../_exec.ts";
import { median, rotate } from "../_stats.ts";
await using fx = await startNode(["10.96.0.0/16"]);
const dir = await Deno.makeTempDir();
await Deno.writeTextFile(`${dir}/empty.ts`, "");
const flags = (await Deno.readTextFile(`${ROOT}scripts/deno_flags`)).trim().split(/\s+/);
const conf = JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "ptp", ipam: { type: "coil", socket: fx.coild.socket } });
let id = 0;
const specs: Record<string, () => ExecSpec> = {
  empty: () => ({ cmd: DENO, args: ["run", "--no-prompt", `${dir}/empty.ts`] }),
  nativeAdd: () => ({ cmd: DENO, args: ["run", ...flags, "--config", `${ROOT}deno.json`, `${ROOT}main.ts`], env: cniEnv("ADD", { containerId: `p${id++}`, netns: fx.node.path }), stdin: conf }),
  leanAdd: () => ({ cmd: DENO, args: ["run", ...flags, "--config", `${ROOT}deno.json`, `${ROOT}tests/bench/.scratch/lean_main.ts`], env: cniEnv("ADD", { containerId: `p${id++}`, netns: fx.node.path }), stdin: conf }),
};
const names = Object.keys(specs);
const s: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
for (let i = -3; i < 50; i++) for (const n of rotate(names, i + 3)) { const r = await execOk(n, specs[n]()); if (i >= 0) s[n].push(r.ms); }
for (const n of names) console.log(n.padEnd(18), median(s[n]).toFixed(2));
const lines = fx.coild.log().split("\n").filter((l) => l.includes('"request"')).map((l) => JSON.parse(l).durationMs);
console.log("coild handling median", median(lines));
await Deno.remove(dir, { recursive: true });
