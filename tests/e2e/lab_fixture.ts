// Shared by the lab's end-to-end tests: `scripts/lab` run as a person runs it, and a lab under a
// unique name that is always taken down, with a check that nothing of it is left.

import assert from "node:assert/strict";
import { type LabPlan, planLab } from "../../scripts/lab.d/plan.ts";
import { run } from "../../scripts/lab.d/run.ts";
import { type LabState, loadState } from "../../scripts/lab.d/state.ts";
import { listLabNetns } from "../../scripts/lab.d/topology.ts";

export const LAB = new URL("../../scripts/lab", import.meta.url).pathname;

/** A lab name no other test uses: namespaces `coil-lab-t<8 hex>-*`. */
export function labName(): string {
  return `t${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
}

/** Runs `scripts/lab args…` and returns stdout + stderr. Throws (with the output) unless it exits 0. */
export async function lab(args: string[]): Promise<string> {
  const out = await run(LAB, args, { check: false });
  const text = out.stdout + out.stderr;
  assert.equal(out.code, 0, `scripts/lab ${args.join(" ")} exited ${out.code}:\n${text}`);
  return text;
}

/**
 * Runs `scripts/lab <command…> --name <unique>` (up or demo), hands the plan, the recorded state and
 * the command's output to `body`, and always runs `down`, checking no namespace or state is left.
 */
export async function withLab(
  command: string[],
  body: (plan: LabPlan, state: LabState, output: string) => Promise<void>,
): Promise<void> {
  const name = labName();
  const stateDir = planLab({ name, nodes: 1, pods: 0, dualStack: false, coil: false }).stateDir;
  try {
    const output = await lab([...command, "--name", name]);
    const loaded = await loadState(name);
    assert.ok(loaded, `lab.json of lab ${name} is missing`);
    await body(loaded.plan, loaded.state, output);
  } finally {
    const out = await lab(["down", "--name", name]);
    assert.doesNotMatch(out, /stopped 0 process/, "down found no process of the lab");
  }
  assert.deepEqual(await listLabNetns(name), []);
  await assert.rejects(Deno.stat(stateDir), Deno.errors.NotFound);
}
