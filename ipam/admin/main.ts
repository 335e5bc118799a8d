// The admin CLI (`coil pool …`, `coil node …`, `coil ip …`, `coil status`): commander wiring and
// the error policy: one line `coil: <message>` on stderr, exit 1 for failures and 2 for usage errors.

import { Command, CommanderError } from "commander";
import { IpamError } from "../errors.ts";
import { registerIpCommands } from "./ip_commands.ts";
import { registerNodeCommands } from "./node_commands.ts";
import { registerPoolCommands } from "./pool_commands.ts";
import { registerStatusCommand } from "./status_command.ts";

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

/**
 * Runs one admin command.
 * @param args the arguments after the program name.
 * @returns the exit code: 0 success, 1 failure, 2 usage error. Never throws for expected errors.
 */
export async function runAdmin(args: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(args, { from: "user" });
    return 0;
  } catch (err) {
    return report(err);
  }
}

function buildProgram(): Command {
  // Set before any subcommand is added: `.command()` copies these settings into each subcommand.
  const program = new Command("coil")
    .description(
      "Coil: pod IP address management and intra-node routing for BGP-routed\n" +
        "Kubernetes clusters. These admin commands read and change Coil's state in\n" +
        "etcd directly.",
    )
    .exitOverride()
    .configureOutput({
      writeOut: (text) => writeAll(Deno.stdout, text),
      writeErr: (text) => writeAll(Deno.stderr, text),
      // Errors are printed once, by report(), in Coil's format.
      outputError: () => {},
    });
  registerPoolCommands(program);
  registerNodeCommands(program);
  registerIpCommands(program);
  registerStatusCommand(program);
  program.addHelpText(
    "after",
    `
Node daemon:
  coil daemon [options]  run coild, the node daemon (see "coil daemon --help");
                         the binary also runs it when invoked under the name coild
  coil install [options] install this executable, coild's unit and settings and
                         the CNI network configuration on this node (as root)
  coil uninstall         remove exactly what coil install wrote
  coil version           the version of Coil, Deno and V8 (also --version)

Every command above takes the etcd options (endpoints, key prefix, TLS, user,
timeout), each also read from a COIL_ETCD_* variable; see "coil status --help".
With CNI_COMMAND set in the environment, the binary acts as the CNI plugin.`,
  );
  return program;
}

function report(err: unknown): number {
  if (err instanceof CommanderError) {
    // Help asked for (exit 0), or shown because a command was missing (a usage error).
    if (err.code === "commander.helpDisplayed" || err.code === "commander.version") return 0;
    if (err.code === "commander.help") return EXIT_USAGE;
    printError(`${err.message.replace(/^error: /, "").replaceAll("\n", " ")} (see --help)`);
    return EXIT_USAGE;
  }
  if (err instanceof IpamError) {
    printError(err.message);
    return EXIT_FAILURE;
  }
  // A bug: keep the stack, it is the only clue.
  printError(`Internal error: ${err instanceof Error ? err.stack : String(err)}`);
  return EXIT_FAILURE;
}

function printError(message: string): void {
  writeAll(Deno.stderr, `coil: ${message}\n`);
}

function writeAll(stream: typeof Deno.stdout, text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let done = 0; done < bytes.length;) done += stream.writeSync(bytes.subarray(done));
}
