// The CNI spec versions Coil speaks and the verbs each allows: CHECK came in 0.4.0, GC and STATUS in
// 1.1.0 (containernetworking/cni pkg/skel: older confs get code 1 for them).

import { CniError, ERR_INCOMPATIBLE_VERSION } from "./errors.ts";

/** Every netconf `cniVersion` Coil accepts, oldest first. 0.3.0 is the oldest with the rich result. */
export const SUPPORTED_VERSIONS: readonly string[] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/** The newest version: what VERSION reports and what errors carry when the netconf gave none. */
export const CURRENT_VERSION = "1.1.0";

/** The CNI_COMMAND values, lower-cased as Coil names its handlers. */
export type Verb = "add" | "del" | "check" | "gc" | "status" | "version";

const VERSION_REGEXP = /^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$/;

/** The oldest netconf version that defines each verb (ADD and DEL exist in every supported one). */
const MIN_VERSION: Readonly<Record<Verb, string>> = {
  add: "0.3.0",
  del: "0.3.0",
  check: "0.4.0",
  gc: "1.1.0",
  status: "1.1.0",
  version: "0.3.0",
};

/**
 * Parses `major.minor.patch` (decimal, no leading zeros).
 * @throws {TypeError} when `text` is not such a version
 */
export function parseVersion(text: string): [number, number, number] {
  const match = VERSION_REGEXP.exec(text);
  if (match === null) throw new TypeError(`Cannot parse version "${text}": expected major.minor.patch`);
  return [Number(match[1]), Number(match[2]), Number(match[3])];
}

/**
 * Orders two versions: -1 when `a` is older than `b`, 0 when equal, 1 when newer.
 * @throws {TypeError} when either is not `major.minor.patch`
 */
export function compareVersions(a: string, b: string): -1 | 0 | 1 {
  const [pa, pb] = [parseVersion(a), parseVersion(b)];
  for (let i = 0; i < 3; i++) {
    if (pa[i] !== pb[i]) return pa[i] < pb[i] ? -1 : 1;
  }
  return 0;
}

/** Whether Coil accepts a netconf with this `cniVersion`. */
export function isSupportedVersion(version: string): boolean {
  return SUPPORTED_VERSIONS.includes(version);
}

/**
 * Checks that a netconf of `version` (already known to be supported) allows `verb`.
 * @throws {CniError} code 1 when the verb is newer than the netconf's version
 */
export function checkVerbAllowed(verb: Verb, version: string): void {
  const min = MIN_VERSION[verb];
  if (compareVersions(version, min) < 0) {
    throw new CniError(
      ERR_INCOMPATIBLE_VERSION,
      `Netconf cniVersion "${version}" does not allow ${verb.toUpperCase()}: it needs ${min} or newer`,
    );
  }
}
