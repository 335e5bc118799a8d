// `scripts/lab down`: removes everything a lab made, whatever state `up` left it in: the processes in
// its namespaces or named by its pid files, the namespaces (and with them every link), the state dir.

import { defaultStateRoot, labStateDir } from "./plan.ts";
import { netnsPids, pidFromFile, stopProcesses } from "./processes.ts";
import { step } from "./run.ts";
import { deleteNetns, listLabNetns } from "./topology.ts";

/** What `down` removed. */
export interface DownReport {
  processes: number;
  namespaces: string[];
}

/** Tears lab `name` down. Idempotent: a lab that does not exist gives an empty report. */
export async function down(name: string, stateRoot = defaultStateRoot()): Promise<DownReport> {
  const stateDir = labStateDir(name, stateRoot);
  step(`Removing lab "${name}"`);
  const namespaces = await listLabNetns(name);
  const pids = new Set<number>();
  for (const netns of namespaces) for (const pid of await netnsPids(netns)) pids.add(pid);
  for (const pidFile of await pidFiles(stateDir)) {
    const pid = await pidFromFile(pidFile, `${stateDir}/`);
    if (pid !== undefined) pids.add(pid);
  }
  await stopProcesses([...pids]);
  for (const netns of namespaces) await deleteNetns(netns);
  await Deno.remove(stateDir, { recursive: true }).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  console.log(
    `    stopped ${pids.size} process(es), deleted ${namespaces.length} namespace(s), removed ${stateDir}`,
  );
  return { processes: pids.size, namespaces };
}

async function pidFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) found.push(...await pidFiles(path));
      else if (entry.name.endsWith(".pid")) found.push(path);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return found;
}
