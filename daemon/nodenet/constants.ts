// The node's routing constants, in one place for coild, its flag defaults and the lab: the pods'
// link-local gateway, the tables and the protocol that marks Coil's routes.

export { RT_TABLE_MAIN as MAIN_TABLE } from "../../netlink/constants.ts";

/** Every host veth carries these (scope link), so pods route via them whatever kube-proxy sets (k8s#70530). */
export const GATEWAY_V4 = "169.254.1.1";
export const GATEWAY_V6 = "fe80::1";

/** `--export-table-id`: the table BIRD reads the node's aggregated blocks from. */
export const DEFAULT_EXPORT_TABLE = 119;
/** `--protocol-id`: stamped on every route coild writes, so its own routes are told from others. */
export const DEFAULT_PROTOCOL = 30;
