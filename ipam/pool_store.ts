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
import { type Cidr, formatCidr } from "./cidr.ts";
import { unavailable } from "./etcd_client.ts";
import { parseBlockId } from "./etcd_values.ts";
import { IpamError } from "./errors.ts";
import { type NodeIndexKeys, nodeIndexKeys } from "./node_block_index.ts";
import { type Keys, keysFor, prefixRangeEnd } from "./keys.ts";
import { findOverlap, parsePool, type Pool, poolToJson, poolWithSubnet, validatePoolName } from "./pool.ts";
import { parseBlockRecord } from "./records.ts";

// Each failed attempt means another pool change committed, so this bounds contention, not progress.
const MAX_ATTEMPTS = 32;
// Blocks per delete txn: each costs two compares and a delete, and etcd takes 128 ops per txn by
// default (--max-txn-ops).
const BLOCKS_PER_TXN = 60;

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
  readonly #index: NodeIndexKeys;

  constructor(client: Etcd3, prefix: string) {
    this.#client = client;
    this.#keys = keysFor(prefix);
    this.#index = nodeIndexKeys(prefix);
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
   * Deletes a pool and its blocks once none of them holds an address. One txn deletes the pool key with
   * its (remaining) block keys, guarded by each block's ModRevision, each block's address range being
   * empty and no block created since the read, so no node can claim or fill a block meanwhile. A pool
   * with more blocks than fit in a txn has its empty blocks deleted in earlier txns guarded alike. A
   * node that held a deleted block drops it at its next write, release or sweep. Works on a corrupt
   * stored value too. Not idempotent.
   * @throws {IpamError} "not-found" when it does not exist; "conflict" while a block holds an address.
   */
  async deletePool(name: string): Promise<void> {
    validatePoolName(name);
    const key = this.#keys.pool(name);
    const blocksPrefix = this.#keys.blocksOfPool(name);
    for (let attempt = 0; attempt < MAX_ATTEMPTS;) {
      const read = await this.#txn({ success: [rangeOp(key), rangeOp(blocksPrefix, { prefix: true })] });
      const poolKv = read.responses[0].response_range.kvs[0];
      if (!poolKv) throw notFound(name);
      const blocks = read.responses[1].response_range.kvs.map((kv) => ({
        kv,
        cidr: parseBlockId(kv.key.toString().slice(blocksPrefix.length)),
      }));
      const inUse = await this.#holdingAddresses(blocks);
      if (inUse.length > 0) throw blocksInUse(name, inUse);
      const batch = blocks.slice(0, BLOCKS_PER_TXN);
      const last = batch.length === blocks.length;
      const compare = [modEquals(key, poolKv.mod_revision)];
      for (const { kv, cidr } of batch) {
        compare.push(modEquals(kv.key.toString(), kv.mod_revision));
        if (cidr) compare.push(noKeyUnder(this.#keys.addressesOfBlock(cidr)));
      }
      const success: IRequestOp[] = batch.flatMap(({ kv, cidr }) => {
        // The owner's index entry goes with the block (node_block_index.ts): a load would skip it, but
        // a node that keeps running never reloads.
        const owner = ownerOf(kv);
        const entry = cidr && owner !== "?" ? [this.#index.entry(owner, name, cidr)] : [];
        return [kv.key, ...entry.map((k) => Buffer.from(k))].map((key) => ({
          request_delete_range: { key },
        }));
      });
      if (last) {
        compare.push(noKeyCreatedAfter(blocksPrefix, read.header.revision));
        success.push(
          { request_delete_range: { key: Buffer.from(key) } },
          { request_put: { key: Buffer.from(this.#keys.poolsRevision()), value: Buffer.from(name) } },
        );
      }
      const response = await this.#txn({ compare, success });
      if (response.succeeded && last) return;
      // A batch of blocks deleted is progress; a failed compare means someone else changed something.
      if (!response.succeeded) attempt++;
    }
    throw contended(`delete pool "${name}"`);
  }

  /** The blocks whose address range holds a key, each with its owner ("?" when unreadable). */
  async #holdingAddresses(blocks: { kv: IKeyValue; cidr?: Cidr }[]): Promise<string[]> {
    const owners: string[] = [];
    const valid = blocks.filter((b): b is { kv: IKeyValue; cidr: Cidr } => b.cidr !== undefined);
    for (let i = 0; i < valid.length; i += BLOCKS_PER_TXN) {
      const chunk = valid.slice(i, i + BLOCKS_PER_TXN);
      const response = await this.#txn({
        success: chunk.map((b) =>
          rangeOp(this.#keys.addressesOfBlock(b.cidr), { prefix: true, limit: 1, keysOnly: true })
        ),
      });
      for (const [j, b] of chunk.entries()) {
        if (response.responses[j].response_range.count !== "0") owners.push(ownerOf(b.kv));
      }
    }
    return owners;
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

function rangeOp(
  key: string,
  options: { prefix?: boolean; limit?: number; keysOnly?: boolean } = {},
): IRequestOp {
  return {
    request_range: {
      key: Buffer.from(key),
      range_end: options.prefix ? Buffer.from(prefixRangeEnd(key)) : undefined,
      limit: options.limit,
      keys_only: options.keysOnly,
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

/** No key starting with `prefix` was created after `revision` (absent keys count as created at 0). */
function noKeyCreatedAfter(prefix: string, revision: string): ICompare {
  return {
    key: Buffer.from(prefix),
    range_end: Buffer.from(prefixRangeEnd(prefix)),
    target: CompareTarget.Create,
    result: CompareResult.Less,
    create_revision: String(BigInt(revision) + 1n),
  };
}

function ownerOf(kv: IKeyValue): string {
  try {
    return parseBlockRecord(kv.key.toString(), kv.value.toString()).node;
  } catch {
    return "?";
  }
}

function notFound(name: string): IpamError {
  return new IpamError("not-found", `Pool "${name}" not found`);
}

function blocksInUse(name: string, owners: string[]): IpamError {
  return new IpamError(
    "conflict",
    `Cannot delete pool "${name}": ${owners.length} block(s) still hold addresses, claimed by ` +
      `${[...new Set(owners)].sort().join(", ")}; delete the pods using them first`,
  );
}

function contended(what: string): IpamError {
  return new IpamError("conflict", `Cannot ${what}: pools kept changing concurrently, try again`);
}
