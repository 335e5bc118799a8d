// `scripts/lab`: a multi-node Coil lab on one machine (namespaces, a BGP router and nodes running
// BIRD 2, etcd, coild and CNI pods). Parses the command line and runs the command.

import { parseArgs } from "node:util";
import { down } from "./down.ts";
import { printNextSteps } from "./next_steps.ts";
import { DEFAULT_LAB_NAME, type LabOptions } from "./plan.ts";
import { pingAll, printPingReport } from "./ping.ts";
import { addPodsCommand, deletePodsCommand } from "./pod_commands.ts";
import { checkRoot } from "./preflight.ts";
import { step } from "./run.ts";
import { loadState } from "./state.ts";
import { printStatus } from "./status.ts";
import { up } from "./up.ts";

const USAGE = `Usage: sudo scripts/lab COMMAND [options]

Commands:
  demo                  scripts/setup, then up --dual-stack, status and ping: the tour
  up                    build the lab (tears down an existing one of the same name first)
  status                pods, blocks, and the routes the router learned
  ping                  every pod pings every pod on other nodes; exit 1 if any fails
  add-pods NODE [N]     N more pods (default 1) on NODE (e.g. node1) with CNI ADD
  del-pods POD...       delete pods (e.g. pod-node1-1) with CNI DEL
  down                  remove everything the lab made (idempotent, also after a failed up)

Options:
  --nodes N          nodes (default 2)                                 [up, demo]
  --pods M           pods per node (default 2)                         [up, demo]
  --dual-stack       IPv4 and IPv6 (demo always is)                    [up]
  --no-coil          static blocks and pods instead of coild and CNI  [up, demo]
  --namespace NS     Kubernetes namespace of new pods (default: default; dmz has its own pool) [add-pods]
  --name NAME        lab name: namespaces coil-lab-NAME-* (default: coil-lab-*)

State (configs, logs, sockets) lives in $COIL_LAB_STATE_DIR/NAME (default /run/coil-lab/NAME).`;

/** Commands and how many positional arguments each takes (after the command). */
const ARITY: Record<string, [number, number]> = {
  demo: [0, 0],
  up: [0, 0],
  status: [0, 0],
  ping: [0, 0],
  "add-pods": [1, 2],
  "del-pods": [1, Infinity],
  down: [0, 0],
};

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      nodes: { type: "string", default: "2" },
      pods: { type: "string", default: "2" },
      "dual-stack": { type: "boolean", default: false },
      "no-coil": { type: "boolean", default: false },
      namespace: { type: "string", default: "default" },
      name: { type: "string", default: DEFAULT_LAB_NAME },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const [command, ...args] = positionals;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const arity = ARITY[command ?? ""];
  if (arity === undefined || args.length < arity[0] || args.length > arity[1]) {
    console.error(command === undefined ? USAGE : `Command "${command}" is unknown or misused\n\n${USAGE}`);
    return 2;
  }
  checkRoot();
  const name = values.name;
  const options = (dualStack: boolean): LabOptions => ({
    name,
    nodes: count("Option --nodes", values.nodes),
    pods: count("Option --pods", values.pods),
    dualStack,
    coil: !values["no-coil"],
  });
  switch (command) {
    case "demo":
    case "up": {
      const plan = await up(options(command === "demo" || values["dual-stack"]));
      const { state } = (await loadState(name))!;
      await printStatus(plan, state);
      let ok = true;
      if (command === "demo") {
        step("Every pod pings every pod on the other nodes (scripts/lab ping)");
        ok = printPingReport(state.pods, await pingAll(state.pods));
      }
      printNextSteps(plan, state);
      return ok ? 0 : 1;
    }
    case "down":
      await down(name);
      return 0;
  }
  const loaded = await loadState(name);
  if (!loaded) {
    console.error(`Lab "${name}" is not up (no state): run sudo scripts/lab up${nameFlag(name)}`);
    return 1;
  }
  const { plan, state } = loaded;
  switch (command) {
    case "status":
      await printStatus(plan, state);
      return 0;
    case "ping":
      return printPingReport(state.pods, await pingAll(state.pods)) ? 0 : 1;
    case "add-pods":
      await addPodsCommand(plan, state, args[0], count("Pod count", args[1] ?? "1"), values.namespace);
      return 0;
    case "del-pods":
      await deletePodsCommand(plan, state, args);
      return 0;
  }
  throw new Error(`Command "${command}" has no handler`);
}

function count(what: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new Error(`${what} "${text}" is not a number`);
  return Number(text);
}

function nameFlag(name: string): string {
  return name === DEFAULT_LAB_NAME ? "" : ` --name ${name}`;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    console.error(`scripts/lab: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
