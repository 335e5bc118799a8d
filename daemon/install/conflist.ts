// The network configuration list that `coil install` writes into the CNI conf dir: Coil as the main
// plugin, optionally followed by portmap (hostPort), in a version today's runtimes accept.

import { PLUGIN_TYPE } from "../../cni/netconf.ts";

export interface ConflistOptions {
  networkName: string;
  /** coild's socket, as the CNI binary should reach it. */
  socket: string;
  /** The pods' MTU; undefined: coild uses the MTU of the host's default-route interface. */
  mtu?: number;
  chainPortmap: boolean;
}

/** The netconf version written as `cniVersion`: every runtime of today's LTS nodes accepts it. */
export const CONFLIST_CNI_VERSION = "1.0.0";
// libcni >= 1.2 picks the highest of cniVersions it knows; older libcni (containerd 1.6/1.7, CRI-O 1.26,
// podman 4.3, cnitool 1.1) ignore the key and reject "cniVersion": "1.1.0" outright, and Debian's
// reference plugins (portmap among them) stop at 1.0.0.
const CNI_VERSIONS = ["1.0.0", "1.1.0"];

/** The conflist's bytes: JSON, two-space indented, newline-terminated (stable across re-installs). */
export function renderConflist(options: ConflistOptions): string {
  const coil: Record<string, unknown> = { type: PLUGIN_TYPE, socket: options.socket };
  if (options.mtu !== undefined) coil.mtu = options.mtu;
  const plugins: Record<string, unknown>[] = [coil];
  if (options.chainPortmap) plugins.push({ type: "portmap", capabilities: { portMappings: true } });
  const conflist = {
    cniVersion: CONFLIST_CNI_VERSION,
    cniVersions: CNI_VERSIONS,
    name: options.networkName,
    plugins,
  };
  return JSON.stringify(conflist, null, 2) + "\n";
}
