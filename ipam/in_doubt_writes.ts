// Address writes that timed out: etcd may still commit such a write, so its addresses stay reserved
// until it is settled with a write, not a read. A fence of each involved block makes a late commit
// fail its compare and reads, in the same txn, what etcd holds.

import type { BlockState } from "./etcd_values.ts";
import { IpamError } from "./errors.ts";
import type { IpamStore } from "./ipam_store.ts";
import { blockId } from "./keys.ts";
import { applyBlockState, type NodeState } from "./node_state.ts";
import { type OwnedBlockState, type Reservation, undoReservations } from "./owned_blocks.ts";

/** Fences of one block re-run with the revision just read, while the block stays ours. */
const MAX_FENCE_ATTEMPTS = 5;

/** The node's writes in doubt. Allocations and releases wait while `blocking` holds. */
export class InDoubtWrites {
  #store: IpamStore;
  #state: NodeState;
  /** The reservations of each write that timed out. */
  #writes: Reservation[][] = [];
  #settling: Promise<void> | undefined;

  constructor(store: IpamStore, state: NodeState) {
    this.#store = store;
    this.#state = state;
  }

  /** Whether a request must settle() first: a settle is running or a write is in doubt. */
  get blocking(): boolean {
    return this.#settling !== undefined || this.#writes.length > 0;
  }

  /** Records a write that timed out; its reservations stay taken until settled. */
  add(reservations: Reservation[]): void {
    this.#writes.push(reservations);
  }

  /**
   * Waits for a running settle, then settles every write still in doubt: fences each involved block
   * (IpamStore.fenceBlock), then frees what etcd does not hold and adopts what it does (the attachment
   * becomes known, so a retried ADD gets the same addresses and DEL frees them). Requests wait
   * meanwhile, so adoption is not skipped and no request acts on memory about to change.
   * @throws {IpamError} "unavailable" when a fence fails; every write then stays in doubt.
   */
  async settle(): Promise<void> {
    while (this.blocking) await (this.#settling ?? this.#settleOnce());
  }

  #settleOnce(): Promise<void> {
    this.#settling ??= (async () => {
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
