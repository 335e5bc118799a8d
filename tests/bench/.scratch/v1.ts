const t0 = performance.now();
const { runCni } = await import("../../../cni/main.ts");
const t1 = performance.now();
const code = await runCni();
const t2 = performance.now();
const s = AbortSignal.timeout(10000);
const t3 = performance.now();
console.error(JSON.stringify({ at: t0.toFixed(1), import: (t1 - t0).toFixed(2), run: (t2 - t1).toFixed(2), abortSignalTimeout: (t3 - t2).toFixed(2) }));
if (Deno.env.get("EXIT")) Deno.exit(code);
