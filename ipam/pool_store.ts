// Pool definitions in etcd. Every change is one txn that also bumps the pools-revision key, so that
// the overlap check across pools is serialised by a single compare (two overlapping creates cannot both win).

import { Buffer } from "node:buffer";
import {
  CompareResult,
  CompareTarget,
  type Etcd3,
  type ICompare,
  type IKeyValue,
  type IRequestOp,
  type ITxnResponse,
} from "etcd3";
import { formatCidr } from "./cidr.ts";
import { unavailable } from "./etcd_client.ts";
import { IpamError } from "./errors.ts";
import { type Keys, keysFor, prefixRangeEnd } from "./keys.ts";
import { findOverlap, parsePool, type Pool, poolToJson, poolWithSubnet, validatePoolName } from "./pool.ts";
import { parseBlockRecord } from "./records.ts";

// Each failed attempt means another pool change committed, so this bounds contention, not progress.
const MAX_ATTEMPTS = 32;
// Blocks read back to name their owners when a delete is refused.
const BLOCKS_SHOWN = 100;

interface StoredPool {
  pool: Pool;
  modRevision: string;
}

/** All pools plus the ModRevision of the pools-revision key ("0" when absent), read at one revision. */
interface PoolsView {
  pools: Map<string, StoredPool>;
  poolsRevision: string;
}

/**
 * Reads and changes pool definitions under one key prefix. It uses the given client and does not
 * close it. Every method throws IpamError: "unavailable" when etcd fails, "invalid" for a bad
 * definition or a corrupt stored value (naming its key), and the kinds listed per method.
 */
export class PoolStore {
  readonly #client: Etcd3;
  readonly #keys: Keys;

  constructor(client: Etcd3, prefix: string) {
    this.#client = client;
    this.#keys = keysFor(prefix);
  }

  /**
   * Creates a pool. Not idempotent.
   * @throws {IpamError} "conflict" when the pool exists or one of its subnets overlaps another pool's.
   */
  async createPool(pool: Pool): Promise<void> {
    const checked = parsePool(pool.name, poolToJson(pool));
    await this.#change(`create pool "${pool.name}"`, (view) => {
      if (view.pools.has(checked.name)) {
        throw new IpamError("conflict", `Cannot create pool "${checked.name}": it already exists`);
      }
      this.#refuseOverlap(`create pool "${checked.name}"`, checked, view);
      return { pool: checked, modRevision: "0" };
    });
  }

  /**
   * Appends a subnet to a pool; the block size never changes. Not idempotent.
   * @returns the pool as stored.
   * @throws {IpamError} "not-found" when the pool does not exist; "conflict" when the subnet overlaps
   * any pool's subnet (this pool's included); "invalid" when the subnet is malformed or too small.
   */
  async addSubnet(name: string, subnet: string): Promise<Pool> {
    validatePoolName(name);
    return await this.#change(`add subnet ${subnet} to pool "${name}"`, (view) => {
      const stored = view.pools.get(name);
      if (!stored) throw notFound(name);
      const grown = poolWithSubnet(stored.pool, subnet);
      this.#refuseOverlap(`add subnet ${subnet} to pool "${name}"`, grown, view);
      return { pool: grown, modRevision: stored.modRevision };
    });
  }

  /** All pools, sorted by name. */
  async listPools(): Promise<Pool[]> {
    const view = await this.#readView();
    return [...view.pools.values()].map((s) => s.pool).sort((a, b) => a.name < b.name ? -1 : 1);
  }

  /**
   * One pool.
   * @throws {IpamError} "not-found" when it does not exist.
   */
  async getPool(name: string): Promise<Pool> {
    validatePoolName(name);
    const key = this.#keys.pool(name);
    const response = await this.#txn({ success: [rangeOp(key)] });
    const kv = response.responses[0].response_range.kvs[0];
    if (!kv) throw notFound(name);
    return parsePool(name, kv.value.toString());
  }

  /**
   * Deletes a pool, atomically checking that none of its blocks is claimed (a range compare on the
   * pool's block prefix), so no node can claim a block between the check and the delete. Works on a
   * corrupt stored value too. Not idempotent.
   * @throws {IpamError} "not-found" when it does not exist; "conflict" while a block is claimed.
   */
  async deletePool(name: string): Promise<void> {
    validatePoolName(name);
    const key = this.#keys.pool(name);
    const blocks = this.#keys.blocksOfPool(name);
    let response = await this.#txn({ success: [rangeOp(key)] });
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      // The pool key's range is the last op of both the first read and the failure branch.
      const kv = response.responses.at(-1)?.response_range.kvs[0];
      if (!kv) throw notFound(name);
      response = await this.#txn({
        compare: [modEquals(key, kv.mod_revision), noKeyUnder(blocks)],
        success: [
          { request_delete_range: { key: Buffer.from(key) } },
          { request_put: { key: Buffer.from(this.#keys.poolsRevision()), value: Buffer.from(name) } },
        ],
        // On failure, learn why from the same round trip: claimed blocks, then the pool key.
        failure: [rangeOp(blocks, { prefix: true, limit: BLOCKS_SHOWN }), rangeOp(key)],
      });
      if (response.succeeded) return;
      const claimed = response.responses[0].response_range;
      if (claimed.kvs.length > 0) throw blocksClaimed(name, claimed.count, claimed.kvs);
    }
    throw contended(`delete pool "${name}"`);
  }

  /**
   * Runs `decide` on a fresh view and commits its result with one txn that compares the
   * pools-revision key and the pool key; re-runs from fresh reads when another change got in first.
   */
  async #change(what: string, decide: (view: PoolsView) => StoredPool): Promise<Pool> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const view = await this.#readView();
      const { pool, modRevision } = decide(view);
      const key = this.#keys.pool(pool.name);
      const revisionKey = this.#keys.poolsRevision();
      const response = await this.#txn({
        compare: [modEquals(revisionKey, view.poolsRevision), modEquals(key, modRevision)],
        success: [
          { request_put: { key: Buffer.from(key), value: Buffer.from(poolToJson(pool)) } },
          { request_put: { key: Buffer.from(revisionKey), value: Buffer.from(pool.name) } },
        ],
      });
      if (response.succeeded) return pool;
    }
    throw contended(what);
  }

  #refuseOverlap(what: string, pool: Pool, view: PoolsView): void {
    const overlap = findOverlap(pool, [...view.pools.values()].map((s) => s.pool));
    if (overlap) {
      throw new IpamError(
        "conflict",
        `Cannot ${what}: subnet ${formatCidr(overlap.subnet)} overlaps ${formatCidr(overlap.other)} ` +
          `of pool "${overlap.pool}"`,
      );
    }
  }

  async #readView(): Promise<PoolsView> {
    // One txn, so the pools and the revision key come from the same etcd revision.
    const response = await this.#txn({
      success: [rangeOp(this.#keys.pools(), { prefix: true }), rangeOp(this.#keys.poolsRevision())],
    });
    const pools = new Map<string, StoredPool>();
    const prefix = this.#keys.pools();
    for (const kv of response.responses[0].response_range.kvs) {
      const key = kv.key.toString();
      const name = key.slice(prefix.length);
      pools.set(name, {
        pool: parseStoredPool(key, name, kv.value.toString()),
        modRevision: kv.mod_revision,
      });
    }
    const revision = response.responses[1].response_range.kvs[0];
    return { pools, poolsRevision: revision ? revision.mod_revision : "0" };
  }

  async #txn(request: { compare?: ICompare[]; success: IRequestOp[]; failure?: IRequestOp[] }) {
    let response: ITxnResponse;
    try {
      response = await this.#client.kv.txn(request);
    } catch (err) {
      throw unavailable(err);
    }
    return response;
  }
}

function parseStoredPool(key: string, name: string, value: string): Pool {
  try {
    return parsePool(name, value);
  } catch (err) {
    throw new IpamError("invalid", `Corrupt pool at "${key}": ${(err as Error).message}`, { cause: err });
  }
}

function rangeOp(key: string, options: { prefix?: boolean; limit?: number } = {}): IRequestOp {
  return {
    request_range: {
      key: Buffer.from(key),
      range_end: options.prefix ? Buffer.from(prefixRangeEnd(key)) : undefined,
      limit: options.limit,
    },
  };
}

/** ModRevision == rev; "0" matches an absent key. */
function modEquals(key: string, revision: string): ICompare {
  return {
    key: Buffer.from(key),
    target: CompareTarget.Mod,
    result: CompareResult.Equal,
    mod_revision: revision,
  };
}

/** No key starts with `prefix`: every key in the range must have CreateRevision 0, and absent keys do. */
function noKeyUnder(prefix: string): ICompare {
  return {
    key: Buffer.from(prefix),
    range_end: Buffer.from(prefixRangeEnd(prefix)),
    target: CompareTarget.Create,
    result: CompareResult.Equal,
    create_revision: 0,
  };
}

function notFound(name: string): IpamError {
  return new IpamError("not-found", `Pool "${name}" not found`);
}

function blocksClaimed(name: string, count: string, kvs: IKeyValue[]): IpamError {
  const nodes = new Set(kvs.map((kv) => parseBlockRecord(kv.key.toString(), kv.value.toString()).node));
  const more = Number(count) > kvs.length ? ", …" : "";
  return new IpamError(
    "conflict",
    `Cannot delete pool "${name}": ${count} block(s) still claimed by ${
      [...nodes].sort().join(", ")
    }${more}; ` +
      `a node releases a block when its last address is freed`,
  );
}

function contended(what: string): IpamError {
  return new IpamError("conflict", `Cannot ${what}: pools kept changing concurrently, try again`);
}
