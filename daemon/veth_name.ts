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

/**
 * The alias tagging a host veth with its attachment, so a restarted coild can tell whose it is. A
 * container ID too long for the kernel's limit is replaced by its SHA-256, still unique per attachment.
 */
export function aliasOf(a: { containerId: string; ifName: string }): string {
  const alias = `${ALIAS_PREFIX}${a.containerId}:${a.ifName}`;
  if (new TextEncoder().encode(alias).length <= MAX_ALIAS_BYTES) return alias;
  const digest = createHash("sha256").update(a.containerId).digest("hex");
  return `${ALIAS_PREFIX}sha256-${digest}:${a.ifName}`;
}

/**
 * Whether a link with the attachment's veth name may be deleted for it: after a pod was re-created, the
 * same name may belong to its newer attachment, whose alias differs. An untagged link is a leftover of
 * an ADD that crashed between creating and tagging it.
 */
export function isAttachmentLink(linkAlias: string | undefined, alias: string): boolean {
  return linkAlias === undefined || linkAlias === alias;
}

/** Parses an alias written by aliasOf(); undefined for other links. */
export function parseAlias(alias: string | undefined): { containerId: string; ifName: string } | undefined {
  if (!alias?.startsWith(ALIAS_PREFIX)) return undefined;
  const rest = alias.slice(ALIAS_PREFIX.length);
  const colon = rest.lastIndexOf(":");
  if (colon <= 0) return undefined;
  return { containerId: rest.slice(0, colon), ifName: rest.slice(colon + 1) };
}
