// Debian's podman (4.3, CNI backend) as a test's container runtime, run inside a node netns with its own
// configuration, storage, runc state and cgroup parent, so that the machine's own podman setup is untouched.

import type { TestNetns } from "../helpers/netns.ts";

/** Where libcni caches each attachment's result (podman 4.3 cannot move it): `<network>-<id>-<ifname>`. */
export const CNI_CACHE_DIR = "/var/lib/cni/results";
const BUSYBOX = "/bin/busybox";
const RUNC = "/usr/sbin/runc";
const APPLETS = ["sh", "sleep", "ping", "ip"];

export interface PodmanOptions {
  /** podman runs in this netns (the node): CNI plugins see it as the host side. */
  node: TestNetns;
  /** Directories searched for CNI plugins (podman's `cni_plugin_dirs`). */
  cniPluginDirs: string[];
}

export interface TestPodman extends AsyncDisposable {
  /** The CNI config dir podman reads networks from: write conflists here. */
  confDir: string;
  /** Runs `podman args…` in the node netns and returns its stdout. @throws {Error} on non-zero exit. */
  podman(args: string[]): Promise<string>;
  /**
   * Starts a detached busybox container on `network` that sleeps for two minutes (so that one a crashed
   * test leaves behind ends by itself), and returns its full ID.
   * @throws {Error} when podman fails.
   */
  runBusybox(name: string, network: string, extraArgs?: string[]): Promise<string>;
  /** `podman inspect` of one container. */
  inspect(name: string): Promise<ContainerInspect>;
}

/** The part of `podman inspect` the tests read. */
export interface ContainerInspect {
  Id: string;
  State: { Status: string };
  NetworkSettings: {
    SandboxKey: string;
    Networks?: Record<string, { IPAddress: string; GlobalIPv6Address: string }>;
  };
}

/** A hard resource limit of this process, from /proc/self/limits ("Max open files" …). */
async function hardLimit(name: string): Promise<number> {
  const line = (await Deno.readTextFile("/proc/self/limits")).split("\n").find((l) => l.startsWith(name));
  const hard = line?.slice(name.length).trim().split(/\s+/)[1];
  if (hard === undefined) throw new Error(`Limit "${name}" is missing from /proc/self/limits`);
  return hard === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(hard);
}

async function run(cmd: string, args: string[], env?: Record<string, string>): Promise<string> {
  const out = await new Deno.Command(cmd, { args, env, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  const decoder = new TextDecoder();
  if (!out.success) {
    // busybox prints its failures (ping's statistics) on stdout.
    const output = `${decoder.decode(out.stderr)}${decoder.decode(out.stdout)}`.trim();
    throw new Error(`Command failed: ${cmd} ${args.join(" ")}: exit ${out.code}: ${output}`);
  }
  return decoder.decode(out.stdout);
}

/** containers.conf: the settings this VM needs (see `podman` notes in issue 9) and private state paths. */
function containersConf(dir: string, confDir: string, pluginDirs: string[], nofile: number, nproc: number) {
  const list = (items: string[]) => `[${items.map((i) => JSON.stringify(i)).join(", ")}]`;
  return `[containers]
# Podman's defaults (1048576) exceed this machine's hard limits, and runc then fails to start anything.
default_ulimits = ${list([`nofile=${nofile}:${nofile}`, `nproc=${nproc}:${nproc}`])}

[network]
network_backend = "cni"
network_config_dir = ${JSON.stringify(confDir)}
cni_plugin_dirs = ${list(pluginDirs)}

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = ${JSON.stringify(`${dir}/events.log`)}
tmp_dir = ${JSON.stringify(`${dir}/tmp`)}
static_dir = ${JSON.stringify(`${dir}/storage/libpod`)}
volume_path = ${JSON.stringify(`${dir}/storage/volumes`)}

[engine.runtimes]
runc = ${list([`${dir}/runc`])}
`;
}

function storageConf(dir: string): string {
  return `[storage]
driver = "overlay"
graphroot = ${JSON.stringify(`${dir}/storage`)}
runroot = ${JSON.stringify(`${dir}/run`)}
`;
}

/** A busybox-static root filesystem: podman mounts it as an overlay (`--rootfs DIR:O`), no image needed. */
async function makeRootfs(rootfs: string): Promise<void> {
  await Deno.mkdir(`${rootfs}/bin`, { recursive: true });
  await Deno.copyFile(BUSYBOX, `${rootfs}/bin/busybox`);
  await Deno.chmod(`${rootfs}/bin/busybox`, 0o755);
  for (const applet of APPLETS) await Deno.symlink("busybox", `${rootfs}/bin/${applet}`);
}

/**
 * Prepares a private podman: temp dir with containers.conf, storage.conf, a runc launcher keeping runc's
 * state there, a rootfs and a CNI config dir. Dispose removes its containers (so their CNI DEL runs: dispose
 * it before the CNI plugin's daemon), then every mount, netns, cgroup, libcni cache file and the dir.
 */
export async function startPodman(options: PodmanOptions): Promise<TestPodman> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-podman-" });
  const id = dir.slice(dir.lastIndexOf("/") + 1);
  const confDir = `${dir}/net.d`;
  const rootfs = `${dir}/rootfs`;
  // Every container's cgroups (and conmon's) go under this parent, removed at the end; without it podman
  // leaves /sys/fs/cgroup/*/libpod_parent behind.
  const cgroupParent = `/${id}`;
  const env = {
    CONTAINERS_CONF: `${dir}/containers.conf`,
    CONTAINERS_STORAGE_CONF: `${dir}/storage.conf`,
  };
  // nsenter switches only the netns. `ip netns exec` also unshares the mount namespace and mounts a fresh
  // /sys without the cgroup hierarchies: conmon then cannot place itself, and the netns podman bind-mounts
  // under /run/netns and the storage mounts of one call would be invisible to the next.
  const podman = (args: string[]) =>
    run("nsenter", [`--net=${options.node.path}`, "--", "podman", ...args], env);

  const dispose = async () => {
    const errors: unknown[] = [];
    const attempt = async (step: () => Promise<unknown>) => {
      try {
        await step();
      } catch (err) {
        errors.push(err);
      }
    };
    const sandboxes: string[] = [];
    await attempt(async () => {
      const ids = (await podman(["ps", "-aq", "--no-trunc"])).split("\n").filter(Boolean);
      if (ids.length === 0) return;
      const inspected = JSON.parse(await podman(["inspect", ...ids])) as ContainerInspect[];
      sandboxes.push(...inspected.map((c) => c.NetworkSettings.SandboxKey).filter(Boolean));
      await podman(["rm", "-f", "-t", "0", ...ids]);
    });
    await attempt(() => unmountUnder(dir));
    for (const sandbox of sandboxes) {
      await attempt(async () => {
        if (await exists(sandbox)) {
          await run("ip", ["netns", "del", sandbox.slice(sandbox.lastIndexOf("/") + 1)]);
        }
      });
    }
    await attempt(() => removeCgroups(id));
    await attempt(() => removeCniCache(confDir));
    await attempt(() => Deno.remove(dir, { recursive: true }));
    if (errors.length > 0) {
      // The message lists the causes: `await using` may wrap this in a SuppressedError that shows no more.
      throw new AggregateError(
        errors,
        `Cleaning up podman in ${dir} failed: ${errors.map(String).join("; ")}`,
      );
    }
  };

  try {
    const nofile = await hardLimit("Max open files");
    const nproc = Math.min(4096, await hardLimit("Max processes"));
    await Deno.mkdir(confDir);
    await Deno.mkdir(`${dir}/tmp`);
    await Deno.writeTextFile(
      env.CONTAINERS_CONF,
      containersConf(dir, confDir, options.cniPluginDirs, nofile, nproc),
    );
    await Deno.writeTextFile(env.CONTAINERS_STORAGE_CONF, storageConf(dir));
    await Deno.writeTextFile(`${dir}/runc`, `#!/bin/sh\nexec ${RUNC} --root ${dir}/runc-state "$@"\n`, {
      mode: 0o755,
    });
    await makeRootfs(rootfs);
  } catch (err) {
    await dispose().catch(() => {});
    throw err;
  }

  return {
    confDir,
    podman,
    async runBusybox(name, network, extraArgs = []) {
      const out = await podman([
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "--cgroup-parent",
        cgroupParent,
        ...extraArgs,
        "--rootfs",
        `${rootfs}:O`,
        "sleep",
        "120",
      ]);
      return out.trim();
    },
    async inspect(name) {
      const [container] = JSON.parse(
        await podman(["inspect", "--type", "container", name]),
      ) as ContainerInspect[];
      return container;
    },
    [Symbol.asyncDispose]: dispose,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Lazily unmounts whatever is still mounted under `dir` (overlays of a container podman failed to remove). */
async function unmountUnder(dir: string): Promise<void> {
  const mountinfo = await Deno.readTextFile("/proc/self/mountinfo");
  const points = mountinfo.split("\n").map((l) => l.split(" ")[4]).filter((p) => p?.startsWith(`${dir}/`));
  // Deepest first, so a parent is never unmounted before what is mounted on it.
  for (const point of points.sort((a, b) => b.length - a.length)) await run("umount", ["-l", point]);
}

/**
 * Removes the cgroup parent, children first, in every hierarchy that has it. A conmon may still be exiting
 * (it runs `podman container cleanup` first), so a busy cgroup is retried for a while, and its members
 * are killed if they linger.
 */
async function removeCgroups(id: string): Promise<void> {
  for await (const hierarchy of Deno.readDir("/sys/fs/cgroup")) {
    const root = `/sys/fs/cgroup/${hierarchy.name}/${id}`;
    if (!hierarchy.isDirectory || !(await exists(root))) continue;
    const children: string[] = [];
    for await (const child of Deno.readDir(root)) {
      if (child.isDirectory) children.push(`${root}/${child.name}`);
    }
    for (const path of [...children, root]) await removeCgroup(path);
  }
}

async function removeCgroup(path: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (let tries = 0;; tries++) {
    try {
      return await Deno.remove(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.Busy) || Date.now() > deadline) throw err;
    }
    // The cgroup is this test's alone: a conmon still in it after a few seconds (a loaded machine) is ended.
    if (tries === 50) await killMembers(path);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function killMembers(path: string): Promise<void> {
  const procs = await Deno.readTextFile(`${path}/cgroup.procs`).catch(() => "");
  for (const pid of procs.split("\n").filter(Boolean)) {
    try {
      Deno.kill(Number(pid), "SIGKILL");
    } catch { /* gone meanwhile */ }
  }
}

/** Removes libcni's cached results of the networks defined in `confDir` (left when a DEL failed). */
async function removeCniCache(confDir: string): Promise<void> {
  const networks: string[] = [];
  for await (const entry of Deno.readDir(confDir)) {
    if (!entry.name.endsWith(".conflist")) continue;
    const { name } = JSON.parse(await Deno.readTextFile(`${confDir}/${entry.name}`)) as { name: string };
    networks.push(name);
  }
  if (networks.length === 0 || !(await exists(CNI_CACHE_DIR))) return;
  for await (const entry of Deno.readDir(CNI_CACHE_DIR)) {
    if (networks.some((n) => entry.name.startsWith(`${n}-`))) {
      await Deno.remove(`${CNI_CACHE_DIR}/${entry.name}`);
    }
  }
}
