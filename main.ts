// Coil's one executable: picks its mode and loads only that mode's code, so the CNI path stays
// free of npm packages and FFI (a static import of etcd3 alone costs ~85 ms of start-up).

if (Deno.env.get("CNI_COMMAND") !== undefined) {
  const { runCni } = await import("./cni/main.ts");
  Deno.exit(await runCni());
}

const invokedAs = Deno.execPath().split("/").pop();
const args = invokedAs === "coild" ? ["daemon", ...Deno.args] : Deno.args;
if (args[0] === "daemon") {
  const { runDaemon } = await import("./daemon/main.ts");
  Deno.exit(await runDaemon(args.slice(1)));
}
const { runAdmin } = await import("./ipam/admin/main.ts");
Deno.exit(await runAdmin(args));
