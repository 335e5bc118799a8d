// The IPAM of one node: hands out addresses from the blocks this node owns, claims and releases blocks
// in etcd, and rebuilds that state from etcd at start. Decisions are made in memory (the node owns its
// blocks) and persisted with one txn that also checks that every involved block is still ours.

import type { Etcd3 } from "etcd3";
import {
  addressRecordOf,
  type Allocation,
  type AllocationRequest,
  attachmentKey,
  type OwnedBlock,
} from "./allocation.ts";
import { markFree } from "./block_allocator.ts";
import { BlockKeeper } from "./block_keeper.ts";
import { type Cidr, contains, type Family, offsetOf } from "./cidr.ts";
import { createEtcdStore, type IpamStore } from "./etcd_store.ts";
import { IpamError, isIpamError } from "./errors.ts";
import { blockId } from "./keys.ts";
import { applyBlockState, newNodeState, type NodeState } from "./node_state.ts";
import { type OwnedBlockState, type Reservation, reserveAddress, undoReservations } from "./owned_blocks.ts";
import type { Pool } from "./pool.ts";
import { PoolCache } from "./pool_cache.ts";

export type { AllocatedAddress, Allocation, AllocationRequest, OwnedBlock } from "./allocation.ts";

export interface NodeIpamOptions {
  client: Etcd3;
  /** Key prefix, ending with `/`. */
  prefix: string;
  node: string;
  /** Structured events: block claimed, released or lost, lost claim races, retried writes, bad keys. */
  log?: (event: Record<string, unknown>) => void;
  random?: () => number;
  now?: () => Date;
}

/** Address management of one node. Every etcd failure is IpamError "unavailable". */
export interface NodeIpam {
  /**
   * One address per family of the pod's pool (IPv4 first), from this node's blocks, claiming a block
   * when none has room. Idempotent per (network, containerId, ifName): a repeat returns the same.
   * @throws {IpamError} "no-pool", "exhausted" (nothing changed), "invalid", "conflict", "unavailable".
   */
  allocate(req: AllocationRequest): Promise<Allocation>;
  /**
   * Frees the attachment's addresses; when that empties a block and its pool+family keeps enough room
   * without it, releases the block too. Idempotent: an unknown attachment gives undefined.
   * @throws {IpamError} "unavailable" (the allocation is kept, so a retry can finish the job).
   */
  release(network: string, containerId: string, ifName: string): Promise<Allocation | undefined>;
  find(network: string, containerId: string, ifName: string): Allocation | undefined;
  allocations(): Allocation[];
  /** Sorted by pool, family and address. */
  ownedBlocks(): OwnedBlock[];
  /** `listener` runs after every claim, release or loss of a block. */
  onBlocksChanged(listener: () => void): void;
  /**
   * Releases empty blocks, keeping per pool+family at least one block (and a quarter block free),
   * or none for a pool that no longer exists. Returns the blocks released.
   * @throws {IpamError} the first failure, after trying every block.
   */
  releaseEmptyBlocks(): Promise<Cidr[]>;
  /**
   * Releases every allocation of `network` not listed in `keep`; returns them.
   * @throws {IpamError} the first failure, after trying every allocation.
   */
  gc(network: string, keep: { containerId: string; ifName: string }[]): Promise<Allocation[]>;
  /** Whether a pool serves the namespace (from the cache; etcd is read only on a miss). Never throws IpamError. */
  canServe(podNamespace: string): Promise<{ ok: boolean; reason?: string }>;
  /** Txns re-run so far: block claims that lost a race, plus address writes re-run after a failed compare. */
  claimRetries(): number;
  /** Addition: resolves when no block claim (e.g. the background spare) is in flight. */
  settled(): Promise<void>;
  /** Stops background work and the pool watch; does not close the etcd client. Idempotent. */
  close(): Promise<void>;
}

/** Address writes re-run at most this often after a failed compare. */
const MAX_WRITE_ATTEMPTS = 5;
/** Claims one request may wait for while concurrent requests use up every new block. */
const MAX_RESERVE_ROUNDS = 1024;

/**
 * Loads every block this node owns and every address in them from etcd, and starts watching pools.
 * @throws {IpamError} "invalid" for an empty node name or a prefix without a trailing `/`,
 * "unavailable" when etcd fails.
 */
export async function createNodeIpam(options: NodeIpamOptions): Promise<NodeIpam> {
  if (!options.node) throw new IpamError("invalid", "Invalid node name: it is empty");
  if (!options.prefix.endsWith("/")) {
    throw new IpamError("invalid", `Invalid etcd prefix "${options.prefix}": it must end with "/"`);
  }
  const store = createEtcdStore(options.client, options.prefix);
  const pools = await PoolCache.open(store);
  try {
    const ipam = new LocalIpam(store, pools, options);
    await ipam.load();
    return ipam;
  } catch (err) {
    await pools.close();
    throw err;
  }
}

class LocalIpam implements NodeIpam {
  #store: IpamStore;
  #pools: PoolCache;
  #now: () => Date;
  #state: NodeState;
  #keeper: BlockKeeper;
  #allocating = new Map<string, Promise<Allocation>>();
  #releasing = new Map<string, Promise<Allocation | undefined>>();
  /** Reservations whose address write timed out: etcd may still have committed it. */
  #inDoubt: Reservation[][] = [];
  #settling: Promise<void> | undefined;

  constructor(store: IpamStore, pools: PoolCache, options: NodeIpamOptions) {
    this.#store = store;
    this.#pools = pools;
    this.#now = options.now ?? (() => new Date());
    const busy = (key: string) => this.#allocating.has(key) || this.#releasing.has(key);
    this.#state = newNodeState(options.node, options.log ?? (() => {}), busy);
    this.#keeper = new BlockKeeper(this.#state, store, pools, {
      random: options.random ?? Math.random,
      now: this.#now,
    });
  }

  async load(): Promise<void> {
    const { blocks, bad } = await this.#store.allBlocks();
    for (const { key, problem } of bad) this.#state.log({ event: "bad block key", key, problem });
    const mine = blocks.filter((b) => b.record.node === this.#state.node);
    const reads = await Promise.all(mine.map((b) => this.#store.readBlock(b.pool, b.cidr)));
    for (const read of reads) applyBlockState(this.#state, read, true);
  }

  allocate(req: AllocationRequest): Promise<Allocation> {
    if (this.#inDoubt.length) return this.#settleInDoubt().then(() => this.allocate(req));
    const key = attachmentKey(req.network, req.containerId, req.ifName);
    const releasing = this.#releasing.get(key);
    if (releasing) return releasing.catch(() => undefined).then(() => this.allocate(req));
    const known = this.#state.attachments.get(key);
    if (known) return Promise.resolve(known.allocation);
    const pending = this.#allocating.get(key);
    if (pending) return pending;
    const promise = this.#allocateNew(key, req).finally(() => this.#allocating.delete(key));
    this.#allocating.set(key, promise);
    return promise;
  }

  async #allocateNew(key: string, req: AllocationRequest): Promise<Allocation> {
    const pool = await this.#pools.select(req.podNamespace);
    const families = ([4, 6] as const).filter((f) => pool.subnets.some((s) => s.family === f));
    for (let attempt = 1;; attempt++) {
      const reservations = await this.#reserve(pool, families);
      const { network, containerId, ifName, podNamespace, podName, podUid, netns } = req;
      const base = { network, containerId, ifName, podNamespace, podName, podUid, netns };
      const meta = { ...base, pool: pool.name, node: this.#state.node, createdAt: this.#now().toISOString() };
      const record = addressRecordOf(meta);
      // Read the revisions only now: a refresh during a claim above may have moved them.
      const guards = [...new Set(reservations.map((r) => r.block))]
        .map((b) => ({ pool: b.pool, cidr: b.cidr, revision: b.revision }));
      const addresses = reservations.map((r) => ({ block: r.block.cidr, ip: r.ip, record }));
      const outcome = await this.#store.putAddresses(guards, addresses).catch((err) => {
        // A write that timed out may still commit: its addresses stay reserved until a read tells.
        if (isIpamError(err, "unavailable")) this.#inDoubt.push(reservations);
        else undoReservations(reservations);
        throw err;
      });
      if (outcome.ok) {
        const allocation: Allocation = {
          ...meta,
          addresses: reservations.map((r) => ({ family: r.ip.family, address: r.ip, block: r.block.cidr })),
        };
        const stored = reservations.map((r) => ({
          key: this.#store.keys.address(r.block.cidr, r.ip),
          revision: outcome.revision,
        }));
        this.#state.attachments.set(key, { allocation, stored });
        for (const family of families) this.#keeper.ensureSpare(pool, family);
        return allocation;
      }
      // Undo before applying the reads, which mark the addresses found in etcd used again.
      undoReservations(reservations);
      for (const read of outcome.states) applyBlockState(this.#state, read);
      if (attempt >= MAX_WRITE_ATTEMPTS) {
        throw new IpamError(
          "conflict",
          `Cannot allocate for container "${containerId}" in pool "${pool.name}": its blocks changed ` +
            `during each of ${attempt} attempts`,
        );
      }
      this.#state.retries++;
      this.#state.log({ event: "address write retried", pool: pool.name, containerId, attempt });
    }
  }

  /** Reserves one address per family in memory, claiming blocks as needed; all or nothing. */
  async #reserve(pool: Pool, families: Family[]): Promise<Reservation[]> {
    const held: Reservation[] = [];
    try {
      for (const family of families) {
        let reservation = reserveAddress(this.#state.blocks, pool.name, family);
        for (let round = 0; !reservation; round++) {
          if (round >= MAX_RESERVE_ROUNDS) {
            throw new IpamError(
              "conflict",
              `Cannot reserve an IPv${family} address in pool "${pool.name}": concurrent requests used up ` +
                `${round} new blocks`,
            );
          }
          await this.#keeper.claim(pool, family);
          reservation = reserveAddress(this.#state.blocks, pool.name, family);
        }
        held.push(reservation);
      }
      return held;
    } catch (err) {
      undoReservations(held);
      throw err;
    }
  }

  release(network: string, containerId: string, ifName: string): Promise<Allocation | undefined> {
    if (this.#inDoubt.length) {
      return this.#settleInDoubt().then(() => this.release(network, containerId, ifName));
    }
    const key = attachmentKey(network, containerId, ifName);
    const pending = this.#releasing.get(key);
    if (pending) return pending;
    const promise = this.#releaseNow(key).finally(() => this.#releasing.delete(key));
    this.#releasing.set(key, promise);
    return promise;
  }

  async #releaseNow(key: string): Promise<Allocation | undefined> {
    await this.#allocating.get(key)?.catch(() => undefined);
    const entry = this.#state.attachments.get(key);
    if (!entry) return undefined;
    const left = new Set(await this.#store.releaseAddresses(entry.stored));
    this.#state.attachments.delete(key);
    const emptied: OwnedBlockState[] = [];
    for (const { address, block: cidr } of entry.allocation.addresses) {
      const addressKey = this.#store.keys.address(cidr, address);
      if (left.has(addressKey)) {
        this.#state.log({ event: "address rewritten by another party, left alone", key: addressKey });
        continue;
      }
      const block = this.#state.blocks.get(blockId(cidr));
      if (!block || !contains(block.cidr, address)) continue;
      markFree(block.allocator, Number(offsetOf(block.cidr, address)));
      if (block.allocator.used === 0) emptied.push(block);
    }
    for (const block of emptied) await this.#keeper.releaseIfSurplus(block);
    return entry.allocation;
  }

  /**
   * Re-reads the blocks of writes that timed out, then frees what etcd does not hold and adopts what it
   * does (the attachment becomes known, so a retried ADD gets the same addresses and DEL frees them).
   * Runs before any new allocation or release, outside their in-flight marks, so adoption is not skipped.
   */
  #settleInDoubt(): Promise<void> {
    this.#settling ??= (async () => {
      const batch = this.#inDoubt.splice(0);
      try {
        const blocks = new Map(batch.flat().map((r) => [blockId(r.block.cidr), r.block]));
        const reads = await Promise.all(
          [...blocks.values()].map((b) => this.#store.readBlock(b.pool, b.cidr)),
        );
        for (const reservations of batch) undoReservations(reservations);
        for (const read of reads) applyBlockState(this.#state, read);
      } catch (err) {
        this.#inDoubt.unshift(...batch);
        throw err;
      }
    })().finally(() => this.#settling = undefined);
    return this.#settling;
  }

  find(network: string, containerId: string, ifName: string): Allocation | undefined {
    return this.#state.attachments.get(attachmentKey(network, containerId, ifName))?.allocation;
  }

  allocations(): Allocation[] {
    return [...this.#state.attachments.values()].map((e) => e.allocation);
  }

  ownedBlocks(): OwnedBlock[] {
    const order = (a: OwnedBlockState, b: OwnedBlockState) =>
      a.pool !== b.pool ? (a.pool < b.pool ? -1 : 1) : a.cidr.family - b.cidr.family ||
        (a.cidr.base < b.cidr.base ? -1 : a.cidr.base > b.cidr.base ? 1 : 0);
    return [...this.#state.blocks.values()].sort(order).map((b) => ({ pool: b.pool, block: b.cidr }));
  }

  onBlocksChanged(listener: () => void): void {
    this.#state.listeners.push(listener);
  }

  releaseEmptyBlocks(): Promise<Cidr[]> {
    return this.#keeper.releaseEmpty();
  }

  async gc(network: string, keep: { containerId: string; ifName: string }[]): Promise<Allocation[]> {
    const kept = new Set(keep.map((k) => attachmentKey(network, k.containerId, k.ifName)));
    const victims = [...this.#state.attachments.entries()]
      .filter(([key, e]) => e.allocation.network === network && !kept.has(key))
      .map(([, e]) => e.allocation);
    const results = await Promise.allSettled(
      victims.map((a) => this.release(a.network, a.containerId, a.ifName)),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    return results.flatMap((r) => (r.status === "fulfilled" && r.value ? [r.value] : []));
  }

  async canServe(podNamespace: string): Promise<{ ok: boolean; reason?: string }> {
    try {
      await this.#pools.select(podNamespace);
      return { ok: true };
    } catch (err) {
      if (err instanceof IpamError) return { ok: false, reason: err.message };
      throw err;
    }
  }

  claimRetries(): number {
    return this.#state.retries;
  }

  settled(): Promise<void> {
    return this.#keeper.settled();
  }

  async close(): Promise<void> {
    await this.#pools.close();
    await this.#keeper.close();
  }
}
