import { startNode } from "../_fixture.ts";
import { cniEnv, COIL, DENO, execOk, ROOT, type ExecSpec } from "../_exec.ts";
import { median, rotate } from "../_stats.ts";
await using fx = await startNode(["10.96.0.0/16"]);
const dir = await Deno.makeTempDir();
await Deno.writeTextFile(`${dir}/empty.ts`, "");
await Deno.writeTextFile(`${dir}/stdin.ts`, "await new Response(Deno.stdin.readable).arrayBuffer();");
await Deno.writeTextFile(`${dir}/stdin_sync.ts`, "const b = new Uint8Array(65536); Deno.stdin.readSync(b);");
await Deno.writeTextFile(`${dir}/connect.ts`, `const c = await Deno.connect({ transport: "unix", path: ${JSON.stringify(fx.coild.socket)} }); await c.write(new TextEncoder().encode('{"verb":"status","network":"x"}\\n')); await c.closeWrite(); const b = new Uint8Array(4096); while ((await c.read(b)) !== null); c.close();`);
await Deno.writeTextFile(`${dir}/imports.ts`, `import "${ROOT}cni/main.ts";`);
const flags = (await Deno.readTextFile(`${ROOT}scripts/deno_flags`)).trim().split(/\s+/);
const conf = JSON.stringify({ cniVersion: "1.0.0", name: "bench", type: "ptp", ipam: { type: "coil", socket: fx.coild.socket } });
let id = 0;
const specs: Record<string, () => ExecSpec> = {
  empty: () => ({ cmd: DENO, args: ["run", "--no-prompt", `${dir}/empty.ts`] }),
  emptyFlagsConfig: () => ({ cmd: DENO, args: ["run", ...flags, "--config", `${ROOT}deno.json`, `${dir}/empty.ts`] }),
  importsOnly: () => ({ cmd: DENO, args: ["run", ...flags, "--config", `${ROOT}deno.json`, `${dir}/imports.ts`] }),
  stdin: () => ({ cmd: DENO, args: ["run", "--no-prompt", `${dir}/stdin.ts`], stdin: conf }),
  connect: () => ({ cmd: DENO, args: ["run", "-A", `${dir}/connect.ts`] }),
  nativeVersion: () => ({ cmd: DENO, args: ["run", ...flags, "--config", `${ROOT}deno.json`, `${ROOT}main.ts`], env: cniEnv("VERSION") }),
  nativeAdd: () => ({ cmd: DENO, args: ["run", ...flags, "--config", `${ROOT}deno.json`, `${ROOT}main.ts`], env: cniEnv("ADD", { containerId: `p${id++}`, netns: fx.node.path }), stdin: conf }),
  wrapperVersion: () => ({ cmd: COIL, env: cniEnv("VERSION") }),
  bashTrue: () => ({ cmd: "/bin/bash", args: ["-c", "true"] }),
};
const names = Object.keys(specs);
const s: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
for (let i = -3; i < 60; i++) for (const n of rotate(names, i + 3)) { const r = await execOk(n, specs[n]()); if (i >= 0) s[n].push(r.ms); }
for (const n of names) console.log(n.padEnd(18), median(s[n]).toFixed(2));
await Deno.remove(dir, { recursive: true });
