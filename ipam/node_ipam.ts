// The IPAM of one node: hands out addresses from the blocks this node owns, claims and releases blocks
// in etcd, and rebuilds that state from etcd at start. Decisions are made in memory (the node owns its
// blocks) and persisted with one txn that also checks that every involved block is still ours.

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
import { IpamError, isIpamError } from "./errors.ts";
import { InDoubtWrites } from "./in_doubt_writes.ts";
import type { BlockState, StoredAddress } from "./etcd_values.ts";
import type { IpamStore, NewAddress } from "./ipam_store.ts";
import { blockId } from "./keys.ts";
import type { BlockRef } from "./node_block_index.ts";
import { applyBlockState, dropBlock, newNodeState, type NodeState } from "./node_state.ts";
import { type OwnedBlockState, type Reservation, reserveAddress, undoReservations } from "./owned_blocks.ts";
import type { Pool } from "./pool.ts";
import { PoolCache } from "./pool_cache.ts";
import type { AddressRecord } from "./records.ts";

export type { AllocatedAddress, Allocation, AllocationRequest, OwnedBlock } from "./allocation.ts";

export interface NodeIpamOptions {
  /** Where blocks and addresses live: createEtcdStore(client, prefix) in coild. */
  store: IpamStore;
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
   * without it (or the pool has no unclaimed block left), releases the block too. Idempotent: an
   * unknown attachment gives undefined.
   * @throws {IpamError} "unavailable" (the allocation is kept, so a retry can finish the job).
   */
  release(network: string, containerId: string, ifName: string): Promise<Allocation | undefined>;
  find(network: string, containerId: string, ifName: string): Allocation | undefined;
  allocations(): Allocation[];
  /** Sorted by pool, family and address. */
  ownedBlocks(): OwnedBlock[];
  /** The subnets of the pools as this node knows them (no etcd read): what an aggregate must stay inside. */
  poolSubnets(): Cidr[];
  /** `listener` runs after every claim, release or loss of a block. */
  onBlocksChanged(listener: () => void): void;
  /**
   * Releases empty blocks, keeping per pool+family at least one block (and a quarter block free)
   * while the pool has unclaimed blocks left, and none for a pool that is full or no longer exists.
   * Blocks found gone or taken on the way are dropped (listeners told). Returns the blocks released.
   * @throws {IpamError} the first failure, after trying every block.
   */
  releaseEmptyBlocks(): Promise<Cidr[]>;
  /**
   * Re-reads every owned block and drops those gone or owned by another node (listeners told), e.g.
   * after the node's lease was lost and `coil node remove --force` ran meanwhile. Allocations in a lost
   * block stay listed, so the caller can find the pods that must stop using them; releasing them later
   * leaves alone any address key someone else wrote since.
   * @returns the lost blocks.
   * @throws {IpamError} "unavailable" (blocks read until then are applied).
   */
  refreshBlocks(): Promise<Cidr[]>;
  /** Whether a pool serves the namespace (from the cache; etcd is read only on a miss). Never throws IpamError. */
  canServe(podNamespace: string): Promise<{ ok: boolean; reason?: string }>;
  /**
   * Whether any pool exists, so that some pods can be served (STATUS, readiness: a node serving only
   * namespace pools is ready). Never throws IpamError.
   */
  canServeAny(): Promise<{ ok: boolean; reason?: string }>;
  /** Txns re-run so far: block claims that lost a race, plus address writes re-run after a failed compare. */
  claimRetries(): number;
  /** Resolves when no block claim (e.g. the background spare) is in flight. */
  settled(): Promise<void>;
  /** Whether a write is in doubt (it timed out): the next allocate() or release() settles it first. */
  writesInDoubt(): boolean;
  /** Stops background work and the pool watch; does not close the etcd client. Idempotent. */
  close(): Promise<void>;
}

/** Address writes re-run at most this often after a failed compare. */
const MAX_WRITE_ATTEMPTS = 5;

/** Claims one request may wait for while concurrent requests use up every new block. */
const MAX_RESERVE_ROUNDS = 1024;

/**
 * Loads every block this node owns and every address in them from the store, and starts watching pools.
 * @throws {IpamError} "invalid" for an empty node name, "unavailable" when etcd fails.
 */
export async function createNodeIpam(options: NodeIpamOptions): Promise<NodeIpam> {
  if (!options.node) throw new IpamError("invalid", "Invalid node name: it is empty");
  const { store } = options;
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
  /** One set per refreshBlocks() in flight: the attachments released while its reads run. */
  #releasedDuringRefresh = new Set<Set<string>>();
  #inDoubt: InDoubtWrites;

  constructor(store: IpamStore, pools: PoolCache, options: NodeIpamOptions) {
    this.#store = store;
    this.#pools = pools;
    this.#now = options.now ?? (() => new Date());
    const busy = (key: string) => this.#allocating.has(key) || this.#releasing.has(key);
    this.#state = newNodeState(options.node, options.log ?? (() => {}), busy);
    this.#inDoubt = new InDoubtWrites(store, this.#state);
    this.#keeper = new BlockKeeper(this.#state, this.#inDoubt.watchingClaims(store), pools, {
      random: options.random ?? Math.random,
      now: this.#now,
    });
  }

  /**
   * Reads the blocks this node's index lists (node_block_index.ts) and adopts those still ours, then
   * drops stale entries. An index not yet complete (data from before it existed) costs one scan of
   * every block key, after which the index is built, so later starts read only this node's blocks.
   */
  async load(): Promise<void> {
    const { node, log } = this.#state;
    const index = await this.#store.readNodeIndex(node);
    for (const { key, problem } of index.bad) log({ event: "bad node index key", key, problem });
    let candidates: BlockRef[] = index.blocks;
    if (!index.complete) {
      const { blocks, bad } = await this.#store.allBlocks();
      for (const { key, problem } of bad) log({ event: "bad block key", key, problem });
      candidates = blocks.filter((b) => b.record.node === node);
    }
    const reads = await Promise.all(candidates.map((b) => this.#store.readBlock(b.pool, b.cidr)));
    for (const read of reads) applyBlockState(this.#state, read, true);
    const mine = new Set(reads.filter((r) => r.block?.record.node === node).map((r) => blockId(r.cidr)));
    const stale = index.blocks.filter((b) => !mine.has(blockId(b.cidr)));
    if (index.complete && stale.length === 0 && index.bad.length === 0) return;
    const add = index.complete ? [] : candidates.filter((b) => mine.has(blockId(b.cidr)));
    try {
      await this.#store.updateNodeIndex(node, { add, remove: stale, bad: index.bad.map((b) => b.key) });
    } catch (err) {
      // The blocks are loaded; an index left as it was is only rebuilt or cleaned at the next start.
      if (!isIpamError(err, "unavailable") && !isIpamError(err, "no-space")) throw err;
      log({ event: "node index update failed", node, error: err.message });
    }
  }

  allocate(req: AllocationRequest): Promise<Allocation> {
    if (this.#inDoubt.blocking) return this.#inDoubt.settle().then(() => this.allocate(req));
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
        // One refused for lack of space ("no-space") wrote nothing, and settling it would need a write.
        if (isIpamError(err, "unavailable")) this.#inDoubt.add(reservations);
        else undoReservations(reservations);
        throw err;
      });
      // The etcd client re-sends a write whose attempt failed fast to the next member (etcd_client.ts).
      // When that attempt committed after all (its member died once it had proposed), the re-send's
      // compare fails on our own keys: keys holding this very record, createdAt included, are that commit.
      const states = outcome.ok ? [] : outcome.states;
      const revisions = outcome.ok
        ? reservations.map(() => outcome.revision)
        : committedEarlier(states, addresses, this.#state.node);
      if (revisions) {
        const allocation: Allocation = {
          ...meta,
          addresses: reservations.map((r) => ({ family: r.ip.family, address: r.ip, block: r.block.cidr })),
        };
        const stored = reservations.map((r, i) => ({
          key: this.#store.keys.address(r.block.cidr, r.ip),
          revision: revisions[i],
        }));
        this.#state.attachments.set(key, { allocation, stored });
        if (!outcome.ok) {
          for (const read of states) applyBlockState(this.#state, read);
          this.#state.log({ event: "address write found committed", pool: pool.name, containerId, attempt });
        }
        for (const family of families) this.#keeper.ensureSpare(pool, family);
        return allocation;
      }
      // Undo before applying the reads, which mark the addresses found in etcd used again.
      undoReservations(reservations);
      for (const read of states) applyBlockState(this.#state, read);
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
    if (this.#inDoubt.blocking) {
      return this.#inDoubt.settle().then(() => this.release(network, containerId, ifName));
    }
    const key = attachmentKey(network, containerId, ifName);
    const pending = this.#releasing.get(key);
    if (pending) return pending;
    // An ADD in flight may end with its write in doubt: start over then, so the settle comes first.
    const allocating = this.#allocating.get(key);
    if (allocating) {
      return allocating.catch(() => undefined).then(() => this.release(network, containerId, ifName));
    }
    const promise = this.#releaseNow(key).finally(() => this.#releasing.delete(key));
    this.#releasing.set(key, promise);
    return promise;
  }

  async #releaseNow(key: string): Promise<Allocation | undefined> {
    const entry = this.#state.attachments.get(key);
    if (!entry) return undefined;
    const left = new Set(await this.#store.releaseAddresses(entry.stored));
    this.#state.attachments.delete(key);
    for (const released of this.#releasedDuringRefresh) released.add(key);
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

  poolSubnets(): Cidr[] {
    return this.#pools.subnets();
  }

  onBlocksChanged(listener: () => void): void {
    this.#state.listeners.push(listener);
  }

  releaseEmptyBlocks(): Promise<Cidr[]> {
    return this.#keeper.releaseEmpty();
  }

  async refreshBlocks(): Promise<Cidr[]> {
    const blocks = [...this.#state.blocks.values()];
    // A read taken before a release that ends while the reads run must not bring that attachment back:
    // its pod's next ADD would get the address from memory, with no key in etcd.
    const released = new Set<string>();
    this.#releasedDuringRefresh.add(released);
    const reads = await Promise.allSettled(blocks.map((b) => this.#store.readBlock(b.pool, b.cidr)))
      .finally(() => this.#releasedDuringRefresh.delete(released));
    const current = (a: StoredAddress) =>
      !a.record || !released.has(attachmentKey(a.record.network, a.record.containerId, a.record.ifName));
    const lost: Cidr[] = [];
    for (const [i, read] of reads.entries()) {
      if (read.status === "rejected") continue;
      // A block this node released meanwhile, or is releasing, is not lost: its own release decides.
      if (blocks[i].releasing || this.#state.blocks.get(blockId(blocks[i].cidr)) !== blocks[i]) continue;
      const owner = read.value.block?.record.node;
      if (owner !== this.#state.node) {
        dropBlock(this.#state, blocks[i], "block lost", { owner });
        lost.push(blocks[i].cidr);
      } else {
        applyBlockState(this.#state, { ...read.value, addresses: read.value.addresses.filter(current) });
      }
    }
    const failed = reads.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    return lost;
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

  async canServeAny(): Promise<{ ok: boolean; reason?: string }> {
    try {
      return (await this.#pools.anyPool())
        ? { ok: true }
        : { ok: false, reason: `No pool exists: create one with "coil pool create"` };
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

  writesInDoubt(): boolean {
    return this.#inDoubt.blocking;
  }

  async close(): Promise<void> {
    await this.#pools.close();
    await this.#keeper.close();
  }
}

/**
 * The ModRevisions of `addresses` when the reads show each one in a block still ours, holding exactly
 * the record written; else undefined (the write did not commit).
 */
function committedEarlier(states: BlockState[], addresses: NewAddress[], node: string): string[] | undefined {
  const revisions: string[] = [];
  for (const wanted of addresses) {
    const state = states.find((s) => s.block?.record.node === node && contains(s.cidr, wanted.ip));
    const found = state?.addresses.find((a) =>
      a.ip?.family === wanted.ip.family && a.ip.value === wanted.ip.value
    );
    if (!found?.record || !sameRecord(found.record, wanted.record)) return undefined;
    revisions.push(found.revision);
  }
  return revisions;
}

function sameRecord(a: AddressRecord, b: AddressRecord): boolean {
  const fields = new Set([...Object.keys(a), ...Object.keys(b)]) as Set<keyof AddressRecord>;
  return [...fields].every((f) => a[f] === b[f]);
}
