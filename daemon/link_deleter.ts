// Deletes host veths off coild's request loop. Unregistering a veth takes the kernel ~25 ms (RCU grace
// periods) inside the netlink call, and coild's netlink calls are synchronous: done on the main thread,
// a burst of DELs would stall every other pod's ADD behind them. A few workers, each with its own socket,
// also let the kernel overlap the deletions, as separate ptp processes do.

/** A request to a worker: delete link `name` if its alias is one of `aliases` (or it has none). */
export interface DeleteRequest {
  id: number;
  name: string;
  aliases: string[];
}

/** A worker's answer: whether it deleted the link, or the error's message. */
export type DeleteReply = { id: number; deleted: boolean } | { id: number; error: string };

/** Owns the worker threads; create it while the main thread is in the node's netns (at start-up). */
export class LinkDeleter {
  #workers: Worker[];
  #next = 0;
  #lastId = 0;
  #pending = new Map<number, { resolve: (deleted: boolean) => void; reject: (err: Error) => void }>();

  constructor(workers = 4) {
    const url = new URL("./link_delete_worker.ts", import.meta.url).href;
    this.#workers = Array.from({ length: workers }, () => {
      const worker = new Worker(url, { type: "module" });
      worker.onmessage = (event: MessageEvent<DeleteReply>) => this.#settle(event.data);
      return worker;
    });
  }

  /**
   * Deletes the link named `name` when its alias is one of `aliases` or it has none. Idempotent: a
   * missing link or another attachment's link resolves to false.
   * @throws {Error} with the kernel's refusal.
   */
  delete(name: string, aliases: string[]): Promise<boolean> {
    const id = ++this.#lastId;
    const { promise, resolve, reject } = Promise.withResolvers<boolean>();
    this.#pending.set(id, { resolve, reject });
    const worker = this.#workers[this.#next++ % this.#workers.length];
    worker.postMessage({ id, name, aliases } satisfies DeleteRequest);
    return promise;
  }

  /** Stops the workers; deletions still queued are rejected. */
  close(): void {
    for (const worker of this.#workers) worker.terminate();
    for (const { reject } of this.#pending.values()) reject(new Error("coild is stopping"));
    this.#pending.clear();
  }

  #settle(reply: DeleteReply): void {
    const waiter = this.#pending.get(reply.id);
    if (!waiter) return;
    this.#pending.delete(reply.id);
    if ("error" in reply) waiter.reject(new Error(reply.error));
    else waiter.resolve(reply.deleted);
  }
}
