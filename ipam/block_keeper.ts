// Claims and releases this node's blocks: one claim in flight per pool+family (requests and the spare
// claim share it), a spare claimed in the background before the blocks run out, and release txns.

import { claimBlock, type ClaimContext } from "./block_claim.ts";
import { type Cidr, type Family, formatCidr } from "./cidr.ts";
import type { IpamStore } from "./etcd_store.ts";
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
  #claims = new Map<string, Promise<OwnedBlockState>>();
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
      random: options.random,
      now: options.now,
      log: state.log,
      onRetry: () => state.retries++,
    };
  }

  /**
   * Claims a block of the pool+family; concurrent callers share one claim.
   * @throws {IpamError} "exhausted", "conflict" or "unavailable", as claimBlock().
   */
  claim(pool: Pool, family: Family): Promise<OwnedBlockState> {
    const group = `${pool.name}|${family}`;
    const pending = this.#claims.get(group);
    if (pending) return pending;
    const promise = claimBlock(this.#claimContext, pool, family).then((claimed) =>
      addClaimedBlock(this.#state, claimed)
    );
    this.#claims.set(group, promise);
    const forget = () => void this.#claims.delete(group);
    promise.then(forget, forget);
    return promise;
  }

  /** Starts a background claim when free addresses of the pool+family dropped below a quarter block. */
  ensureSpare(pool: Pool, family: Family): void {
    if (this.#closed || this.#claims.has(`${pool.name}|${family}`)) return;
    if (!needsSpare(this.#state.blocks, pool.name, family, 2 ** pool.blockSizeBits)) return;
    const work = this.claim(pool, family).then(
      () => {},
      (err) =>
        this.#state.log({ event: "spare block claim failed", pool: pool.name, family, error: String(err) }),
    );
    this.#background.add(work);
    work.finally(() => this.#background.delete(work));
  }

  /** Releases a block a release just emptied, when canRelease() allows; a failure is only logged. */
  async releaseIfSurplus(block: OwnedBlockState): Promise<void> {
    if (!canRelease(this.#state.blocks, block)) return;
    await this.release(block).catch((err) =>
      this.#state.log({ event: "block release failed", block: formatCidr(block.cidr), error: String(err) })
    );
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
   * Releases the empty blocks, keeping enough room per pool+family (see releasable()), or none for a
   * pool that no longer exists.
   * @throws {IpamError} the first failure, after trying every block.
   */
  async releaseEmpty(): Promise<Cidr[]> {
    const groups = new Map<string, { pool: string; family: Family; exists: boolean }>();
    for (const b of this.#state.blocks.values()) {
      groups.set(`${b.pool}|${b.cidr.family}`, { pool: b.pool, family: b.cidr.family, exists: true });
    }
    // Read the pools first, so that choosing blocks and marking them releasing happen in one turn.
    for (const group of groups.values()) group.exists = await this.#pools.exists(group.pool);
    const victims = [...groups.values()].flatMap((g) =>
      releasable(this.#state.blocks, g.pool, g.family, g.exists)
    );
    const results = await Promise.allSettled(victims.map((b) => this.release(b)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    return victims.filter((_, i) => (results[i] as PromiseFulfilledResult<boolean>).value).map((b) => b.cidr);
  }

  /** Resolves when no claim is in flight. */
  async settled(): Promise<void> {
    while (this.#background.size > 0 || this.#claims.size > 0) {
      await Promise.allSettled([...this.#background, ...this.#claims.values()]);
    }
  }

  /** Starts no more spare claims and waits for those in flight. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.settled();
  }
}
