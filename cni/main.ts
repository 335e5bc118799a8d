// CNI mode's entry: the dispatcher wired to the process's environment, stdin and stdout. Nothing
// reachable from here imports an npm package or FFI, so an exec costs little more than deno's start.

import { add, check, del, gc, status } from "./commands.ts";
import { dispatch } from "./skel.ts";

/** Runs the CNI call described by the environment and stdin; returns the process exit code. */
export async function runCni(): Promise<number> {
  return await dispatch({
    getenv: (name) => Deno.env.get(name),
    readStdin: () => Promise.resolve(readStdinSync()),
    writeStdout: (text) => writeAll(Deno.stdout, text),
    writeStderr: (text) => writeAll(Deno.stderr, text),
  }, { add, del, check, gc, status });
}

// Synchronous reads: the first use of Deno.stdin.readable loads the streams code (~3.6 ms per exec).
function readStdinSync(): Uint8Array {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  for (let n = Deno.stdin.readSync(buffer); n !== null; n = Deno.stdin.readSync(buffer)) {
    chunks.push(buffer.slice(0, n));
  }
  const all = new Uint8Array(chunks.reduce((size, c) => size + c.length, 0));
  chunks.reduce((offset, c) => (all.set(c, offset), offset + c.length), 0);
  return all;
}

async function writeAll(out: typeof Deno.stdout, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  for (let done = 0; done < bytes.length;) done += await out.write(bytes.subarray(done));
}
