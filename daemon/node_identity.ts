// coild's exclusive hold on its node name. `nodes/<name>` is created only if absent, on a short liveness
// lease, and names the holding process; `node-fences/<name>` rides a long lease that a clean stop leaves
// running, so that etcd itself times "dead for --node-dead-after seconds", free of clock skew.

import { Buffer } from "node:buffer";
import type { Etcd3, ICompare, IKeyValue, IRequestOp, Lease } from "etcd3";
import { unavailable } from "../ipam/etcd_client.ts";
import { keysFor } from "../ipam/keys.ts";
import { type NodeHolder, type NodeRecord, parseNodeRecord } from "../ipam/records.ts";
import type { Logger } from "./log.ts";
import { currentProcess, type ProcessIdentity, processRuns } from "./process_identity.ts";

export interface NodeIdentityOptions {
  client: Etcd3;
  /** Key prefix, ending with `/`. */
  prefix: string;
  node: string;
  /** Liveness lease TTL: how long a crashed coild still holds the name. */
  ttlSeconds: number;
  /** Fence lease TTL: how long after its last sign of life the node stays unremovable without --force. */
  deadAfterSeconds: number;
  /** Written into the record, for operators. */
  version: string;
  log: Logger;
  /** The name was lost (lease expired in a pause or partition) and is ours again: re-read the blocks. */
  onReacquired?: () => void | Promise<void>;
  /** The name was lost and another coild holds it now: stop serving. The NodeIdentity has let go. */
  onFenced?: (message: string) => void;
  /** Stops waiting for the name at start (e.g. SIGTERM); acquireNodeIdentity then rejects with its reason. */
  signal?: AbortSignal;
  /** First pause before retrying after an etcd failure (doubling up to a third of the TTL); default 1000 ms. */
  retryDelayMs?: number;
  /** This process; read from /proc by default. */
  self?: ProcessIdentity;
}

/** How often the key of another holder is read while waiting for it to expire. */
const POLL_MS = 500;
/** etcd expires a lease up to about a second after its TTL runs out. */
const EXPIRY_MARGIN_MS = 2000;

/** Another coild holds the node name; the message names it and says what to do. */
export class NodeNameTakenError extends Error {
  readonly node: string;
  /** Undefined when the key's value could not be read. */
  readonly holder: NodeRecord | undefined;
  constructor(node: string, key: string, holder: NodeRecord | undefined, waitedMs: number) {
    super(takenMessage(node, key, holder, waitedMs));
    this.name = "NodeNameTakenError";
    this.node = node;
    this.holder = holder;
  }
}

function takenMessage(node: string, key: string, record: NodeRecord | undefined, waitedMs: number): string {
  const h = record?.holder;
  const who = h
    ? `host "${h.host}" (netns ${h.netns}, pid ${h.pid}, started at ${record!.startedAt}, version ${
      record!.version
    })`
    : record
    ? `a coild started at ${record.startedAt} (version ${record.version})`
    : "a holder whose record this coild cannot read";
  return `Node name "${node}" is held by another coild: ${who}; its key "${key}" stayed alive for the ` +
    `${Math.round(waitedMs / 1000)} s this coild waited. Two coilds with one node name hand out the same ` +
    "addresses. Give each host its own name (--node-name or COIL_NODE_NAME; the default, the host name, " +
    "is the same on cloned machines), or stop the other coild first";
}

/**
 * How the holder of the name relates to this process: this very process; a crashed coild of this
 * node (same boot, network and PID namespaces, and its process is gone), whose name is ours at once; or
 * another instance, or one this process cannot judge, whose key must be left to expire.
 */
export function judgeHolder(
  holder: NodeHolder | undefined,
  self: ProcessIdentity,
  runs: (pid: number, startTicks: string) => boolean = processRuns,
): "self" | "crashed" | "other" {
  if (!holder) return "other";
  if (holder.bootId !== self.bootId || holder.netns !== self.netns || holder.pidns !== self.pidns) {
    return "other";
  }
  if (holder.pid === self.pid && holder.startTicks === self.startTicks) return "self";
  return runs(holder.pid, holder.startTicks) ? "other" : "crashed";
}

/**
 * Takes the node name for this process, before coild changes anything: creates the node key if absent,
 * takes it over at once from a crashed coild of this node, or else waits until the holder's lease has
 * had time to expire. Keeps both leases alive until close().
 * @throws {NodeNameTakenError} when another coild keeps the name; etcd is unchanged then.
 * @throws the signal's reason when `signal` aborts first.
 */
export function acquireNodeIdentity(options: NodeIdentityOptions): Promise<NodeIdentity> {
  return NodeIdentity.acquire(options);
}

type LeaseKind = "liveness" | "fence";

/** The held node name: its leases, and their recovery when etcd reports one lost. */
export class NodeIdentity implements AsyncDisposable {
  #options: NodeIdentityOptions;
  #self: ProcessIdentity;
  #startedAt = new Date().toISOString();
  #nodeKey: string;
  #fenceKey: string;
  #leases: Partial<Record<LeaseKind, Lease>> = {};
  #record: NodeRecord | undefined;
  #held = false;
  #closed = false;
  #stop = new AbortController();
  #reacquiring: Promise<void> | undefined;

  /** See acquireNodeIdentity(). */
  static async acquire(options: NodeIdentityOptions): Promise<NodeIdentity> {
    const identity = new NodeIdentity(options);
    try {
      await identity.#acquire(options.signal);
    } catch (err) {
      // Leases granted for a lost race hold nothing: leave etcd as it was.
      identity.#closed = true;
      await identity.#revokeLeases();
      throw err;
    }
    return identity;
  }

  private constructor(options: NodeIdentityOptions) {
    this.#options = options;
    this.#self = options.self ?? currentProcess();
    const keys = keysFor(options.prefix);
    this.#nodeKey = keys.node(options.node);
    this.#fenceKey = keys.nodeFence(options.node);
  }

  /** What the node key holds while this process holds the name. */
  get record(): NodeRecord | undefined {
    return this.#held ? this.#record : undefined;
  }

  /** Loops until the name is ours; see acquireNodeIdentity(). */
  async #acquire(signal?: AbortSignal): Promise<void> {
    const { log, ttlSeconds } = this.#options;
    const stop = signal ? AbortSignal.any([signal, this.#stop.signal]) : this.#stop.signal;
    const firstDelay = this.#options.retryDelayMs ?? 1000;
    let retryDelay = firstDelay;
    let since: number | undefined;
    let deadline: number | undefined;
    for (;;) {
      stop.throwIfAborted();
      try {
        const { nodeKv, fenceKv, record } = await this.#read();
        const verdict = nodeKv ? judgeHolder(record?.holder, this.#self) : "absent";
        if (verdict !== "other") {
          if (await this.#write(nodeKv, fenceKv)) {
            log("info", "node name acquired", {
              key: this.#nodeKey,
              leaseId: this.#record!.holder!.leaseId,
              ttl: ttlSeconds,
              ...(verdict === "crashed" ? { tookOverFromPid: record!.holder!.pid } : {}),
            });
            return;
          }
          continue; // The key changed since the read: judge it again.
        }
        if (deadline === undefined) {
          since = Date.now();
          deadline = since + await this.#remainingMs(nodeKv!) + EXPIRY_MARGIN_MS;
          log("warn", "node name held by another coild; waiting for its lease to expire", {
            key: this.#nodeKey,
            holder: record,
            waitMs: deadline - since,
          });
        }
        if (Date.now() >= deadline) {
          throw new NodeNameTakenError(this.#options.node, this.#nodeKey, record, Date.now() - since!);
        }
        await pause(POLL_MS, stop);
      } catch (err) {
        if (err instanceof NodeNameTakenError || stop.aborted) throw err;
        log("warn", "acquiring the node name failed, retrying", {
          key: this.#nodeKey,
          error: err,
          retryInMs: retryDelay,
        });
        await pause(retryDelay, stop);
        // At most a third of the TTL, as often as a lease is kept alive: after a partition heals, the
        // node holds its name again within that, not a whole TTL later.
        retryDelay = Math.min(retryDelay * 2, Math.max(firstDelay, ttlSeconds * 1000 / 3));
      }
    }
  }

  /** The node key with its record (undefined when unreadable) and the fence key, in one read. */
  async #read(): Promise<{ nodeKv?: IKeyValue; fenceKv?: IKeyValue; record?: NodeRecord }> {
    const range = (key: string): IRequestOp => ({ request_range: { key: Buffer.from(key) } });
    let kvs: (IKeyValue | undefined)[];
    try {
      const res = await this.#options.client.kv.txn({
        success: [range(this.#nodeKey), range(this.#fenceKey)],
      });
      kvs = res.responses.map((r) => r.response_range.kvs[0]);
    } catch (err) {
      throw unavailable(err);
    }
    const [nodeKv, fenceKv] = kvs;
    let record: NodeRecord | undefined;
    try {
      record = nodeKv && parseNodeRecord(this.#nodeKey, nodeKv.value.toString());
    } catch (err) {
      this.#options.log("warn", "node key holds an unreadable record", { key: this.#nodeKey, error: err });
    }
    return { nodeKv, fenceKv, record };
  }

  /**
   * One txn: if the node key is still as read (absent, or at the same ModRevision), put our record on
   * both keys with our leases. Then revokes the leases the keys were on (a crashed coild's, or the last
   * run's fence lease), which hold nothing any more. @returns false when the key changed.
   */
  async #write(nodeKv: IKeyValue | undefined, fenceKv: IKeyValue | undefined): Promise<boolean> {
    const liveness = this.#lease("liveness");
    const fence = this.#lease("fence");
    const [livenessId, fenceId] = await Promise.all([liveness.grant(), fence.grant()]);
    const record: NodeRecord = {
      node: this.#options.node,
      startedAt: this.#startedAt,
      version: this.#options.version,
      holder: { ...this.#self, leaseId: livenessId },
    };
    const key = Buffer.from(this.#nodeKey);
    const compare: ICompare = nodeKv
      ? { key, target: "Mod", result: "Equal", mod_revision: nodeKv.mod_revision }
      : { key, target: "Create", result: "Equal", create_revision: 0 };
    const put = (key: string, lease: string): IRequestOp => ({
      request_put: { key: Buffer.from(key), value: Buffer.from(JSON.stringify(record)), lease },
    });
    let succeeded: boolean;
    try {
      const res = await this.#options.client.kv.txn({
        compare: [compare],
        success: [put(this.#nodeKey, livenessId), put(this.#fenceKey, fenceId)],
      });
      succeeded = res.succeeded;
    } catch (err) {
      throw unavailable(err);
    }
    // A lease lost meanwhile would leave a key without keep-alive: start over with a new one.
    if (!succeeded || liveness.revoked() || fence.revoked()) return false;
    this.#record = record;
    this.#held = true;
    for (const old of new Set([nodeKv?.lease, fenceKv?.lease])) {
      if (old && old !== "0" && old !== livenessId && old !== fenceId) await this.#revokeQuietly(old);
    }
    return true;
  }

  /** The current lease of `kind`, or a new one (granted now, kept alive) when it is missing or lost. */
  #lease(kind: LeaseKind): Lease {
    const current = this.#leases[kind];
    if (current && !current.revoked()) return current;
    const ttl = kind === "liveness" ? this.#options.ttlSeconds : this.#options.deadAfterSeconds;
    const lease = this.#options.client.lease(ttl);
    lease.on("lost", (err: unknown) => {
      if (this.#closed || !this.#held || this.#leases[kind] !== lease) return;
      this.#held = false;
      this.#reacquiring = this.#reacquire(kind, err);
    });
    this.#leases[kind] = lease;
    return lease;
  }

  async #reacquire(kind: LeaseKind, reason: unknown): Promise<void> {
    const { log } = this.#options;
    log("warn", "node lease lost; acquiring the node name again", {
      key: this.#nodeKey,
      lease: kind,
      error: reason,
    });
    try {
      await this.#acquire();
    } catch (err) {
      if (this.#closed) return;
      // Another coild holds the name: let go of it all (our leases hold no key of it any more).
      log("error", "node name taken by another coild; this coild must stop", {
        key: this.#nodeKey,
        error: err,
      });
      this.#closed = true;
      await this.#revokeLeases();
      this.#options.onFenced?.((err as Error).message);
      return;
    }
    try {
      await this.#options.onReacquired?.();
    } catch (err) {
      log("error", "re-reading the node's state after acquiring its name again failed", { error: err });
    }
  }

  async #revokeQuietly(id: string): Promise<void> {
    try {
      await this.#options.client.leaseClient.leaseRevoke({ ID: id });
    } catch (err) {
      this.#options.log("debug", "revoking an old node lease failed; it expires by itself", {
        lease: id,
        error: err,
      });
    }
  }

  async #revokeLeases(): Promise<void> {
    for (const lease of Object.values(this.#leases)) await lease.revoke().catch(() => {});
    this.#leases = {};
  }

  /** Milliseconds until the lease of `kv` expires if nobody keeps it alive (a key without lease: one TTL). */
  async #remainingMs(kv: IKeyValue): Promise<number> {
    if (kv.lease === "0") return this.#options.ttlSeconds * 1000;
    try {
      const res = await this.#options.client.leaseClient.leaseTimeToLive({ ID: kv.lease });
      return Math.max(0, Number(res.TTL)) * 1000;
    } catch (err) {
      throw unavailable(err);
    }
  }

  /**
   * Revokes the liveness lease, which deletes the node key at once, and stops renewing the fence lease,
   * which expires after --node-dead-after: pods keep running while coild restarts. Idempotent. A revoke
   * that fails (etcd down) is logged: the key then expires with the lease.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stop.abort();
    await this.#reacquiring;
    const { liveness, fence } = this.#leases;
    fence?.release();
    if (!liveness) return;
    try {
      await liveness.revoke();
      if (this.#held) this.#options.log("info", "node unregistered", { key: this.#nodeKey });
    } catch (err) {
      this.#options.log("warn", "node lease revoke failed; the key expires with the lease", {
        key: this.#nodeKey,
        error: err,
      });
    }
    this.#held = false;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Waits `ms`, or less when `signal` aborts. */
async function pause(ms: number, signal: AbortSignal): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: () => void = () => {};
  await new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
    onAbort = resolve;
    signal.addEventListener("abort", onAbort, { once: true });
  });
  clearTimeout(timer);
  signal.removeEventListener("abort", onAbort);
}
