// What `coil install` puts at /opt/cni/bin/coil: a copy of the running executable when it is the
// compiled one; from a checkout (scripts/coil runs main.ts with deno), a launcher that execs this
// checkout's scripts/coil, so that the whole installed path can be exercised without `deno compile`.

import { fileURLToPath } from "node:url";

export interface InstalledExecutable {
  bytes: Uint8Array;
  /** What the bytes are, for the admin: the compiled file's path, or "launcher for <checkout>". */
  origin: string;
}

/** The checkout's scripts/coil (meaningful when not compiled). */
export const CHECKOUT_COIL = fileURLToPath(new URL("../../scripts/coil", import.meta.url));

/** True in an executable built by `deno compile`, false under `deno run` (scripts/coil). */
export function isCompiled(): boolean {
  return Deno.build.standalone;
}

/**
 * The bytes to install. @throws {Deno.errors.NotFound} when the running executable cannot be read back.
 */
export async function installedExecutable(): Promise<InstalledExecutable> {
  if (isCompiled()) {
    const path = Deno.execPath();
    return { bytes: await Deno.readFile(path), origin: path };
  }
  return {
    bytes: new TextEncoder().encode(launcherScript(CHECKOUT_COIL)),
    origin: `launcher for ${CHECKOUT_COIL}`,
  };
}

/**
 * A launcher that runs `coil` from a checkout: under the name coild (the installed symlink) it starts
 * the daemon, as the compiled binary does; its own path is no guide, since it is not the checkout's.
 */
export function launcherScript(checkoutCoil: string): string {
  const quoted = `'${checkoutCoil.replaceAll("'", `'\\''`)}'`;
  return `#!/bin/sh
# Coil launcher written by \`coil install\` run from a checkout (not a compiled coil): runs that
# checkout's main.ts as the compiled executable would. Replace it with dist/coil for production.
case "\${0##*/}" in
  coild) exec ${quoted} daemon "$@" ;;
esac
exec ${quoted} "$@"
`;
}
