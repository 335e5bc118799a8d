// What the lab needs before it starts: root (it creates network namespaces) and the programs it runs,
// each missing one named together with the command that installs it.

/** The programs the lab runs, with the Debian package of each (scripts/setup installs them). */
const PROGRAMS: Record<string, string> = {
  ip: "iproute2",
  bird: "bird2",
  birdc: "bird2",
  etcd: "etcd-server",
  ping: "iputils-ping",
  setsid: "util-linux",
  sysctl: "procps",
};

/** Throws unless the process runs as root, saying how to run the lab instead. */
export function checkRoot(): void {
  if (Deno.uid() !== 0) {
    throw new Error("The lab needs root to create network namespaces: run it with sudo");
  }
}

/** Throws naming every program missing from PATH and its package. */
export async function checkPrograms(): Promise<void> {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter((dir) => dir !== "");
  const missing: string[] = [];
  for (const [program, pkg] of Object.entries(PROGRAMS)) {
    if (!await onPath(program, dirs)) missing.push(`${program} (${pkg})`);
  }
  if (missing.length > 0) {
    throw new Error(`Programs ${missing.join(", ")} are missing: install them with sudo scripts/setup`);
  }
}

async function onPath(program: string, dirs: string[]): Promise<boolean> {
  for (const dir of dirs) {
    const stat = await Deno.stat(`${dir}/${program}`).catch(() => undefined);
    if (stat?.isFile && (stat.mode ?? 0) & 0o111) return true;
  }
  return false;
}
