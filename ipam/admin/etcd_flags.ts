// The --etcd-* flags, defined once for the admin CLI and coild: each also read from a COIL_ETCD_*
// variable, validated while parsing so that a bad value is a usage error, not a failed connection.

import { type Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_ETCD_ENDPOINTS, DEFAULT_ETCD_PREFIX, type EtcdOptions } from "../etcd_client.ts";

/** Deadline of each etcd call when --etcd-timeout is not given, in ms. */
export const DEFAULT_ETCD_TIMEOUT_MS = 5000;

/** Heading of the etcd flags in --help. */
export const ETCD_HELP_GROUP = "etcd options:";

/** The values commander stores for the flags added by addEtcdOptions (keys are camelCased flags). */
export interface EtcdFlagValues {
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcdTlsCa?: string;
  etcdTlsCert?: string;
  etcdTlsKey?: string;
  etcdUsername?: string;
  etcdPassword?: string;
  etcdPasswordFile?: string;
  etcdTimeout: number;
}

/**
 * Adds the etcd flags to `command`, with defaults and COIL_ETCD_* environment fallbacks (a flag wins
 * over its variable): --etcd-endpoints, --etcd-prefix, --etcd-tls-ca, --etcd-tls-cert, --etcd-tls-key,
 * --etcd-username, --etcd-password, --etcd-password-file, --etcd-timeout. Malformed values make
 * commander report a usage error (InvalidArgumentError) while parsing.
 * @returns `command`, for chaining.
 */
export function addEtcdOptions(command: Command): Command {
  const flag = (flags: string, description: string, env: string) =>
    new Option(flags, description).env(env).helpGroup(ETCD_HELP_GROUP);
  return command
    .addOption(
      flag("--etcd-endpoints <urls>", "etcd client URLs, comma-separated", "COIL_ETCD_ENDPOINTS")
        .argParser(parseEndpoints)
        .default(DEFAULT_ETCD_ENDPOINTS, DEFAULT_ETCD_ENDPOINTS.join(",")),
    )
    .addOption(
      flag(
        "--etcd-prefix <prefix>",
        "key prefix of all Coil data; starts and ends with /",
        "COIL_ETCD_PREFIX",
      )
        .argParser(parsePrefix)
        .default(DEFAULT_ETCD_PREFIX),
    )
    .addOption(flag("--etcd-tls-ca <file>", "PEM CA certificate: enables TLS", "COIL_ETCD_TLS_CA"))
    .addOption(
      flag("--etcd-tls-cert <file>", "PEM client certificate (with --etcd-tls-key)", "COIL_ETCD_TLS_CERT"),
    )
    .addOption(flag("--etcd-tls-key <file>", "PEM client key (with --etcd-tls-cert)", "COIL_ETCD_TLS_KEY"))
    .addOption(flag("--etcd-username <name>", "etcd user", "COIL_ETCD_USERNAME"))
    .addOption(
      flag(
        "--etcd-password <password>",
        "etcd password (prefer --etcd-password-file: flags show in ps)",
        "COIL_ETCD_PASSWORD",
      ),
    )
    .addOption(
      flag(
        "--etcd-password-file <file>",
        "file holding the etcd password (a trailing line break is ignored)",
        "COIL_ETCD_PASSWORD_FILE",
      ),
    )
    .addOption(
      flag("--etcd-timeout <ms>", "deadline of each etcd call, in milliseconds", "COIL_ETCD_TIMEOUT")
        .argParser(parseTimeout)
        .default(DEFAULT_ETCD_TIMEOUT_MS),
    );
}

/**
 * Turns the parsed flag values (`command.opts()`) into EtcdOptions.
 * @throws {InvalidArgumentError} when an endpoint holds credentials, a TLS certificate and key are not
 * given together, a password comes without a user, or both a password and a password file: usage errors.
 */
export function etcdOptionsFrom(values: EtcdFlagValues): EtcdOptions {
  if (Boolean(values.etcdTlsCert) !== Boolean(values.etcdTlsKey)) {
    throw new InvalidArgumentError("--etcd-tls-cert and --etcd-tls-key must be given together");
  }
  if ((values.etcdTlsCert || values.etcdTlsKey) && !values.etcdTlsCa) {
    throw new InvalidArgumentError("--etcd-tls-cert needs --etcd-tls-ca");
  }
  // Coil logs and prints its endpoints: credentials in one would be shown, so they are refused, unseen.
  for (const endpoint of values.etcdEndpoints) {
    if (withoutUserinfo(endpoint) !== endpoint) {
      throw new InvalidArgumentError(
        `--etcd-endpoints "${withoutUserinfo(endpoint)}" must not hold a user or password: use ` +
          "--etcd-username and --etcd-password-file",
      );
    }
  }
  if (values.etcdPassword && values.etcdPasswordFile) {
    throw new InvalidArgumentError("Give --etcd-password or --etcd-password-file, not both");
  }
  if ((values.etcdPassword || values.etcdPasswordFile) && !values.etcdUsername) {
    throw new InvalidArgumentError(
      `${values.etcdPassword ? "--etcd-password" : "--etcd-password-file"} needs --etcd-username`,
    );
  }
  return {
    endpoints: [...values.etcdEndpoints],
    prefix: values.etcdPrefix,
    tlsCa: values.etcdTlsCa || undefined,
    tlsCert: values.etcdTlsCert || undefined,
    tlsKey: values.etcdTlsKey || undefined,
    username: values.etcdUsername || undefined,
    password: values.etcdPassword || undefined,
    passwordFile: values.etcdPasswordFile || undefined,
    callTimeoutMs: values.etcdTimeout,
  };
}

function parseEndpoints(text: string): string[] {
  const endpoints = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (endpoints.length === 0) {
    throw new InvalidArgumentError("Give at least one URL, e.g. http://127.0.0.1:2379");
  }
  for (const endpoint of endpoints) {
    // Left to etcdOptionsFrom(): commander quotes a value its parser rejects, password included.
    if (withoutUserinfo(endpoint) !== endpoint) continue;
    let url: URL | undefined;
    try {
      url = new URL(endpoint);
    } catch { /* reported below */ }
    // unix:///path/to/socket reaches an etcd listening on a UNIX socket (etcd's unix:// listen URLs).
    const unix = url?.protocol === "unix:" && url.pathname.length > 1;
    if (!url || !(unix || ((url.protocol === "http:" || url.protocol === "https:") && url.hostname !== ""))) {
      throw new InvalidArgumentError(`"${endpoint}" is not an http://, https:// or unix:// URL`);
    }
  }
  return endpoints;
}

/**
 * `text` with everything from after its scheme (if any) to its last `@` replaced by `…@`: a URL's
 * `user:password@`, or what a malformed one holds, so that a message can quote it.
 */
function withoutUserinfo(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/is, "$1…@");
}

function parsePrefix(text: string): string {
  if (!text.startsWith("/") || !text.endsWith("/")) {
    throw new InvalidArgumentError(`"${text}" must start and end with "/", e.g. /coil/`);
  }
  return text;
}

function parseTimeout(text: string): number {
  if (!/^[1-9][0-9]{0,8}$/.test(text)) {
    throw new InvalidArgumentError(`"${text}" is not a positive whole number of milliseconds`);
  }
  return Number(text);
}
