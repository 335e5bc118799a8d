// The messages between the CNI client (this folder) and coild, one JSON request and one JSON reply
// per connection on coild's UNIX socket. Version-neutral: the client converts results to the netconf's
// cniVersion. Shared by both sides so the protocol is written down once.

/** Default path of coild's socket, for the netconf `socket` key and the daemon's `--socket` flag. */
export const DEFAULT_SOCKET = "/run/coild.sock";

/** What the CNI client asks coild to do. */
export type ApiRequest = AddRequest | DelRequest | CheckRequest | GcRequest | StatusRequest;

/** `ipam`: coil is the IPAM plugin of another plugin (addresses only); `main`: coil sets up the pod network. */
export type Mode = "ipam" | "main";

/** The identity of one attachment and of the pod it belongs to, from the CNI environment. */
export interface Attachment {
  /** netconf `name`: allocations are scoped to one network. */
  network: string;
  containerId: string;
  ifName: string;
  /** CNI_NETNS; empty on DEL when the runtime no longer knows it. */
  netns: string;
  /** From CNI_ARGS; empty when the runtime sent none (podman sends no namespace). */
  podNamespace: string;
  podName: string;
  podUid: string;
}

export interface AddRequest extends Attachment {
  verb: "add";
  mode: Mode;
  /** netconf `mtu`; 0 means: use the MTU of the host's default-route interface. */
  mtu: number;
  /** netconf `hostRouteTable`; 0 means: the daemon's `--pod-table-id` (main table by default). */
  hostRouteTable: number;
}

export interface DelRequest extends Attachment {
  verb: "del";
  mode: Mode;
  hostRouteTable: number;
}

export interface CheckRequest extends Attachment {
  verb: "check";
  mode: Mode;
  hostRouteTable: number;
  /** The addresses (CIDR) that prevResult lists: each must be this attachment's allocation. */
  prevIps: string[];
}

export interface GcRequest {
  verb: "gc";
  network: string;
  /** Attachments to keep; every other allocation of `network` on this node is released. */
  validAttachments: { containerId: string; ifName: string }[];
}

export interface StatusRequest {
  verb: "status";
  network: string;
}

/** An address given to the pod: `address` in CIDR form (e.g. `10.1.0.5/32`). */
export interface IpConfig {
  address: string;
  gateway?: string;
  /** Index into `interfaces` (main mode only). */
  interface?: number;
}

export interface InterfaceConfig {
  name: string;
  mac: string;
  mtu?: number;
  /** The netns path, for interfaces inside the pod. */
  sandbox?: string;
}

export interface RouteConfig {
  dst: string;
  gw?: string;
}

/** The outcome of ADD, in the shape of a CNI 1.1 result without `cniVersion`. */
export interface AddResult {
  interfaces: InterfaceConfig[];
  ips: IpConfig[];
  routes: RouteConfig[];
}

/** coild's reply: `result` on success (ADD only), or a CNI error code and message. */
export type ApiReply =
  | { ok: true; result?: AddResult }
  | { ok: false; code: number; msg: string; details?: string };
