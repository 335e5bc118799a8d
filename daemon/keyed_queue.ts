// Runs the calls for one key (a container) one after another while calls for other keys run in
// parallel: runtimes never overlap calls for one container, but a retried DEL may race its first try.

/** Serialises async work per key; a key's chain is dropped once it drains. */
export class KeyedQueue {
  #tails = new Map<string, Promise<unknown>>();

  /** Runs `fn` after every earlier call for `key` has settled; resolves or rejects as `fn` does. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const result = previous.then(fn, fn);
    const tail = result.catch(() => {});
    this.#tails.set(key, tail);
    tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }

  /** Number of keys with work queued or running. */
  get size(): number {
    return this.#tails.size;
  }
}
