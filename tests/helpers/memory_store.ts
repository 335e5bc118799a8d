// An in-memory IpamStore for deterministic tests of NodeIpam: it models the etcd semantics the IPAM
// relies on (one revision per txn, CreateRevision 0 for an absent key, ModRevision compares, the
// empty-range compare of releaseBlock) and can make any single call fail, wait, or commit and then time
// out. It is a test double for call-by-call fault paths; the real-etcd tests remain the evidence.

import { Buffer } from "node:buffer";
import type { IKeyValue } from "etcd3";
import type { Cidr } from "../../ipam/cidr.ts";
import { IpamError } from "../../ipam/errors.ts";
import {
  type BadKey,
  type BlockState,
  decodeAddresses,
  decodeBlock,
  decodeBlockKey,
  parseBlockId,
  type StoredBlock,
} from "../../ipam/etcd_values.ts";
import type { BlockGuard, IpamStore } from "../../ipam/ipam_store.ts";
import { keysFor } from "../../ipam/keys.ts";
import { type BlockRef, decodeIndexEntry, nodeIndexKeys } from "../../ipam/node_block_index.ts";

/**
 * What one call does instead of answering at once:
 * - `unavailable`: rejects (IpamError "unavailable") and changes nothing;
 * - `delay`: applies now and answers once `until` settles (a slow answer: what it read is of now);
 * - `commit-then-timeout`: applies now, then rejects as unavailable (once `until` settles, if given):
 *   the caller cannot tell it committed;
 * - `late`: rejects as unavailable at once and applies only once `until` settles (a txn still in
 *   flight after its caller gave up, evaluated against the state of that later moment).
 */
export type Fault =
  | { kind: "unavailable" }
  | { kind: "delay"; until: Promise<unknown> }
  | { kind: "commit-then-timeout"; until?: Promise<unknown> }
  | { kind: "late"; until: Promise<unknown> };

type Method = Exclude<keyof IpamStore, "keys">;

interface Entry {
  value: string;
  create: bigint;
  mod: bigint;
}

interface Armed {
  fault: Fault;
  /** Resolves with the call's result once applied (undefined for "unavailable"). */
  applied: PromiseWithResolvers<unknown>;
}

/** A promise and the function that resolves it: a gate a test opens when it wants. */
export function gate(): { until: Promise<void>; open: () => void } {
  const { promise, resolve } = Promise.withResolvers<void>();
  return { until: promise, open: () => resolve() };
}

export class MemoryStore implements IpamStore {
  readonly keys;
  readonly indexKeys;
  /** Every call, by method name, in call order. */
  readonly calls: Method[] = [];
  #kvs = new Map<string, Entry>();
  #revision = 1n;
  #faults = new Map<Method, Armed[]>();
  #watchers = new Set<(name: string, value?: string) => void>();

  constructor(prefix = "/coil/") {
    this.keys = keysFor(prefix);
    this.indexKeys = nodeIndexKeys(prefix);
  }

  /**
   * Arms `fault` for the next call of `method` (faults queue per method).
   * @returns resolves with what the call applied (e.g. a late write's outcome) once it applied.
   */
  inject(method: Method, fault: Fault): Promise<unknown> {
    const armed = { fault, applied: Promise.withResolvers<unknown>() };
    this.#faults.set(method, [...(this.#faults.get(method) ?? []), armed]);
    return armed.applied.promise;
  }

  /** The store's current revision. */
  get revision(): string {
    return String(this.#revision);
  }

  /** Puts a key as a one-op txn (a pool written this way reaches the pool watchers). */
  put(key: string, value: string): void {
    this.#revision++;
    this.#set(key, value);
  }

  /** Deletes every key starting with `prefix` (or the one key) as a one-op txn. */
  delete(keyOrPrefix: string, options: { prefix?: boolean } = {}): number {
    const victims = options.prefix
      ? this.keysUnder(keyOrPrefix)
      : [keyOrPrefix].filter((k) => this.#kvs.has(k));
    if (victims.length > 0) this.#revision++;
    for (const key of victims) this.#remove(key);
    return victims.length;
  }

  get(key: string): string | undefined {
    return this.#kvs.get(key)?.value;
  }

  /** The ModRevision of a key, "0" when absent. */
  modRevision(key: string): string {
    return String(this.#kvs.get(key)?.mod ?? 0n);
  }

  /** The keys starting with `prefix`, sorted as etcd returns them. */
  keysUnder(prefix: string): string[] {
    return [...this.#kvs.keys()].filter((k) => k.startsWith(prefix)).sort();
  }

  readPools() {
    return this.#call("readPools", () => {
      const values = new Map<string, string>();
      for (const key of this.keysUnder(this.keys.pools())) {
        const name = key.slice(this.keys.pools().length);
        if (!name.includes("/")) values.set(name, this.#kvs.get(key)!.value);
      }
      return { values, revision: this.revision };
    });
  }

  readPool(name: string) {
    return this.#call("readPool", () => this.get(this.keys.pool(name)));
  }

  watchPools(_after: string, onChange: (name: string, value?: string) => void) {
    return this.#call("watchPools", () => {
      this.#watchers.add(onChange);
      return () => Promise.resolve(void this.#watchers.delete(onChange));
    });
  }

  claimedBlocks(pool: string) {
    return this.#call("claimedBlocks", () => {
      const prefix = this.keys.blocksOfPool(pool);
      return this.keysUnder(prefix).flatMap((k) => parseBlockId(k.slice(prefix.length)) ?? []);
    });
  }

  claimBlock(pool: string, cidr: Cidr, record: { node: string; pool: string; claimedAt: string }) {
    return this.#call("claimBlock", () => {
      const key = this.keys.block(pool, cidr);
      if (this.#kvs.has(key)) {
        const kv = this.#kv(key)!;
        return { claimed: false as const, owner: decodeBlock(this.keys, pool, cidr, kv)?.record };
      }
      this.#revision++;
      this.#set(key, JSON.stringify(record));
      this.#set(this.indexKeys.entry(record.node, pool, cidr), "");
      return {
        claimed: true as const,
        revision: this.revision,
        addresses: this.#state(pool, cidr).addresses,
      };
    });
  }

  allBlocks() {
    return this.#call("allBlocks", () => {
      const blocks: StoredBlock[] = [];
      const bad: BadKey[] = [];
      for (const key of this.keysUnder(this.keys.blocks())) {
        const decoded = decodeBlockKey(this.keys, this.#kv(key)!);
        if ("problem" in decoded) bad.push(decoded);
        else blocks.push(decoded);
      }
      return { blocks, bad };
    });
  }

  readNodeIndex(node: string) {
    return this.#call("readNodeIndex", () => {
      const blocks: BlockRef[] = [];
      const bad: BadKey[] = [];
      for (const key of this.keysUnder(this.indexKeys.entries(node))) {
        const decoded = decodeIndexEntry(this.indexKeys, node, key);
        if ("problem" in decoded) bad.push(decoded);
        else blocks.push(decoded);
      }
      return { complete: this.#kvs.has(this.indexKeys.complete(node)), blocks, bad };
    });
  }

  updateNodeIndex(node: string, change: { add: BlockRef[]; remove: BlockRef[]; bad?: string[] }) {
    return this.#call("updateNodeIndex", () => {
      this.#revision++;
      for (const b of change.add) this.#set(this.indexKeys.entry(node, b.pool, b.cidr), "");
      for (const b of change.remove) this.#remove(this.indexKeys.entry(node, b.pool, b.cidr));
      for (const key of change.bad ?? []) this.#remove(key);
      this.#set(this.indexKeys.complete(node), new Date().toISOString());
    });
  }

  readBlock(pool: string, cidr: Cidr) {
    return this.#call("readBlock", () => this.#state(pool, cidr));
  }

  fenceBlock(guard: BlockGuard) {
    return this.#call("fenceBlock", () => {
      const key = this.keys.block(guard.pool, guard.cidr);
      const fenced = this.#modIs(key, guard.revision);
      if (fenced) {
        this.#revision++;
        this.#set(key, this.get(key)!);
      }
      return { fenced, state: this.#state(guard.pool, guard.cidr) };
    });
  }

  putAddresses(guards: BlockGuard[], addresses: Parameters<IpamStore["putAddresses"]>[1]) {
    return this.#call("putAddresses", () => {
      const keyOf = (a: (typeof addresses)[number]) => this.keys.address(a.block, a.ip);
      const ok = guards.every((g) => this.#modIs(this.keys.block(g.pool, g.cidr), g.revision)) &&
        addresses.every((a) => !this.#kvs.has(keyOf(a)));
      if (!ok) return { ok: false as const, states: guards.map((g) => this.#state(g.pool, g.cidr)) };
      this.#revision++;
      for (const a of addresses) this.#set(keyOf(a), JSON.stringify(a.record));
      return { ok: true as const, revision: this.revision };
    });
  }

  releaseAddresses(addresses: { key: string; revision: string }[]) {
    return this.#call("releaseAddresses", () => {
      if (addresses.every((a) => this.#modIs(a.key, a.revision))) {
        this.#revision++;
        for (const a of addresses) this.#remove(a.key);
        return [];
      }
      const left: string[] = [];
      for (const a of addresses) {
        if (this.#modIs(a.key, a.revision)) this.delete(a.key);
        else if (this.#kvs.has(a.key)) left.push(a.key);
      }
      return left;
    });
  }

  releaseBlock(guard: BlockGuard) {
    return this.#call("releaseBlock", () => {
      const key = this.keys.block(guard.pool, guard.cidr);
      // etcd's range compare `CreateRevision == 0` holds only when the range holds no key.
      const empty = this.keysUnder(this.keys.addressesOfBlock(guard.cidr)).length === 0;
      if (!this.#modIs(key, guard.revision) || !empty) {
        return { released: false as const, state: this.#state(guard.pool, guard.cidr) };
      }
      this.#revision++;
      this.#removeBlockKey(guard.pool, guard.cidr);
      return { released: true as const };
    });
  }

  removeBlock(guard: BlockGuard) {
    return this.#call("removeBlock", () => {
      const key = this.keys.block(guard.pool, guard.cidr);
      if (!this.#modIs(key, guard.revision)) return { removed: false as const };
      const addresses = this.keysUnder(this.keys.addressesOfBlock(guard.cidr));
      this.#revision++;
      for (const k of addresses) this.#remove(k);
      this.#removeBlockKey(guard.pool, guard.cidr);
      return { removed: true as const, addresses: addresses.length };
    });
  }

  /** Runs `op` now, later, or not at all, as the next armed fault of `method` says. */
  async #call<T>(method: Method, op: () => T): Promise<T> {
    this.calls.push(method);
    const armed = this.#faults.get(method)?.shift();
    if (!armed) return await Promise.resolve().then(op);
    const { fault, applied } = armed;
    const timeout = () => new IpamError("unavailable", `etcd is unreachable: ${method} timed out (injected)`);
    switch (fault.kind) {
      case "unavailable":
        applied.resolve(undefined);
        throw timeout();
      case "delay": {
        const result = op();
        applied.resolve(result);
        await fault.until;
        return result;
      }
      case "commit-then-timeout":
        applied.resolve(op());
        await fault.until;
        throw timeout();
      case "late":
        fault.until.then(() => applied.resolve(op()));
        throw timeout();
    }
  }

  #modIs(key: string, revision: string): boolean {
    return String(this.#kvs.get(key)?.mod ?? 0n) === revision;
  }

  #state(pool: string, cidr: Cidr): BlockState {
    const kv = this.#kv(this.keys.block(pool, cidr));
    const prefix = this.keys.addressesOfBlock(cidr);
    const addressKvs = this.keysUnder(prefix).map((k) => this.#kv(k)!);
    return {
      cidr,
      block: kv && decodeBlock(this.keys, pool, cidr, kv),
      addresses: decodeAddresses(this.keys, cidr, addressKvs),
    };
  }

  #kv(key: string): IKeyValue | undefined {
    const entry = this.#kvs.get(key);
    if (!entry) return undefined;
    return {
      key: Buffer.from(key),
      value: Buffer.from(entry.value),
      create_revision: String(entry.create),
      mod_revision: String(entry.mod),
      version: "1",
      lease: "0",
    };
  }

  /** Writes at the current revision (the caller moved it for its txn). */
  #set(key: string, value: string): void {
    const create = this.#kvs.get(key)?.create ?? this.#revision;
    this.#kvs.set(key, { value, create, mod: this.#revision });
    this.#notify(key, value);
  }

  /** Deletes a block key and its owner's index entry, as etcd_store's guarded txns do. */
  #removeBlockKey(pool: string, cidr: Cidr): void {
    const key = this.keys.block(pool, cidr);
    const owner = decodeBlock(this.keys, pool, cidr, this.#kv(key)!)?.record.node;
    if (owner) this.#remove(this.indexKeys.entry(owner, pool, cidr));
    this.#remove(key);
  }

  #remove(key: string): void {
    if (this.#kvs.delete(key)) this.#notify(key, undefined);
  }

  #notify(key: string, value: string | undefined): void {
    const pools = this.keys.pools();
    const name = key.slice(pools.length);
    if (!key.startsWith(pools) || name.includes("/")) return;
    for (const watcher of this.#watchers) queueMicrotask(() => watcher(name, value));
  }
}
