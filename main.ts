// Coil's one executable: picks its mode and loads only that mode's code, so the CNI path stays
// free of npm packages and FFI (a static import of etcd3 alone costs ~85 ms of start-up).

// The daemon and the admin CLI are imported through a computed specifier: deno loads the module graph
// of every literal dynamic import at start-up, which would cost each CNI exec ~2.5 ms for code it never
// runs. `deno compile` embeds them with --include (scripts/compile).
function load(path: string) {
  return import(new URL(path, import.meta.url).href);
}

if (Deno.env.get("CNI_COMMAND") !== undefined) {
  const { runCni } = await import("./cni/main.ts");
  Deno.exit(await runCni());
}

// argv[0], not Deno.execPath(): the executable reached through a symlink named coild must see that name.
const { argv0 } = (await import("node:process")).default;
const args = argv0.split("/").pop() === "coild" ? ["daemon", ...Deno.args] : Deno.args;
if (args[0] === "daemon") {
  const { runDaemon } = await load("./daemon/main.ts");
  Deno.exit(await runDaemon(args.slice(1)));
}
if (args[0] === "install" || args[0] === "uninstall") {
  const { runInstaller } = await load("./daemon/install/main.ts");
  Deno.exit(await runInstaller(args));
}
if (args[0] === "version" || args[0] === "--version") {
  const { runVersion } = await load("./daemon/install/version.ts");
  Deno.exit(runVersion(args.slice(1)));
}
const { runAdmin } = await load("./ipam/admin/main.ts");
Deno.exit(await runAdmin(args));
