// Connecting to etcd: endpoints, TLS and user/password as in Coil v1's --etcd-* flags. A failed call is
// tried once on each other endpoint, with no delay; then it surfaces as IpamError "unavailable" (CNI 11).

import { Etcd3, type IOptions, isRecoverableError } from "etcd3";
import { IpamError } from "./errors.ts";

/** How to reach etcd. Paths name PEM files. */
export interface EtcdOptions {
  endpoints: string[];
  /** Key prefix, ending with `/` (default `/coil/`). */
  prefix: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  username?: string;
  password?: string;
  /** Deadline of each call, in ms. */
  callTimeoutMs?: number;
  /** Hears every call attempt: its duration in seconds and whether it succeeded (metrics). */
  onCall?: (seconds: number, ok: boolean) => void;
}

export const DEFAULT_ETCD_PREFIX = "/coil/";
export const DEFAULT_ETCD_ENDPOINTS = ["http://127.0.0.1:2379"];

/**
 * Opens a client. It connects lazily; use `waitForEtcd` to learn whether etcd answers.
 * The library's per-host circuit breaker is replaced by no policy at all: its 5 s open window would turn
 * a one-off hiccup into 5 s of refused ADDs. A call that fails with a recoverable error (unavailable,
 * deadline) is tried on each other endpoint at once, which is the failover a cluster is for; the
 * library's pool walks its shuffled hosts across those attempts (connection-pool.js exec()).
 * @throws {IpamError} kind "invalid" when a TLS file cannot be read.
 */
export async function connectEtcd(options: EtcdOptions): Promise<Etcd3> {
  const { ConstantBackoff, handleWhen, noop, retry } = await import("cockatiel");
  const timeout = options.callTimeoutMs ?? 5000;
  const failover = retry(handleWhen(isRecoverableError), {
    maxAttempts: options.endpoints.length - 1,
    backoff: new ConstantBackoff(0),
  });
  const onCall = options.onCall;
  if (onCall) {
    failover.onSuccess(({ duration }) => onCall(duration / 1000, true));
    failover.onFailure(({ duration }) => onCall(duration / 1000, false));
  }
  const config: IOptions = {
    hosts: options.endpoints,
    dialTimeout: timeout,
    // Streams (watches, lease keep-alives) live for the process: a deadline would end them every
    // `timeout` ms and make the library re-open them, in a loop.
    defaultCallOptions: (call) => (call.isStream ? {} : { deadline: Date.now() + timeout }),
    faultHandling: { host: () => noop, global: failover },
  };
  if (
    options.tlsCa || options.tlsCert || options.tlsKey ||
    options.endpoints.some((e) => e.startsWith("https:"))
  ) {
    await allowIpServerNames();
  }
  if (options.tlsCa || options.tlsCert || options.tlsKey) {
    config.credentials = {
      rootCertificate: await readPem(options.tlsCa, "--etcd-tls-ca"),
      certChain: options.tlsCert ? await readPem(options.tlsCert, "--etcd-tls-cert") : undefined,
      privateKey: options.tlsKey ? await readPem(options.tlsKey, "--etcd-tls-key") : undefined,
    };
  }
  if (options.username) {
    config.auth = { username: options.username, password: options.password ?? "" };
  }
  return new Etcd3(config);
}

let ipServerNamesAllowed = false;

/**
 * Lets TLS reach etcd at an IP address (`https://10.0.0.1:2379`, the usual form). grpc-js always
 * passes the target host as `servername` (channel-credentials.js getConnectionOptions()); RFC 6066
 * section 3 forbids an IP there, which Node.js only warns about (DEP0123) but Deno's node:tls rejects
 * with ERR_INVALID_ARG_VALUE. So tls.connect() drops an IP `servername`, once for the process; the
 * server certificate is still checked against the IP, through `host` (checkServerIdentity).
 */
async function allowIpServerNames(): Promise<void> {
  if (ipServerNamesAllowed) return;
  ipServerNamesAllowed = true;
  const tls = (await import("node:tls")).default;
  const { isIP } = await import("node:net");
  const connect = tls.connect;
  tls.connect = ((...args: Parameters<typeof connect>) => {
    const options = args[0];
    if (typeof options === "object" && options !== null && "servername" in options) {
      const name = (options as { servername?: unknown }).servername;
      if (typeof name === "string" && isIP(name) !== 0) {
        delete (options as { servername?: string }).servername;
      }
    }
    return connect(...args);
  }) as typeof connect;
}

async function readPem(path: string | undefined, flag: string) {
  const { Buffer } = await import("node:buffer");
  if (!path) throw new IpamError("invalid", `Missing ${flag}: TLS needs a CA certificate`);
  try {
    return Buffer.from(await Deno.readFile(path));
  } catch (err) {
    throw new IpamError("invalid", `Cannot read ${flag} "${path}": ${(err as Error).message}`);
  }
}

/**
 * Waits until etcd answers a read of `probeKey`, polling every 200 ms. The key should lie under Coil's
 * prefix: an etcd user may be granted that prefix only, as Coil v1's deployments did.
 * @throws {IpamError} kind "unavailable" after `timeoutMs`.
 */
export async function waitForEtcd(client: Etcd3, probeKey: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      await client.get(probeKey).exists();
      return;
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw unavailable(last);
}

/**
 * Wraps an etcd client failure as IpamError "unavailable", with the cause in a few words (the original
 * error stays as `cause`); passes IpamErrors through.
 */
export function unavailable(err: unknown): IpamError {
  if (err instanceof IpamError) return err;
  const cause = err instanceof Error ? err.message : String(err);
  return new IpamError("unavailable", `etcd is unreachable: ${conciseCause(cause)}`, { cause: err });
}

/**
 * The operator-relevant part of a grpc-js message, which wraps the cause in a status prefix, resolver
 * notes and timestamps: "14 UNAVAILABLE: No connection established. Last error: Error: connect
 * ECONNREFUSED 127.0.0.1:1. Resolution note: " → "connect ECONNREFUSED 127.0.0.1:1"; "4
 * DEADLINE_EXCEEDED: Deadline exceeded after 1.000s,Waiting for LB pick" → "deadline exceeded after
 * 1.000s". A connection etcd closes right after the TLS handshake (write EPIPE), or a certificate
 * alert, is how a TLS etcd rejects a client without an acceptable certificate; the message says so.
 */
export function conciseCause(message: string): string {
  let cause: string;
  const last = /Last error: (?:Error: )?(.*?)\.?\s*(?:Resolution note:.*)?$/s.exec(message);
  const deadline = /^\d+ DEADLINE_EXCEEDED: Deadline exceeded after ([^,\s]+)/.exec(message);
  if (last && last[1] !== "") cause = last[1];
  else if (deadline) cause = `deadline exceeded after ${deadline[1]}`;
  else cause = message.replace(/^\d+ [A-Z_]+: /, "").replace(/\s*Resolution note:.*$/s, "").trim();
  cause = cause.replace(/\s*\(\d{4}-\d\d-\d\dT[\d:.]+Z\)$/, "");
  if (cause === "write EPIPE") {
    cause += " (etcd closed the connection; over TLS: no client certificate it trusts)";
  } else if (/fatal alert: (BadCertificate|CertificateRequired|UnknownCA)$/.test(cause)) {
    cause += " (etcd wants a client certificate it trusts)";
  }
  return cause === "" ? message : cause;
}
