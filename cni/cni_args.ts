// CNI_ARGS: `K=V;K=V` pairs from the runtime. Rules as containernetworking/cni pkg/types/args.go
// (LoadArgs): each pair has exactly one `=`, unknown keys fail unless IgnoreUnknown is 1 or true.

import { CniError, ERR_INVALID_ENV } from "./errors.ts";

export const K8S_POD_NAMESPACE = "K8S_POD_NAMESPACE";
export const K8S_POD_NAME = "K8S_POD_NAME";
export const K8S_POD_INFRA_CONTAINER_ID = "K8S_POD_INFRA_CONTAINER_ID";
export const K8S_POD_UID = "K8S_POD_UID";
export const IGNORE_UNKNOWN = "IgnoreUnknown";

const KNOWN_KEYS: readonly string[] = [
  K8S_POD_NAMESPACE,
  K8S_POD_NAME,
  K8S_POD_INFRA_CONTAINER_ID,
  K8S_POD_UID,
  IGNORE_UNKNOWN,
];

/** The pod identity from CNI_ARGS; each is "" when absent (podman sends no namespace). */
export interface CniArgs {
  podNamespace: string;
  podName: string;
  podInfraContainerId: string;
  podUid: string;
}

/**
 * Parses CNI_ARGS. An empty string gives empty fields.
 * @throws {CniError} code 4 quoting CNI_ARGS and naming the problem (see cniArgsProblem)
 */
export function parseCniArgs(text: string): CniArgs {
  const parsed = readCniArgs(text);
  if (typeof parsed === "string") {
    throw new CniError(ERR_INVALID_ENV, `CNI_ARGS ${JSON.stringify(text)} ${parsed}`);
  }
  return parsed;
}

/**
 * What is wrong with CNI_ARGS, as a phrase to follow its name, or undefined when it parses: a pair
 * without exactly one `=` or with an empty key, a key given twice with different values, an unknown
 * key without IgnoreUnknown, or an IgnoreUnknown that is not a boolean.
 */
export function cniArgsProblem(text: string): string | undefined {
  const parsed = readCniArgs(text);
  return typeof parsed === "string" ? parsed : undefined;
}

function readCniArgs(text: string): CniArgs | string {
  const values = new Map<string, string>();
  for (const pair of text === "" ? [] : text.split(";")) {
    const parts = pair.split("=");
    if (parts.length !== 2 || parts[0] === "") {
      return `has a malformed pair ${JSON.stringify(pair)}: expected KEY=VALUE`;
    }
    const [key, value] = parts;
    const earlier = values.get(key);
    if (earlier !== undefined && earlier !== value) {
      return `gives ${key} twice: ${JSON.stringify(earlier)} and ${JSON.stringify(value)}`;
    }
    values.set(key, value);
  }
  const ignoreUnknown = values.get(IGNORE_UNKNOWN)?.toLowerCase() ?? "false";
  if (!["1", "true", "0", "false"].includes(ignoreUnknown)) {
    // Go's UnmarshallableBool accepts exactly these, in any case.
    return `has ${IGNORE_UNKNOWN} ${
      JSON.stringify(values.get(IGNORE_UNKNOWN))
    }: expected 1, true, 0 or false`;
  }
  const unknown = [...values.keys()].filter((key) => !KNOWN_KEYS.includes(key));
  if (unknown.length > 0 && ignoreUnknown !== "1" && ignoreUnknown !== "true") {
    return `has unknown keys ${unknown.join(", ")}: set ${IGNORE_UNKNOWN}=1 to ignore them`;
  }
  return {
    podNamespace: values.get(K8S_POD_NAMESPACE) ?? "",
    podName: values.get(K8S_POD_NAME) ?? "",
    podInfraContainerId: values.get(K8S_POD_INFRA_CONTAINER_ID) ?? "",
    podUid: values.get(K8S_POD_UID) ?? "",
  };
}
