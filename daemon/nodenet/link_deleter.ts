// Deletes host veths in the background. Unregistering a veth takes the kernel ~25 ms (RCU grace periods)
// inside the netlink call; a DEL answers once its pod is cut off (veth down, routes gone) and its address
// released, and the deletion finishes here. Each slot is a socket whose call runs on a pool thread
// (offthread_socket.ts), not a Worker isolate; several slots let the kernel overlap deletions, as
// separate ptp processes do. The queue is bounded: a burst beyond it makes DEL wait.

import { isNotFound } from "../../netlink/errors.ts";
import { linkDelOffThread } from "../../netlink/link.ts";
import { OffThreadNetlinkSocket } from "../../netlink/offthread_socket.ts";

export interface LinkDeleterOptions {
  /** Deletions in flight at once, one socket each. Default 4. */
  slots?: number;
  /** Deletions queued or in flight beyond which enqueue() waits. Default 64. */
  capacity?: number;
  /** Namespace of the links (fd from openNetns()); default: the calling thread's. */
  netnsFd?: number;
  /**
   * Hears a deletion that failed (a link already gone is no failure). The link stays down and
   * detached, for the next ADD of its name or the start-up repair to remove.
   */
  onError?: (link: string, err: unknown) => void;
}

interface Job {
  index: number;
  name: string;
}

/** Owns the deletion slots; create it in the node's netns (at start-up). */
export class LinkDeleter implements AsyncDisposable {
  #free: OffThreadNetlinkSocket[];
  #all: OffThreadNetlinkSocket[];
  #capacity: number;
  #onError: (link: string, err: unknown) => void;
  #queued: Job[] = [];
  #inFlight = 0;
  #waiters: (() => void)[] = [];
  #closed = false;

  constructor(options: LinkDeleterOptions = {}) {
    const { slots = 4, capacity = 64, netnsFd } = options;
    if (slots < 1 || capacity < slots) {
      throw new RangeError(`Invalid link deleter: ${slots} slots, capacity ${capacity}`);
    }
    this.#all = Array.from({ length: slots }, () => new OffThreadNetlinkSocket({ netnsFd }));
    this.#free = [...this.#all];
    this.#capacity = capacity;
    this.#onError = options.onError ?? (() => {});
  }

  /** Deletions queued or in flight. */
  get pending(): number {
    return this.#queued.length + this.#inFlight;
  }

  /**
   * Queues the deletion of link `index` (`name` for messages); resolves once it is queued, which waits
   * while `capacity` deletions are pending. After close(), does nothing: the link is left to the next
   * start-up's repair.
   */
  async enqueue(index: number, name: string): Promise<void> {
    while (!this.#closed && this.pending >= this.#capacity) await this.#change();
    if (this.#closed) return;
    this.#queued.push({ index, name });
    this.#pump();
  }

  /** Resolves once no deletion is queued or in flight. */
  async idle(): Promise<void> {
    while (this.pending > 0) await this.#change();
  }

  /** Finishes the deletions already queued, then closes the sockets. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#notify();
    await this.idle();
    await Promise.all(this.#all.map((sock) => sock.close()));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #pump(): void {
    while (this.#free.length > 0 && this.#queued.length > 0) {
      this.#run(this.#free.pop()!, this.#queued.shift()!);
    }
  }

  async #run(sock: OffThreadNetlinkSocket, job: Job): Promise<void> {
    this.#inFlight++;
    try {
      await linkDelOffThread(sock, job.index);
    } catch (err) {
      // Gone already: the pod's netns went first (taking the pair along) or an ADD freed the name.
      if (!isNotFound(err)) this.#onError(job.name, err);
    } finally {
      this.#inFlight--;
      this.#free.push(sock);
      this.#pump();
      this.#notify();
    }
  }

  #change(): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push(resolve);
    return promise;
  }

  #notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
