// Experiment only: runCni with stdin read synchronously and a coild call whose timeout uses AbortSignal.timeout.
import { add } from "../../../cni/commands.ts";
import { dispatch } from "../../../cni/skel.ts";
import type { ApiRequest } from "../../../cni/api.ts";
import { parseResult } from "../../../cni/result.ts";

async function call(socket: string, req: ApiRequest, timeoutMs: number) {
  const signal = AbortSignal.timeout(timeoutMs);
  const conn = await Deno.connect({ transport: "unix", path: socket });
  signal.addEventListener("abort", () => conn.close());
  await conn.write(new TextEncoder().encode(JSON.stringify(req) + "\n"));
  await conn.closeWrite();
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(16384);
  for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) chunks.push(buf.slice(0, n));
  conn.close();
  const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  const reply = JSON.parse(text);
  return reply.result ? parseResult(reply.result, 999, "result") : undefined;
}

function readStdinSync(): Uint8Array {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  for (let n = Deno.stdin.readSync(buf); n !== null; n = Deno.stdin.readSync(buf)) parts.push(buf.slice(0, n));
  return new Uint8Array(parts.flatMap((p) => [...p]));
}

const code = await dispatch({
  getenv: (name) => Deno.env.get(name),
  readStdin: () => Promise.resolve(readStdinSync()),
  writeStdout: (text) => Promise.resolve(void Deno.stdout.writeSync(new TextEncoder().encode(text))),
  writeStderr: (text) => Promise.resolve(void Deno.stderr.writeSync(new TextEncoder().encode(text))),
}, {
  add: (c) => add(c, (req) => call(c.conf.socket, req, c.env.timeoutMs)),
  del: () => Promise.resolve(undefined),
  check: () => Promise.resolve(undefined),
  gc: () => Promise.resolve(undefined),
  status: () => Promise.resolve(undefined),
});
Deno.exit(code);
