// Connecting to etcd: endpoints, TLS and user/password as in Coil v1's --etcd-* flags. A failed call is
// tried once on each other endpoint, with no delay; then it surfaces as IpamError "unavailable" (CNI 11).
// A write refused for lack of space (NOSPACE) is not retried, and is "no-space" when nothing was written.

import type { IDefaultPolicyContext, IPolicy, RetryPolicy } from "cockatiel";
import { type CallContext, Etcd3, type IOptions, isRecoverableError } from "etcd3";
import { isNoSpace, NO_SPACE_MESSAGE } from "./etcd_alarms.ts";
import { IpamError } from "./errors.ts";
import { allowIpServerNames, readPassword, tlsCredentials } from "./etcd_credentials.ts";
import { renewTokenAfterConnectionLoss } from "./etcd_token_renewal.ts";

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
  /** A file holding the password (read at connect; a trailing line break is not part of it). */
  passwordFile?: string;
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
 * library's pool walks its shuffled hosts across those attempts (connection-pool.js exec()); but a write
 * that ran to its deadline is not sent again (refuseResendAfterTimeout).
 * @throws {IpamError} kind "invalid" when a TLS file or the password file cannot be read.
 */
export async function connectEtcd(options: EtcdOptions): Promise<Etcd3> {
  const { ConstantBackoff, handleWhen, noop, retry } = await import("cockatiel");
  const timeout = options.callTimeoutMs ?? 5000;
  // NOSPACE is the cluster's state, not the member's: another endpoint would refuse the same way.
  const failover = retry(handleWhen((err) => isRecoverableError(err) && !isNoSpace(err)), {
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
    defaultCallOptions: (call) => {
      if (call.isStream) return {};
      refuseResendAfterTimeout(call, timeout);
      return { deadline: Date.now() + timeout };
    },
    faultHandling: { host: () => noop, global: markingRefusals(failover) },
  };
  if (
    options.tlsCa || options.tlsCert || options.tlsKey ||
    options.endpoints.some((e) => e.startsWith("https:"))
  ) {
    await allowIpServerNames();
  }
  if (options.tlsCa || options.tlsCert || options.tlsKey) config.credentials = await tlsCredentials(options);
  if (options.username) {
    const password = options.passwordFile ? await readPassword(options.passwordFile) : options.password;
    config.auth = { username: options.username, password: password ?? "" };
  }
  const client = new Etcd3(config);
  if (config.auth) renewTokenAfterConnectionLoss(client, failover);
  return client;
}

/** When the last attempt of each write request started (the library re-sends the same request object). */
const writeAttempts = new WeakMap<object, number>();

/**
 * Throws instead of letting the failover re-send a write whose previous attempt ran to its deadline: the
 * member it went to may hold it unanswered (stalled, paused, cut off) and commit it later, after the copy
 * sent elsewhere and whatever followed that (a DEL): the write would come back from the dead. The caller
 * then sees etcd as unavailable and settles its write (in_doubt_writes.ts). A write whose attempt
 * failed sooner (connection refused by a dead member) is re-sent as before.
 */
function refuseResendAfterTimeout(call: CallContext, timeoutMs: number): void {
  const writes = call.service === "KV" && (
    call.method === "put" || call.method === "deleteRange" ||
    (call.method === "txn" &&
      [...(call.params.success ?? []), ...(call.params.failure ?? [])].some((op) => !op.request_range))
  );
  if (!writes) return;
  const now = Date.now();
  const last = writeAttempts.get(call.params);
  if (last !== undefined && now - last >= timeoutMs) {
    throw new WriteNotResentError(
      `a write got no answer within ${timeoutMs} ms and may yet commit, so it is not sent to another member`,
    );
  }
  writeAttempts.set(call.params, now);
}

/** A write the failover did not re-send (refuseResendAfterTimeout); not recoverable, so not retried. */
class WriteNotResentError extends Error {
  override name = "WriteNotResentError";
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
 * error stays as `cause`); passes IpamErrors through. A write etcd refused for lack of space is "no-space"
 * when that refusal was the call's only failure, so nothing was written; after an earlier attempt that
 * failed otherwise (which may still commit) it stays "unavailable", with the same message.
 */
export function unavailable(err: unknown): IpamError {
  if (err instanceof IpamError) return err;
  if (isNoSpace(err)) {
    return refusedWholly.has(err as Error)
      ? new IpamError("no-space", NO_SPACE_MESSAGE, { cause: err })
      : new IpamError("unavailable", `${NO_SPACE_MESSAGE}; an earlier attempt may yet commit`, {
        cause: err,
      });
  }
  const cause = err instanceof Error ? err.message : String(err);
  return new IpamError("unavailable", `etcd is unreachable: ${conciseCause(cause)}`, { cause: err });
}

/** NOSPACE errors of calls whose every attempt etcd refused: those calls changed nothing. */
const refusedWholly = new WeakSet<Error>();

/**
 * `failover` as the client's global policy, noting the calls whose every attempt was refused with
 * NOSPACE (refusedWholly). A refusal is certain (etcd checks the quota before it proposes, and refuses
 * again when it applies); a timed-out attempt before it is not.
 */
function markingRefusals(failover: RetryPolicy): IPolicy<IDefaultPolicyContext> {
  return {
    _altReturn: undefined as never,
    onSuccess: failover.onSuccess,
    onFailure: failover.onFailure,
    async execute<T>(fn: (context: IDefaultPolicyContext) => PromiseLike<T> | T, signal?: AbortSignal) {
      let doubtful = false;
      try {
        return await failover.execute(async (context) => {
          try {
            return await fn(context);
          } catch (err) {
            if (!isNoSpace(err)) doubtful = true;
            throw err;
          }
        }, signal);
      } catch (err) {
        if (!doubtful && isNoSpace(err)) refusedWholly.add(err as Error);
        throw err;
      }
    },
  };
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
  // grpc-js says "Last error: null" when a connection failed without an error (a refused one on etcd's
  // restart, a TLS handshake Deno ended): "null" would tell the operator nothing.
  if (last && last[1] === "null") cause = "no connection established";
  else if (last && last[1] !== "") cause = last[1];
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
