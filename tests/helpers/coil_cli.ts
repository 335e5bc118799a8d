// Runs the admin CLI as an operator does: `scripts/coil …` as its own process, with the test's env minus
// anything that would change its mode or its etcd (COIL_*, CNI_COMMAND), plus what the caller sets.

import assert from "node:assert/strict";
import { COIL } from "./coild.ts";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `coil args…` with `env` added to the cleaned environment and no stdin; waits for it to exit.
 * @throws {DOMException} when it is still running after 60 s (a hung CLI, not a timing assertion).
 */
export async function runCoilCli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  const inherited = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) =>
      !name.startsWith("COIL_") && name !== "CNI_COMMAND"
    ),
  );
  const out = await new Deno.Command(COIL, {
    args,
    env: { ...inherited, ...env },
    clearEnv: true,
    stdin: "null",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Asserts that the CLI succeeded with nothing on stderr and returns its stdout. @throws AssertionError */
export function assertCliOk(run: CliRun): string {
  assert.equal(run.code, 0, `exit ${run.code}, stderr: ${run.stderr}`);
  assert.equal(run.stderr, "");
  return run.stdout;
}
