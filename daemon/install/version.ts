// `coil version` and `coil --version`: which Coil this executable is and what runs it. Kept beside
// the installer because both describe the executable itself; loads no npm package.

import pkg from "../../package.json" with { type: "json" };

export interface VersionInfo {
  version: string;
  deno: string;
  v8: string;
  typescript: string;
  /** Built by `deno compile`, or main.ts run by deno (scripts/coil). */
  compiled: boolean;
  target: string;
}

export function versionInfo(): VersionInfo {
  return {
    version: pkg.version,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    compiled: Deno.build.standalone,
    target: Deno.build.target,
  };
}

/**
 * Prints the version: one line, or with `--json` one JSON object.
 * @param args the arguments after `version` (or `--version`).
 * @returns the exit code: 0, or 2 for an unknown argument.
 */
export function runVersion(args: string[]): number {
  const unknown = args.filter((a) => a !== "--json");
  if (unknown.length > 0) {
    console.error(`coil: unknown argument to version: ${unknown.join(" ")} (only --json)`);
    return 2;
  }
  const info = versionInfo();
  if (args.includes("--json")) {
    console.log(JSON.stringify(info));
  } else {
    console.log(
      `coil ${info.version} (${info.compiled ? "compiled" : "deno run"}, ${info.target}; ` +
        `deno ${info.deno}, v8 ${info.v8}, typescript ${info.typescript})`,
    );
  }
  return 0;
}
