// Claims and releases this node's blocks: one claim in flight per pool+family (requests and the spare
// claim share it), a spare claimed in the background before the blocks run out, and release txns. A
// spare is kept only while its pool has room for every node that asks: it never takes a pool's last
// free block, and an empty block goes once the pool has no unclaimed block left.

import { isEmpty } from "./block_allocator.ts";
import { blockSpace, claimBlock, type ClaimContext, indexOfBlock, LIST_LIMIT } from "./block_claim.ts";
import { type Cidr, type Family, formatCidr } from "./cidr.ts";
import { isIpamError } from "./errors.ts";
import type { IpamStore } from "./ipam_store.ts";
import { addClaimedBlock, applyBlockState, dropBlock, type NodeState } from "./node_state.ts";
import { canRelease, needsSpare, type OwnedBlockState, releasable } from "./owned_blocks.ts";
import type { Pool } from "./pool.ts";
import type { PoolCache } from "./pool_cache.ts";

/** Owns the node's background claims: call close() (it waits for them). */
export class BlockKeeper {
  #state: NodeState;
  #store: IpamStore;
  #pools: PoolCache;
  #claimContext: ClaimContext;
  #claims = new Map<string, { promise: Promise<OwnedBlockState>; spare: boolean }>();
  #background = new Set<Promise<void>>();
  #closed = false;

  constructor(
    state: NodeState,
    store: IpamStore,
    pools: PoolCache,
    options: { random: () => number; now: () => Date },
  ) {
    this.#state = state;
    this.#store = store;
    this.#pools = pools;
    this.#claimContext = {
      store,
      node: state.node,
      ownedBlocks: () => [...state.blocks.values()].map((b) => b.cidr),
      random: options.random,
      now: options.now,
      log: state.log,
      onRetry: () => state.retries++,
    };
  }

  /**
   * Claims a block of the pool+family; concurrent callers share one claim. A request that finds a spare
   * claim in flight waits for it, and claims for itself if the spare claim failed otherwise than with
   * etcd unavailable (it may take the last free block, which a spare may not).
   * @throws {IpamError} "exhausted", "conflict" or "unavailable", as claimBlock().
   */
  claim(pool: Pool, family: Family, options: { spare?: boolean } = {}): Promise<OwnedBlockState> {
    const group = `${pool.name}|${family}`;
    const pending = this.#claims.get(group);
    if (pending) {
      // etcd that did not answer the spare claim will not answer a second one: one deadline, not two.
      return pending.spare && !options.spare
        ? pending.promise.catch((err) =>
          isIpamError(err, "unavailable") ? Promise.reject(err) : this.claim(pool, family)
        )
        : pending.promise;
    }
    const spare = options.spare ?? false;
    const promise = claimBlock(this.#claimContext, pool, family, { spare }).then((claimed) =>
      addClaimedBlock(this.#state, claimed)
    );
    const entry = { promise, spare };
    this.#claims.set(group, entry);
    const forget = () => {
      if (this.#claims.get(group) === entry) this.#claims.delete(group);
    };
    promise.then(forget, forget);
    return promise;
  }

  /** Starts a background claim when free addresses of the pool+family dropped below a quarter block. */
  ensureSpare(pool: Pool, family: Family): void {
    if (this.#closed || this.#claims.has(`${pool.name}|${family}`)) return;
    if (!needsSpare(this.#state.blocks, pool.name, family, 2 ** pool.blockSizeBits)) return;
    const work = this.claim(pool, family, { spare: true }).then(
      () => {},
      (err) =>
        this.#state.log({ event: "spare block claim failed", pool: pool.name, family, error: String(err) }),
    );
    this.#background.add(work);
    work.finally(() => this.#background.delete(work));
  }

  /**
   * Releases a block a release just emptied, when canRelease() allows or, for the block kept as the
   * spare, when its pool has no unclaimed block left. A failure is only logged.
   */
  async releaseIfSurplus(block: OwnedBlockState): Promise<void> {
    try {
      if (!canRelease(this.#state.blocks, block)) {
        if (block.releasing || !isEmpty(block.allocator)) return;
        const pool = this.#pools.get(block.pool);
        if (!pool || !await this.#poolFull(pool, block.cidr.family)) return;
      }
      await this.release(block);
    } catch (err) {
      this.#state.log({ event: "block release failed", block: formatCidr(block.cidr), error: String(err) });
    }
  }

  /**
   * Whether every block of the pool+family is claimed, by a keys-only read. A pool too big to list
   * (see LIST_LIMIT) is never that full in practice, and listing it per release would cost too much.
   * @throws {IpamError} "unavailable".
   */
  async #poolFull(pool: Pool, family: Family): Promise<boolean> {
    const space = blockSpace(pool, family);
    if (space.total > LIST_LIMIT) return false;
    const claimed = (await this.#store.claimedBlocks(pool.name))
      .filter((cidr) => indexOfBlock(space, cidr) !== undefined);
    return BigInt(claimed.length) >= space.total;
  }

  /**
   * One txn: the block goes if it is still ours (same ModRevision) and its address range is empty.
   * While it runs the block takes no reservation. A refused release brings memory in line with etcd.
   * @returns whether it was released.
   * @throws {IpamError} "unavailable".
   */
  async release(block: OwnedBlockState): Promise<boolean> {
    if (block.releasing || block.allocator.used > 0) return false;
    block.releasing = true;
    try {
      const outcome = await this.#store.releaseBlock({
        pool: block.pool,
        cidr: block.cidr,
        revision: block.revision,
      });
      if (outcome.released) {
        dropBlock(this.#state, block, "block released");
        return true;
      }
      applyBlockState(this.#state, outcome.state);
      return false;
    } finally {
      block.releasing = false;
    }
  }

  /**
   * Releases the empty blocks, keeping enough room per pool+family (see releasable()) while the pool
   * has unclaimed blocks left, and none for a pool that is full or no longer exists.
   * @throws {IpamError} the first failure, after trying every block.
   */
  async releaseEmpty(): Promise<Cidr[]> {
    const groups = new Map<string, { pool: string; family: Family; keepSpare: boolean }>();
    for (const b of this.#state.blocks.values()) {
      groups.set(`${b.pool}|${b.cidr.family}`, { pool: b.pool, family: b.cidr.family, keepSpare: true });
    }
    // Read the pools first, so that choosing blocks and marking them releasing happen in one turn.
    for (const g of groups.values()) {
      g.keepSpare = await this.#pools.exists(g.pool);
      const { blocks } = this.#state;
      const spareKept = releasable(blocks, g.pool, g.family, false).length >
        releasable(blocks, g.pool, g.family, true).length;
      // Whether the pool is full matters only when a spare would be kept.
      const pool = this.#pools.get(g.pool);
      if (g.keepSpare && spareKept && pool) g.keepSpare = !await this.#poolFull(pool, g.family);
    }
    const victims = [...groups.values()].flatMap((g) =>
      releasable(this.#state.blocks, g.pool, g.family, g.keepSpare)
    );
    const results = await Promise.allSettled(victims.map((b) => this.release(b)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    return victims.filter((_, i) => (results[i] as PromiseFulfilledResult<boolean>).value).map((b) => b.cidr);
  }

  /** Resolves when no claim is in flight. */
  async settled(): Promise<void> {
    while (this.#background.size > 0 || this.#claims.size > 0) {
      await Promise.allSettled([...this.#background, ...[...this.#claims.values()].map((c) => c.promise)]);
    }
  }

  /** Starts no more spare claims and waits for those in flight. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.settled();
  }
}
