// `scripts/lab`: a multi-node Coil lab on one machine (namespaces, a BGP router and nodes running
// BIRD 2, etcd, coild and CNI pods). Parses the command line and runs up, status, ping or down.

import { parseArgs } from "node:util";
import { down } from "./down.ts";
import { DEFAULT_LAB_NAME } from "./plan.ts";
import { pingAll, printPingReport } from "./ping.ts";
import { loadState } from "./state.ts";
import { printStatus } from "./status.ts";
import { up } from "./up.ts";

const USAGE = `Usage: scripts/lab COMMAND [options]

Commands:
  up       build the lab (tears down an existing one of the same name first)
  status   pods, blocks, and the routes the router learned
  ping     every pod pings every pod on other nodes; exit 1 if any fails
  down     remove everything the lab made (idempotent, also after a failed up)

Options:
  --nodes N       nodes (default 2)                                  [up]
  --pods M        pods per node (default 2)                          [up]
  --dual-stack    IPv4 and IPv6                                      [up]
  --no-coil       static blocks and pods instead of coild and CNI   [up]
  --name NAME     lab name: namespaces coil-lab-NAME-* (default: coil-lab-*)

State (configs, logs, sockets) lives in $COIL_LAB_STATE_DIR/NAME (default /run/coil-lab/NAME).`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      nodes: { type: "string", default: "2" },
      pods: { type: "string", default: "2" },
      "dual-stack": { type: "boolean", default: false },
      "no-coil": { type: "boolean", default: false },
      name: { type: "string", default: DEFAULT_LAB_NAME },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const command = positionals[0];
  if (values.help || command === undefined || positionals.length > 1) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const name = values.name;
  switch (command) {
    case "up": {
      const plan = await up({
        name,
        nodes: count("--nodes", values.nodes),
        pods: count("--pods", values.pods),
        dualStack: values["dual-stack"],
        coil: !values["no-coil"],
      });
      const loaded = await loadState(name);
      if (loaded) await printStatus(plan, loaded.state);
      return 0;
    }
    case "status": {
      const loaded = await loadState(name);
      if (!loaded) return notUp(name);
      await printStatus(loaded.plan, loaded.state);
      return 0;
    }
    case "ping": {
      const loaded = await loadState(name);
      if (!loaded) return notUp(name);
      const results = await pingAll(loaded.state.pods);
      return printPingReport(loaded.state.pods, results) ? 0 : 1;
    }
    case "down":
      await down(name);
      return 0;
    default:
      console.error(`Unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

function count(flag: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new Error(`Option ${flag} "${text}" is not a number`);
  return Number(text);
}

function notUp(name: string): number {
  console.error(`Lab "${name}" is not up (no state): run scripts/lab up`);
  return 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    console.error(`scripts/lab: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
