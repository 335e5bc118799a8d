// The pools as this node knows them: read once and kept fresh by a watch on the pools prefix (read
// again whole if etcd ends the watch); a lookup that finds nothing re-reads first, so a pool created
// a moment ago is never reported missing because of watch lag.

import type { Cidr } from "./cidr.ts";
import type { IpamStore } from "./ipam_store.ts";
import { IpamError } from "./errors.ts";
import { DEFAULT_POOL, parsePool, type Pool } from "./pool.ts";

/** A pool, or why its etcd value is unusable. */
type Entry = Pool | IpamError;

/** The pools under one prefix. Owns a watch: call close(). */
export class PoolCache {
  #store: IpamStore;
  #entries = new Map<string, Entry>();
  #stopWatch: (() => Promise<void>) | undefined;
  /** etcd ended the watch: the next lookup reads every pool again and restarts it. */
  #stale = false;
  #syncing: Promise<void> | undefined;
  #closed = false;

  private constructor(store: IpamStore) {
    this.#store = store;
  }

  /**
   * Reads every pool and starts watching for changes.
   * @throws {IpamError} kind "unavailable" when etcd fails.
   */
  static async open(store: IpamStore): Promise<PoolCache> {
    const cache = new PoolCache(store);
    await cache.#sync();
    return cache;
  }

  async #sync(): Promise<void> {
    const { values, revision } = await this.#store.readPools();
    this.#entries = new Map();
    for (const [name, value] of values) this.#set(name, value);
    const stop = await this.#store.watchPools(
      revision,
      (name, value) => this.#set(name, value),
      () => {
        this.#stale = true;
        this.#stopWatch = undefined;
      },
    );
    if (this.#closed) return await stop();
    this.#stopWatch = stop;
    this.#stale = false;
  }

  /** Re-syncs after a lost watch (one sync at a time); a no-op otherwise. */
  async #fresh(): Promise<void> {
    if (!this.#stale || this.#closed) return;
    this.#syncing ??= this.#sync().finally(() => (this.#syncing = undefined));
    await this.#syncing;
  }

  /**
   * The pool serving pods of `podNamespace`: the pool of that name, else `default` (an empty namespace
   * goes straight to `default`). Re-reads the candidates from etcd once before giving up, and every
   * pool after etcd ended the watch.
   * @throws {IpamError} kind "no-pool" naming both names tried; "invalid" when the chosen pool's value
   * is corrupt; "unavailable" when etcd fails during a re-read.
   */
  async select(podNamespace: string): Promise<Pool> {
    await this.#fresh();
    const names = candidates(podNamespace);
    const cached = this.#pick(names);
    if (cached) return cached;
    for (const name of names) this.#set(name, await this.#store.readPool(name));
    const fresh = this.#pick(names);
    if (fresh) return fresh;
    const tried = names.map((n) => `"${n}"`).join(" nor ");
    throw new IpamError(
      "no-pool",
      `No pool serves namespace "${podNamespace}": ${
        names.length > 1 ? "neither" : "no"
      } pool ${tried} exists`,
    );
  }

  /**
   * Whether a pool of this name exists, always read from etcd: the sweep releases every empty block of a
   * deleted pool, and must not act on a cache that the watch has not updated yet.
   * @throws {IpamError} kind "unavailable" when etcd fails.
   */
  async exists(name: string): Promise<boolean> {
    this.#set(name, await this.#store.readPool(name));
    return this.#entries.has(name);
  }

  /**
   * Whether any usable pool exists (then some namespace's pods can be served). Reads every pool again
   * before saying no, as select() does.
   * @throws {IpamError} kind "unavailable" when etcd fails during the re-read.
   */
  async anyPool(): Promise<boolean> {
    await this.#fresh();
    if (this.#hasUsable()) return true;
    const { values } = await this.#store.readPools();
    for (const [name, value] of values) this.#set(name, value);
    return this.#hasUsable();
  }

  #hasUsable(): boolean {
    return [...this.#entries.values()].some((e) => !(e instanceof IpamError));
  }

  /** The subnets of every usable pool as cached (no etcd read). */
  subnets(): Cidr[] {
    return [...this.#entries.values()].flatMap((e) => (e instanceof IpamError ? [] : e.subnets));
  }

  /** The pool of this name as cached (no etcd read); undefined when it is missing or corrupt. */
  get(name: string): Pool | undefined {
    const entry = this.#entries.get(name);
    return entry instanceof IpamError ? undefined : entry;
  }

  /** Stops the watch. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    const stop = this.#stopWatch;
    this.#stopWatch = undefined;
    await stop?.();
  }

  #pick(names: string[]): Pool | undefined {
    for (const name of names) {
      const entry = this.#entries.get(name);
      // A corrupt namespace pool must not silently fall back to `default`: that would move the
      // namespace's pods into another address range.
      if (entry instanceof IpamError) throw entry;
      if (entry) return entry;
    }
    return undefined;
  }

  #set(name: string, value: string | undefined): void {
    if (value === undefined) {
      this.#entries.delete(name);
      return;
    }
    try {
      this.#entries.set(name, parsePool(name, value));
    } catch (err) {
      if (!(err instanceof IpamError)) throw err;
      this.#entries.set(name, err);
    }
  }
}

function candidates(podNamespace: string): string[] {
  return podNamespace === "" || podNamespace === DEFAULT_POOL ? [DEFAULT_POOL] : [podNamespace, DEFAULT_POOL];
}
