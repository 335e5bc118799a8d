// How a host-side veth is named and tagged. Names: "veth" + the first 11 hex digits of
// sha1("<namespace>.<pod>"), as Calico and Coil name them, so operators' tooling and a migration from
// either keep working. Tags: an alias naming the attachment, so a restarted coild knows whose it is.

import { createHash } from "node:crypto";

/** The identity a host veth name is derived from. */
export interface PodIdentity {
  podNamespace: string;
  podName: string;
  containerId: string;
  ifName: string;
}

/**
 * The host-side veth name for a pod's interface (15 bytes, the kernel's limit). Without a pod name
 * (a runtime outside Kubernetes) it derives from the container ID; a second interface of the same pod
 * (ifName other than eth0) gets its own name so the two cannot collide.
 */
export function hostVethName(pod: PodIdentity): string {
  const base = pod.podName ? `${pod.podNamespace}.${pod.podName}` : pod.containerId;
  const seed = pod.ifName === "eth0" ? base : `${base}.${pod.ifName}`;
  return "veth" + createHash("sha1").update(seed).digest("hex").slice(0, 11);
}

const ALIAS_PREFIX = "coil:";

/** The kernel keeps at most this many bytes of an alias (IFALIASZ - 1). */
const MAX_ALIAS_BYTES = 255;

/** The attachment a host veth is tagged with: network, container and interface, as in etcd's keys. */
export interface AttachmentId {
  network: string;
  containerId: string;
  ifName: string;
}

/**
 * The alias tagging a host veth with its attachment, so a restarted coild can tell whose it is and a
 * DEL of one network never removes another network's veth. Network names and container IDs hold no
 * ":" (the CNI spec's character sets); one too long for the kernel's limit is replaced by a SHA-256.
 */
export function aliasOf(a: AttachmentId): string {
  return fitted(`${a.network}:${a.containerId}`, a.ifName);
}

/**
 * Every alias that tags `a`'s veth: aliasOf(), and the one Coil 0.1 wrote (without the network), so
 * that pods set up before an upgrade keep their veths.
 */
export function aliasesOf(a: AttachmentId): string[] {
  return [aliasOf(a), fitted(a.containerId, a.ifName)];
}

function fitted(owner: string, ifName: string): string {
  const alias = `${ALIAS_PREFIX}${owner}:${ifName}`;
  if (new TextEncoder().encode(alias).length <= MAX_ALIAS_BYTES) return alias;
  const digest = createHash("sha256").update(owner).digest("hex");
  return `${ALIAS_PREFIX}sha256-${digest}:${ifName}`;
}

/**
 * Whether a link with the attachment's veth name may be deleted for it: after a pod was re-created, the
 * same name may belong to its newer attachment (or another network's), whose alias differs. An untagged
 * link is a leftover of an ADD that crashed between creating and tagging it.
 */
export function isAttachmentLink(linkAlias: string | undefined, aliases: readonly string[]): boolean {
  return linkAlias === undefined || aliases.includes(linkAlias);
}

/** Whether a link carries a tag written by aliasOf() (now or by an earlier Coil). */
export function isCoilAlias(alias: string | undefined): alias is string {
  return alias !== undefined && alias.startsWith(ALIAS_PREFIX) &&
    alias.lastIndexOf(":") > ALIAS_PREFIX.length;
}
