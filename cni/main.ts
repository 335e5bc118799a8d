// CNI mode's entry: the dispatcher wired to the process's environment, stdin and stdout. Nothing
// reachable from here imports an npm package or FFI, so an exec costs little more than deno's start.

import { add, check, del, gc, status } from "./commands.ts";
import { dispatch } from "./skel.ts";

/** Runs the CNI call described by the environment and stdin; returns the process exit code. */
export async function runCni(): Promise<number> {
  return await dispatch({
    getenv: (name) => Deno.env.get(name),
    readStdin: async () => new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer()),
    writeStdout: (text) => writeAll(Deno.stdout, text),
    writeStderr: (text) => writeAll(Deno.stderr, text),
  }, { add, del, check, gc, status });
}

async function writeAll(out: typeof Deno.stdout, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  for (let done = 0; done < bytes.length;) done += await out.write(bytes.subarray(done));
}
