// `coil install` and `coil uninstall`: commander wiring and the error policy of the admin CLI (one
// line `coil: <message>` on stderr; exit 1 for failures, 2 for usage errors).

import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { DEFAULT_SOCKET } from "../../cni/api.ts";
import { CniError } from "../../cni/errors.ts";
import { parseNetConf } from "../../cni/netconf.ts";
import {
  addCoildSettingOptions,
  coildSettings,
  renderEnvironmentFile,
  settingValues,
  validateSettings,
} from "./coild_settings.ts";
import { type ConflistOptions, renderConflist } from "./conflist.ts";
import { installedExecutable } from "./executable.ts";
import { lstatOrUndefined } from "./files.ts";
import { install } from "./install.ts";
import {
  CNI_CONF_DIR,
  DEFAULT_CONFLIST_NAME,
  ENVIRONMENT_PATH,
  EXECUTABLE_PATH,
  underRoot,
} from "./paths.ts";
import { uninstall } from "./uninstall.ts";

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;
const DEFAULT_NETWORK_NAME = "k8s-pod-network";
const CONFLIST_NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9._-]*\.conflist$/;
/** Where runtimes look for CNI plugins: the usual default, and Debian's containernetworking-plugins. */
const PORTMAP_DIRS = ["/opt/cni/bin", "/usr/lib/cni"];

/** A usage error found after parsing (commander's own ones are CommanderErrors). */
class UsageError extends Error {}

/**
 * Runs `coil install …` or `coil uninstall …`.
 * @param args the arguments after the program name, starting with `install` or `uninstall`.
 * @returns the exit code: 0 success, 1 failure, 2 usage error.
 */
export async function runInstaller(args: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(args, { from: "user" });
    return 0;
  } catch (err) {
    return report(err);
  }
}

function buildProgram(): Command {
  const program = new Command("coil")
    .exitOverride()
    .configureOutput({ outputError: () => {} })
    .showHelpAfterError(false);
  const settings = coildSettings();
  const installCommand = program.command("install")
    .description(
      `Install Coil on this node (as root): this executable to ${EXECUTABLE_PATH}, the coild link, ` +
        `the coild.service unit, ${ENVIRONMENT_PATH} with the coild settings given, and a conflist in ` +
        `${CNI_CONF_DIR} (written last; no other file there is touched). Re-running changes only what ` +
        `differs; uninstall removes exactly what install wrote.`,
    )
    .addOption(rootOption())
    .option("--dry-run", "print what would change, change nothing")
    .option("--force", `replace an existing ${ENVIRONMENT_PATH} (kept otherwise)`)
    .option("--now", "enable and start coild (when systemd runs)")
    .addOption(
      new Option("--conflist-name <file>", `conflist file name in ${CNI_CONF_DIR}`)
        .argParser(conflistName).default(DEFAULT_CONFLIST_NAME),
    )
    .option("--network-name <name>", "the CNI network name", DEFAULT_NETWORK_NAME)
    .addOption(new Option("--mtu <bytes>", "the pods' MTU (default: coild uses the uplink's)").argParser(mtu))
    .option("--chain-portmap", "chain portmap after coil, for hostPort (default)")
    .option("--no-chain-portmap", "do not chain portmap")
    .allowExcessArguments(false)
    .action(async (opts: Record<string, unknown>) => {
      await runInstall(opts, settings);
    });
  addCoildSettingOptions(installCommand, settings, `coild settings (written to ${ENVIRONMENT_PATH}):`);
  program.command("uninstall")
    .description(
      "Remove what coil install wrote (its manifest lists it): other files and Coil's state in etcd stay",
    )
    .addOption(rootOption())
    .option("--dry-run", "print what would be removed, remove nothing")
    .allowExcessArguments(false)
    .action(async (opts: { root: string; dryRun?: boolean }) => {
      const root = await stagingRoot(opts.root);
      await uninstall({ root, dryRun: Boolean(opts.dryRun) }, (line) => console.log(line));
    });
  return program;
}

async function runInstall(opts: Record<string, unknown>, settings: ReturnType<typeof coildSettings>) {
  const root = await stagingRoot(opts.root as string);
  const values = settingValues(settings, opts);
  try {
    await validateSettings(settings, values);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const conflist: ConflistOptions = {
    networkName: opts.networkName as string,
    socket: values.get("COIL_SOCKET") ?? DEFAULT_SOCKET,
    mtu: opts.mtu as number | undefined,
    chainPortmap: opts.chainPortmap !== false,
  };
  checkConflist(conflist);
  if (conflist.chainPortmap && !await portmapFound(root)) {
    console.error(
      `coil: warning: no portmap plugin in ${PORTMAP_DIRS.join(" or ")}: ADD fails until the runtime ` +
        `finds one (Debian: containernetworking-plugins), or install with --no-chain-portmap`,
    );
  }
  await install({
    root,
    dryRun: Boolean(opts.dryRun),
    force: Boolean(opts.force),
    now: Boolean(opts.now),
    executable: await installedExecutable(),
    conflistName: opts.conflistName as string,
    conflist,
    environment: renderEnvironmentFile(values),
  }, (line) => console.log(line));
}

/** The conflist's coil entry as a runtime passes it, checked by the CNI binary's own parser. */
function checkConflist(options: ConflistOptions): void {
  const list = JSON.parse(renderConflist(options));
  const conf = { cniVersion: list.cniVersion, name: list.name, ...list.plugins[0] };
  try {
    parseNetConf(new TextEncoder().encode(JSON.stringify(conf)));
  } catch (err) {
    if (err instanceof CniError) throw new UsageError(err.message);
    throw err;
  }
}

async function portmapFound(root: string): Promise<boolean> {
  for (const dir of PORTMAP_DIRS) {
    if ((await lstatOrUndefined(underRoot(root, `${dir}/portmap`))) !== undefined) return true;
  }
  return false;
}

function rootOption(): Option {
  return new Option("--root <dir>", "install under this staging root instead of /").default("/");
}

/** `dir` as an absolute path; outside a staging root only root may install. */
async function stagingRoot(dir: string): Promise<string> {
  let root: string;
  try {
    root = await Deno.realPath(dir);
  } catch (err) {
    throw new UsageError(`--root ${dir}: ${(err as Error).message}`);
  }
  if (!(await Deno.stat(root)).isDirectory) throw new UsageError(`--root ${dir} is not a directory`);
  if (root === "/" && Deno.uid() !== 0) throw new Error("Installing on the node needs root (or --root DIR)");
  return root;
}

function conflistName(text: string): string {
  if (!CONFLIST_NAME_REGEXP.test(text)) {
    throw new InvalidArgumentError(
      `"${text}" is not a file name ending in .conflist, e.g. ${DEFAULT_CONFLIST_NAME}`,
    );
  }
  return text;
}

function mtu(text: string): number {
  // 68: the smallest IPv4 MTU (RFC 791); 65535: the largest the kernel allows on a veth.
  if (!/^[1-9][0-9]{1,4}$/.test(text) || Number(text) < 68 || Number(text) > 65535) {
    throw new InvalidArgumentError(`"${text}" is not an MTU from 68 to 65535`);
  }
  return Number(text);
}

function report(err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.code === "commander.helpDisplayed" || err.code === "commander.help") return 0;
    console.error(`coil: ${err.message.replace(/^error: /, "").replaceAll("\n", " ")} (see --help)`);
    return EXIT_USAGE;
  }
  if (err instanceof UsageError) {
    console.error(`coil: ${err.message}`);
    return EXIT_USAGE;
  }
  console.error(`coil: ${err instanceof Error ? err.message : String(err)}`);
  return EXIT_FAILURE;
}
