// Logging in to etcd again after a lost connection. etcd keeps auth tokens in memory, so a restarted
// etcd refuses the old one, and etcd3 renews its token only when a unary call is refused for it
// (connection-pool.js exec()). A watch stream re-opened while etcd was down kept the old token and was
// never served by the new etcd: coild's pool watch never started again and every ADD answered 11.

import { castGrpcError, type Etcd3, isRecoverableError } from "etcd3";

/** The parts of etcd3's private connection pool reached into (etcd3 1.1.2, connection-pool.js). */
interface PoolInternals {
  authenticator: { invalidateMetadata(): void };
  withConnection(service: string, fn: (args: unknown) => unknown, ...rest: unknown[]): Promise<unknown>;
}

/** A policy's failure events (cockatiel's onFailure), for unary calls. */
interface FailureEvents {
  onFailure(listener: (event: { reason: { error: Error } | { value: unknown } }) => void): unknown;
}

/**
 * Makes `client` (one with a user) drop its cached auth token whenever a call (through `policy`) or a
 * stream (watch, lease keep-alive) fails for want of a connection: the next call or stream logs in
 * first, which costs one Authenticate call per outage.
 */
export function renewTokenAfterConnectionLoss(client: Etcd3, policy: FailureEvents): void {
  const pool = (client as unknown as { pool: PoolInternals }).pool;
  const forget = (err: unknown) => {
    if (err instanceof Error && isRecoverableError(castGrpcError(err))) {
      pool.authenticator.invalidateMetadata();
    }
  };
  policy.onFailure(({ reason }) => "error" in reason && forget(reason.error));
  const withConnection = pool.withConnection.bind(pool);
  pool.withConnection = (service, fn, ...rest) =>
    withConnection(service, (args) => {
      const result = fn(args);
      // Streams are returned at once, and report a lost connection as an "error" event.
      if (typeof (result as { on?: unknown })?.on === "function") {
        (result as { on(event: string, listener: (err: unknown) => void): void }).on("error", forget);
      }
      return result;
    }, ...rest);
}
