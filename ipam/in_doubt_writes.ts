// Writes that timed out: etcd may still commit such a write (a lost reply, or a request delivered after
// a partition heals), so each is settled with a write, not a read. A fence of each block an address
// write involved makes a late commit fail its compare and reads, in the same txn, what etcd holds; a
// block claim in doubt is claimed again, which a late copy of it then finds taken.

import type { Cidr } from "./cidr.ts";
import type { BlockState } from "./etcd_values.ts";
import { IpamError, isIpamError } from "./errors.ts";
import type { IpamStore } from "./ipam_store.ts";
import { blockId } from "./keys.ts";
import { addClaimedBlock, applyBlockState, type NodeState } from "./node_state.ts";
import { type OwnedBlockState, type Reservation, undoReservations } from "./owned_blocks.ts";
import type { BlockRecord } from "./records.ts";

/** A block claim that timed out: its block may be ours in etcd without this node knowing it. */
interface ClaimInDoubt {
  pool: string;
  cidr: Cidr;
  record: BlockRecord;
}

/** Fences of one block re-run with the revision just read, while the block stays ours. */
const MAX_FENCE_ATTEMPTS = 5;

/** The node's writes in doubt. Allocations and releases wait while `blocking` holds. */
export class InDoubtWrites {
  #store: IpamStore;
  #state: NodeState;
  /** The reservations of each write that timed out. */
  #writes: Reservation[][] = [];
  #claims: ClaimInDoubt[] = [];
  #settling: Promise<void> | undefined;

  constructor(store: IpamStore, state: NodeState) {
    this.#store = store;
    this.#state = state;
  }

  /** Whether a request must settle() first: a settle is running or a write is in doubt. */
  get blocking(): boolean {
    return this.#settling !== undefined || this.#writes.length > 0 || this.#claims.length > 0;
  }

  /**
   * `store` with its block claims watched: one that fails as "unavailable" is in doubt until settled
   * (it would otherwise leave a block of ours in etcd that this node neither uses nor releases).
   */
  watchingClaims(store: IpamStore): IpamStore {
    const claimBlock: IpamStore["claimBlock"] = (pool, cidr, record) =>
      store.claimBlock(pool, cidr, record).catch((err) => {
        if (isIpamError(err, "unavailable")) this.#claims.push({ pool, cidr, record });
        throw err;
      });
    return new Proxy(store, {
      get(target, name) {
        if (name === "claimBlock") return claimBlock;
        const value = Reflect.get(target, name, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }

  /** Records a write that timed out; its reservations stay taken until settled. */
  add(reservations: Reservation[]): void {
    this.#writes.push(reservations);
  }

  /**
   * Waits for a running settle, then settles every write still in doubt: fences each involved block
   * (IpamStore.fenceBlock), then frees what etcd does not hold and adopts what it does (the attachment
   * becomes known, so a retried ADD gets the same addresses and DEL frees them); claims each block of a
   * claim in doubt again, adopting it when it is ours. Requests wait meanwhile, so adoption is not
   * skipped and no request acts on memory about to change.
   * @throws {IpamError} "unavailable" when a fence or claim fails; what failed then stays in doubt.
   */
  async settle(): Promise<void> {
    while (this.blocking) await (this.#settling ?? this.#settleOnce());
  }

  #settleOnce(): Promise<void> {
    this.#settling ??= (async () => {
      const claims = this.#claims.splice(0);
      const settledClaims = await Promise.allSettled(claims.map((c) => this.#settleClaim(c)));
      this.#claims.unshift(...claims.filter((_, i) => settledClaims[i].status === "rejected"));
      const failedClaim = settledClaims.find((c) => c.status === "rejected");
      if (failedClaim) throw failedClaim.reason;
      const batch = this.#writes.splice(0);
      const blocks = new Map(batch.flat().map((r) => [blockId(r.block.cidr), r.block]));
      const fences = await Promise.allSettled([...blocks.values()].map((b) => this.#fence(b)));
      const states = fences.flatMap((f) => (f.status === "fulfilled" ? [f.value] : []));
      const failed = fences.find((f) => f.status === "rejected");
      if (failed) {
        this.#writes.unshift(...batch);
        for (const state of states) applyBlockState(this.#state, state);
        throw failed.reason;
      }
      for (const reservations of batch) undoReservations(reservations);
      for (const state of states) applyBlockState(this.#state, state);
    })().finally(() => this.#settling = undefined);
    return this.#settling;
  }

  /**
   * Claims the block of a claim in doubt again. Claimed now, or found ours: it becomes known (and
   * exported); another node's: left to it. Either way a late copy of the first claim finds the key
   * taken. A late copy that arrives after this node released the block again would claim it unknown to
   * the node; TCP delivers a partition's backlog right after the heal, before such a release.
   */
  async #settleClaim({ pool, cidr, record }: ClaimInDoubt): Promise<void> {
    const known = () => this.#state.blocks.has(blockId(cidr));
    const outcome = await this.#store.claimBlock(pool, cidr, record);
    if (outcome.claimed) {
      if (!known()) addClaimedBlock(this.#state, { pool, cidr, ...outcome });
      return;
    }
    if (outcome.owner?.node !== this.#state.node || known()) return;
    const read = await this.#store.readBlock(pool, cidr);
    if (read.block?.record.node !== this.#state.node || known()) return;
    addClaimedBlock(this.#state, { pool, cidr, revision: read.block.revision, addresses: read.addresses });
  }

  /**
   * Fences one block. When the compare fails the block key changed since the revision we know, so a
   * write comparing that revision can no longer commit either; while the block is still ours, fence
   * again with its fresh revision, so that we know its revision again.
   */
  async #fence(block: OwnedBlockState): Promise<BlockState> {
    let revision = block.revision;
    for (let attempt = 1;; attempt++) {
      const { fenced, state } = await this.#store.fenceBlock({
        pool: block.pool,
        cidr: block.cidr,
        revision,
      });
      if (fenced || !state.block || state.block.record.node !== this.#state.node) return state;
      if (attempt >= MAX_FENCE_ATTEMPTS) {
        const id = blockId(block.cidr);
        throw new IpamError(
          "unavailable",
          `Cannot settle writes to block "${id}": it changed ${attempt} times`,
        );
      }
      revision = state.block.revision;
    }
  }
}
