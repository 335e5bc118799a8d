// coild's settings as `coil install` takes them: every `coil daemon` flag that has a COIL_* variable,
// mirrored from daemon/config.ts (so a new coild flag is installable at once), validated by coild's own
// parser and written as the environment file that the unit's EnvironmentFile= reads.

import { Command, CommanderError, Option } from "commander";
import { daemonCommand } from "../config.ts";

/** One coild flag and the variable that carries it in the environment file. */
export interface CoildSetting {
  /** e.g. `--etcd-endpoints <urls>`. */
  flags: string;
  /** e.g. `--etcd-endpoints`. */
  long: string;
  /** e.g. `COIL_ETCD_ENDPOINTS`. */
  variable: string;
  description: string;
  /** A switch without a value (`--verbose`). */
  boolean: boolean;
  /** commander's key for the value: `etcdEndpoints`. */
  key: string;
}

/** The flags of `coil daemon` that can be set from the environment, in its --help order. */
export function coildSettings(): CoildSetting[] {
  return daemonCommand(() => Promise.resolve()).options
    .filter((option) => option.envVar !== undefined && option.long !== undefined)
    .map((option) => ({
      flags: option.flags,
      long: option.long!,
      variable: option.envVar!,
      description: option.description,
      boolean: !option.required && !option.optional,
      key: option.attributeName(),
    }));
}

/**
 * Adds the settings to `command` as options without defaults (only what the admin gives is written),
 * each also read from its COIL_* variable, like every other coil command.
 */
export function addCoildSettingOptions(command: Command, settings: CoildSetting[], group: string): void {
  for (const setting of settings) {
    command.addOption(
      new Option(setting.flags, setting.description).env(setting.variable).helpGroup(group),
    );
  }
}

/** The values given, by variable name; booleans as "1". Raw text: coild parses it again when it starts. */
export function settingValues(
  settings: CoildSetting[],
  opts: Record<string, unknown>,
): Map<string, string> {
  const values = new Map<string, string>();
  for (const setting of settings) {
    const value = opts[setting.key];
    if (value === undefined || value === false) continue;
    values.set(setting.variable, setting.boolean ? "1" : String(value));
  }
  return values;
}

/**
 * Checks the values with coild's own parser, as coild will read them from the environment file.
 * @throws {Error} naming the flag and the cause when coild would refuse to start with them.
 */
export async function validateSettings(settings: CoildSetting[], values: Map<string, string>): Promise<void> {
  const args: string[] = [];
  for (const setting of settings) {
    const value = values.get(setting.variable);
    if (value === undefined) continue;
    args.push(...(setting.boolean ? [setting.long] : [setting.long, value]));
  }
  const command = daemonCommand(() => Promise.resolve())
    .exitOverride()
    .configureOutput({ writeOut: () => {}, writeErr: () => {}, outputError: () => {} });
  try {
    await command.parseAsync(args, { from: "user" });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    throw new Error(`coild would refuse these settings: ${err.message.replace(/^error: /, "")}`);
  }
}

/**
 * The environment file: one `NAME="value"` line per setting, in a quoting that systemd's
 * EnvironmentFile= and a POSIX shell (`. /etc/default/coild`) read alike: inside double quotes both
 * take a backslash before `"`, `\`, `$` and a backquote as that character, and expand nothing else.
 * @throws {Error} for a value holding a control character (a line break would end the assignment).
 */
export function renderEnvironmentFile(values: Map<string, string>): string {
  const lines = [
    "# coild's settings, read by coild.service (EnvironmentFile=): written by `coil install` from its flags,",
    "# kept by later installs unless --force. Each variable is a `coil daemon` flag (coil daemon --help).",
    "# This file may hold the etcd password: keep it mode 0600.",
  ];
  for (const [name, value] of values) {
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x1f\x7f]/.test(value)) {
      throw new Error(`Setting ${name} holds a control character: the environment file cannot carry it`);
    }
    lines.push(`${name}="${value.replace(/["\\$`]/g, "\\$&")}"`);
  }
  return lines.join("\n") + "\n";
}
