// The runtime's own exec timeout: containerd and CRI-O run a CNI plugin under their request's deadline
// and SIGKILL it when that passes. A script that execs coil under `timeout -s KILL` does the same.

import { COIL } from "../helpers/coild.ts";

/** A plugin path for Network.plugin (_runtime.ts); dispose removes it. */
export interface KillingPlugin extends AsyncDisposable {
  path: string;
}

/** Writes a plugin that runs coil and SIGKILLs it after `ms` (coil's own deadline may come first). */
export async function pluginWithExecTimeout(ms: number): Promise<KillingPlugin> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-exec-timeout-" });
  const path = `${dir}/coil`;
  // scripts/coil execs deno, so the process `timeout` kills is coil itself.
  await Deno.writeTextFile(path, `#!/bin/sh\nexec timeout -s KILL ${ms / 1000}s ${COIL}\n`, { mode: 0o755 });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}
