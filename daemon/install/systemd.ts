// Talking to systemd after install and uninstall: only on the live root of a machine that systemd
// booted; otherwise (a staging root, another init) the admin is told which commands to run.

/**
 * True when `root` is the running system and PID 1 is systemd: the test sd_booted(3) makes, whether
 * /run/systemd/system exists.
 */
export async function systemdManages(root: string): Promise<boolean> {
  if (root !== "/") return false;
  try {
    return (await Deno.lstat("/run/systemd/system")).isDirectory;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Runs `systemctl args…`, its output passed through.
 * @throws {Error} naming the command, with its exit code or why it could not run (the executable
 *   needs --allow-run=systemctl).
 */
export async function systemctl(args: string[]): Promise<void> {
  const command = `systemctl ${args.join(" ")}`;
  let status: Deno.CommandStatus;
  try {
    status = await new Deno.Command("systemctl", { args, stdin: "null" }).spawn().status;
  } catch (err) {
    throw new Error(`Cannot run ${command}: ${(err as Error).message}`, { cause: err });
  }
  if (!status.success) throw new Error(`${command} failed with exit code ${status.code}`);
}
