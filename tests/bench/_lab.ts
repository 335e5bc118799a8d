// The BIRD lab (scripts/lab) for the benchmarks that measure the fabric: run a lab command, and whether
// BIRD is there to run it with.

import { ROOT } from "./_exec.ts";

const LAB = `${ROOT}scripts/lab`;

/** Runs `scripts/lab <args>`. @throws {Error} with the end of its output when it fails. */
export async function lab(args: string[]): Promise<void> {
  const out = await new Deno.Command(LAB, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    throw new Error(`scripts/lab ${args.join(" ")} failed (exit ${out.code}):\n${text.slice(-3000)}`);
  }
}

/** Whether BIRD is installed (the lab needs it). */
export async function birdInstalled(): Promise<boolean> {
  try {
    return (await new Deno.Command("bird", { args: ["--version"], stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}
