// This node's liveness record: `keys.node(name)` bound to an etcd lease that coild keeps alive, so that
// the key vanishes by itself when coild dies and `coil node list/remove` can tell live nodes from dead.

import type { Etcd3, Lease } from "etcd3";
import { keysFor } from "../ipam/keys.ts";
import type { NodeRecord } from "../ipam/records.ts";
import type { Logger } from "./log.ts";

export interface LivenessOptions {
  client: Etcd3;
  /** Key prefix, ending with `/`. */
  prefix: string;
  node: string;
  /** Lease TTL: how long the key outlives a coild that died without revoking it. */
  ttlSeconds: number;
  /** Written into the record, for operators. */
  version: string;
  log: Logger;
  /** First pause before re-creating a lost lease or retrying a failed registration (doubling up to the TTL); default 1000 ms. */
  retryDelayMs?: number;
}

/**
 * Owns the node's lease: registers the node key, keeps the lease alive (the library renews it every
 * TTL/3) and, when etcd reports the lease lost (e.g. expired during an outage), grants a new one and
 * writes the key again. `close()` revokes the lease, so a clean stop removes the key at once.
 */
export class NodeLiveness implements AsyncDisposable {
  #options: LivenessOptions;
  #key: string;
  #lease: Lease | undefined;
  #closed = false;
  #stop = Promise.withResolvers<void>();
  #loop: Promise<void>;

  /** Starts registering in the background; never throws (failures are logged and retried). */
  constructor(options: LivenessOptions) {
    this.#options = options;
    this.#key = keysFor(options.prefix).node(options.node);
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    const { client, node, ttlSeconds, version, log } = this.#options;
    const record: NodeRecord = { node, startedAt: new Date().toISOString(), version };
    const firstDelay = this.#options.retryDelayMs ?? 1000;
    let retryDelay = firstDelay;
    while (!this.#closed) {
      const lease = client.lease(ttlSeconds);
      this.#lease = lease;
      const lost = new Promise<unknown>((resolve) => lease.on("lost", resolve));
      try {
        await lease.put(this.#key).value(JSON.stringify(record));
        log("info", "node registered", { key: this.#key, leaseId: await lease.grant(), ttl: ttlSeconds });
        retryDelay = firstDelay;
        const reason = await Promise.race([lost, this.#stop.promise]);
        if (this.#closed) return;
        log("warn", "node lease lost, registering again", { key: this.#key, error: reason });
      } catch (err) {
        if (this.#closed) return;
        log("warn", "node registration failed, retrying", {
          key: this.#key,
          error: err,
          retryInMs: retryDelay,
        });
      }
      // Stops its keep-alive; a lease that was granted expires by itself.
      lease.release();
      await this.#pause(retryDelay);
      // Through a long etcd outage, retry less often: up to once per TTL.
      retryDelay = Math.min(retryDelay * 2, Math.max(firstDelay, ttlSeconds * 1000));
    }
  }

  /** Waits `ms`, or less when closed. */
  async #pause(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([new Promise((resolve) => timer = setTimeout(resolve, ms)), this.#stop.promise]);
    clearTimeout(timer);
  }

  /**
   * Stops the keep-alive and revokes the lease, which deletes the key. Idempotent. A revoke that
   * fails (etcd down) is logged: the key then expires after the TTL.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stop.resolve();
    await this.#loop;
    const lease = this.#lease;
    if (!lease) return;
    try {
      await lease.revoke();
      this.#options.log("info", "node unregistered", { key: this.#key });
    } catch (err) {
      this.#options.log("warn", "node lease revoke failed; the key expires with the lease", {
        key: this.#key,
        error: err,
      });
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
