// Where `coil install` puts things on a node: paths as the node sees them, joined to a staging root
// (`--root`) only when touched, so a manifest written into a staged tree stays right once copied.

/** The executable, where kubelet's runtime looks for CNI plugins by default. */
export const EXECUTABLE_PATH = "/opt/cni/bin/coil";
/** A symlink to the executable: invoked under this name, it runs coild. */
export const DAEMON_LINK_PATH = "/usr/local/sbin/coild";
export const CNI_CONF_DIR = "/etc/cni/net.d";
export const DEFAULT_CONFLIST_NAME = "10-coil.conflist";
export const UNIT_PATH = "/etc/systemd/system/coild.service";
export const UNIT_NAME = "coild.service";
/** coild's settings (COIL_* variables) and the etcd secrets: read by the unit's EnvironmentFile=. */
export const ENVIRONMENT_PATH = "/etc/default/coild";
/** What install wrote, for uninstall: state, not configuration, so it lives under /var/lib. */
export const MANIFEST_PATH = "/var/lib/coil/install-manifest.json";

/** `path` (absolute, as on the node) under the staging root `root`. */
export function underRoot(root: string, path: string): string {
  return root === "/" ? path : `${root.replace(/\/+$/, "")}${path}`;
}
