// The systemd unit that runs coild, written by `coil install` and checked in as
// scripts/systemd/coild.service (a test keeps the two equal).

import { DAEMON_LINK_PATH, ENVIRONMENT_PATH } from "./paths.ts";

/** The unit file's text. The comments are for the admin reading it on the node. */
export const COILD_UNIT =
  `# coild, the Coil node daemon. Written by \`coil install\`, which replaces it on every run: put local
# changes in a drop-in (systemctl edit coild) and coild's settings in ${ENVIRONMENT_PATH}.
[Unit]
Description=Coil node daemon: pod addresses from etcd, pod veths and routes, table 119 for BIRD
Wants=network-online.target
After=network-online.target
# A node agent comes back whenever it can (etcd reachable again, the network up): never stop retrying.
StartLimitIntervalSec=0

[Service]
# coild reports READY=1 once etcd answered, the export table is synced and its socket accepts, then
# WATCHDOG=1 every WatchdogSec/2 from a loop that also checks etcd: a wedged coild is killed and restarted.
Type=notify
WatchdogSec=30s
EnvironmentFile=-${ENVIRONMENT_PATH}
ExecStart=${DAEMON_LINK_PATH}
Restart=always
RestartSec=2s
# Pods keep their network while coild is stopped or restarting: their veths, addresses and routes (and
# table 119, which BIRD keeps advertising) are kernel state that outlives coild, and their processes
# live in the container runtime's cgroups, not in this one; the CNI binary answers ADD/DEL with error
# 11 (try again later) meanwhile, which runtimes retry. coild is a single process: its background veth
# deletions run on threads, so every KillMode signals them with coild. KillMode only decides about stray
# processes: mixed sends SIGTERM to coild alone (it finishes the requests in flight, closes its socket)
# and SIGKILLs whatever is left after TimeoutStopSec; process would leave strays behind across restarts.
KillMode=mixed
TimeoutStopSec=30s

# Hardening. Capabilities, exactly: CAP_NET_ADMIN for links, addresses, routes, rules and net.* sysctls;
# CAP_SYS_ADMIN for setns() into pod network namespaces. The rest coild touches belongs to root (its
# socket in /run, the pinned netns files under /run/netns, /proc/sys/net). A runtime passing
# /proc/<pid>/ns/net of another user's process instead of a pinned netns file would also need
# CAP_SYS_PTRACE; containerd, CRI-O and podman pin theirs.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN
NoNewPrivileges=yes
ProtectSystem=strict
# /run: the CNI socket (COIL_SOCKET, default /run/coild.sock). /proc/sys/net: IP forwarding, also
# inside pod namespaces (ProtectKernelTunables makes the rest of /proc/sys read-only).
ReadWritePaths=/run /proc/sys/net
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# UNIX: the CNI socket and etcd's unix:// URLs; NETLINK: the kernel; INET/INET6: etcd and metrics.
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
RestrictNamespaces=net
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
UMask=0077
SystemCallArchitectures=native
# Not MemoryDenyWriteExecute=: V8's JIT compiler needs writable executable memory.

[Install]
WantedBy=multi-user.target
`;
