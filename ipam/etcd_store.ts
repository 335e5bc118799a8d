// Every etcd read and transaction of the node-side IPAM, one txn per decision. Client failures become
// IpamError "unavailable"; values are validated here, as they come out of etcd.

import { Buffer } from "node:buffer";
import type { Etcd3, ICompare, IKeyValue, IRequestOp, IResponseOp } from "etcd3";
import type { Cidr } from "./cidr.ts";
import { unavailable } from "./etcd_client.ts";
import {
  type BadKey,
  type BlockState,
  decodeAddresses,
  decodeBlock,
  decodeBlockKey,
  parseBlockId,
  type StoredBlock,
} from "./etcd_values.ts";
import { IpamError } from "./errors.ts";
import type { BlockGuard, IpamStore } from "./ipam_store.ts";
import { keysFor, prefixRangeEnd } from "./keys.ts";
import { type BlockRef, decodeIndexEntry, nodeIndexKeys } from "./node_block_index.ts";

/** How long starting a watch may take before it counts as etcd being unavailable. */
const WATCH_START_TIMEOUT_MS = 5000;
/** Index entries per txn: etcd takes 128 ops per txn by default (--max-txn-ops). */
const INDEX_OPS_PER_TXN = 120;

/**
 * The store over a client and a key prefix. Does not own the client.
 * @throws {IpamError} "invalid" for a prefix without a trailing `/`.
 */
export function createEtcdStore(client: Etcd3, prefix: string): IpamStore {
  if (!prefix.endsWith("/")) {
    throw new IpamError("invalid", `Invalid etcd prefix "${prefix}": it must end with "/"`);
  }
  const keys = keysFor(prefix);
  const index = nodeIndexKeys(prefix);

  async function txn(compare: ICompare[], success: IRequestOp[], failure: IRequestOp[]) {
    try {
      return await client.kv.txn({ compare, success, failure });
    } catch (err) {
      throw unavailable(err);
    }
  }

  async function range(key: string, options: { prefix?: boolean; keysOnly?: boolean } = {}) {
    try {
      const res = await client.kv.range({ ...rangeOf(key, options.prefix), keys_only: options.keysOnly });
      return res.kvs;
    } catch (err) {
      throw unavailable(err);
    }
  }

  function blockState(pool: string, cidr: Cidr, blockRes: IResponseOp, addrRes: IResponseOp): BlockState {
    const kv = blockRes.response_range.kvs[0];
    const block = kv && decodeBlock(keys, pool, cidr, kv);
    return { cidr, block, addresses: decodeAddresses(keys, cidr, addrRes.response_range.kvs) };
  }

  function readOps(pool: string, cidr: Cidr): IRequestOp[] {
    return [
      { request_range: rangeOf(keys.block(pool, cidr)) },
      { request_range: rangeOf(keys.addressesOfBlock(cidr), true) },
    ];
  }

  /**
   * The op deleting the owner's index entry of a block whose key still has `guard.revision` (one read:
   * the owner is in the value), or none when the key is gone or changed (the guarded txn fails then).
   */
  async function indexDeleteOps(guard: BlockGuard): Promise<IRequestOp[]> {
    const [kv] = await range(keys.block(guard.pool, guard.cidr));
    if (!kv || kv.mod_revision !== guard.revision) return [];
    const owner = decodeBlock(keys, guard.pool, guard.cidr, kv)?.record.node;
    return owner
      ? [{ request_delete_range: { key: Buffer.from(index.entry(owner, guard.pool, guard.cidr)) } }]
      : [];
  }

  return {
    keys,
    async readPools() {
      try {
        const res = await client.kv.range(rangeOf(keys.pools(), true));
        const values = new Map<string, string>();
        for (const kv of res.kvs) {
          const name = kv.key.toString().slice(keys.pools().length);
          if (!name.includes("/")) values.set(name, kv.value.toString());
        }
        return { values, revision: res.header.revision };
      } catch (err) {
        throw unavailable(err);
      }
    },
    async readPool(name) {
      const [kv] = await range(keys.pool(name));
      return kv?.value.toString();
    },
    async watchPools(afterRevision, onChange, onLost) {
      const nameOf = (kv: IKeyValue) => kv.key.toString().slice(keys.pools().length);
      const from = String(BigInt(afterRevision) + 1n);
      // create() waits for etcd as long as it takes (and keeps trying after a close), hence the deadline.
      const creating = client.watch().prefix(keys.pools()).startRevision(from).create();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<undefined>((resolve) =>
        timer = setTimeout(() => resolve(undefined), WATCH_START_TIMEOUT_MS)
      );
      let watcher;
      try {
        watcher = await Promise.race([creating, deadline]);
      } catch (err) {
        throw unavailable(err);
      } finally {
        clearTimeout(timer);
      }
      if (!watcher) {
        creating.then((w) => w.cancel(), () => {});
        throw unavailable(
          new Error(`Watch on "${keys.pools()}" did not start within ${WATCH_START_TIMEOUT_MS} ms`),
        );
      }
      watcher.on("put", (kv) => onChange(nameOf(kv), kv.value.toString()));
      watcher.on("delete", (kv) => onChange(nameOf(kv)));
      // The library reconnects by itself and resumes after the last revision seen; it emits "error"
      // only when etcd cancels the watch (lib/watch.js handleCancelResponse), which ends it for good.
      watcher.on("error", onLost);
      return () => watcher.cancel();
    },
    async claimedBlocks(pool) {
      const kvs = await range(keys.blocksOfPool(pool), { prefix: true, keysOnly: true });
      const out: Cidr[] = [];
      for (const kv of kvs) {
        const cidr = parseBlockId(kv.key.toString().slice(keys.blocksOfPool(pool).length));
        if (cidr) out.push(cidr);
      }
      return out;
    },
    async claimBlock(pool, cidr, record) {
      const key = keys.block(pool, cidr);
      const res = await txn(
        [{ key: Buffer.from(key), target: "Create", result: "Equal", create_revision: 0 }],
        [
          { request_put: { key: Buffer.from(key), value: Buffer.from(JSON.stringify(record)) } },
          { request_range: rangeOf(keys.addressesOfBlock(cidr), true) },
          { request_put: { key: Buffer.from(index.entry(record.node, pool, cidr)), value: Buffer.alloc(0) } },
        ],
        [{ request_range: rangeOf(key) }],
      );
      if (res.succeeded) {
        const addresses = decodeAddresses(keys, cidr, res.responses[1].response_range.kvs);
        return { claimed: true, revision: res.header.revision, addresses };
      }
      const kv = res.responses[0].response_range.kvs[0];
      return { claimed: false, owner: kv && decodeBlock(keys, pool, cidr, kv)?.record };
    },
    async allBlocks() {
      const blocks: StoredBlock[] = [];
      const bad: BadKey[] = [];
      for (const kv of await range(keys.blocks(), { prefix: true })) {
        const decoded = decodeBlockKey(keys, kv);
        if ("problem" in decoded) bad.push(decoded);
        else blocks.push(decoded);
      }
      return { blocks, bad };
    },
    async readNodeIndex(node) {
      // One txn: the entries and the complete mark at one revision.
      const res = await txn([], [
        { request_range: rangeOf(index.entries(node), true, true) },
        { request_range: { ...rangeOf(index.complete(node), false, true), count_only: true } },
      ], []);
      const blocks: BlockRef[] = [];
      const bad: BadKey[] = [];
      for (const kv of res.responses[0].response_range.kvs) {
        const decoded = decodeIndexEntry(index, node, kv.key.toString());
        if ("problem" in decoded) bad.push(decoded);
        else blocks.push(decoded);
      }
      return { complete: Number(res.responses[1].response_range.count) > 0, blocks, bad };
    },
    async updateNodeIndex(node, change) {
      const ops: IRequestOp[] = [
        ...change.add.map((b): IRequestOp => ({
          request_put: { key: Buffer.from(index.entry(node, b.pool, b.cidr)), value: Buffer.alloc(0) },
        })),
        ...[...change.remove.map((b) => index.entry(node, b.pool, b.cidr)), ...change.bad ?? []]
          .map((key): IRequestOp => ({ request_delete_range: { key: Buffer.from(key) } })),
      ];
      const mark: IRequestOp = {
        request_put: { key: Buffer.from(index.complete(node)), value: Buffer.from(new Date().toISOString()) },
      };
      // The mark rides in the last txn: a failure on the way leaves the index incomplete, so rebuilt.
      const batches: IRequestOp[][] = [];
      for (let i = 0; i < ops.length; i += INDEX_OPS_PER_TXN) {
        batches.push(ops.slice(i, i + INDEX_OPS_PER_TXN));
      }
      if (batches.length === 0) batches.push([]);
      batches[batches.length - 1].push(mark);
      for (const batch of batches) await txn([], batch, []);
    },
    async readBlock(pool, cidr) {
      const res = await txn([], readOps(pool, cidr), []);
      return blockState(pool, cidr, res.responses[0], res.responses[1]);
    },
    async fenceBlock(guard) {
      const key = Buffer.from(keys.block(guard.pool, guard.cidr));
      // ignore_value re-puts the current value (etcd >= 3.4): the owner record stays as it is.
      const res = await txn(
        [{ key, target: "Mod", result: "Equal", mod_revision: guard.revision }],
        [{ request_put: { key, ignore_value: true } }, ...readOps(guard.pool, guard.cidr)],
        readOps(guard.pool, guard.cidr),
      );
      const [blockRes, addrRes] = res.responses.slice(-2);
      return { fenced: res.succeeded, state: blockState(guard.pool, guard.cidr, blockRes, addrRes) };
    },
    async putAddresses(guards, addresses) {
      const compare: ICompare[] = [
        ...guards.map((g): ICompare => ({
          key: Buffer.from(keys.block(g.pool, g.cidr)),
          target: "Mod",
          result: "Equal",
          mod_revision: g.revision,
        })),
        ...addresses.map((a): ICompare => ({
          key: Buffer.from(keys.address(a.block, a.ip)),
          target: "Create",
          result: "Equal",
          create_revision: 0,
        })),
      ];
      const puts = addresses.map((a): IRequestOp => ({
        request_put: {
          key: Buffer.from(keys.address(a.block, a.ip)),
          value: Buffer.from(JSON.stringify(a.record)),
        },
      }));
      const res = await txn(compare, puts, guards.flatMap((g) => readOps(g.pool, g.cidr)));
      if (res.succeeded) return { ok: true, revision: res.header.revision };
      const states = guards.map((g, i) =>
        blockState(g.pool, g.cidr, res.responses[2 * i], res.responses[2 * i + 1])
      );
      return { ok: false, states };
    },
    async releaseAddresses(addresses) {
      const guarded = (a: { key: string; revision: string }): ICompare => ({
        key: Buffer.from(a.key),
        target: "Mod",
        result: "Equal",
        mod_revision: a.revision,
      });
      const del = (a: { key: string }): IRequestOp => ({ request_delete_range: { key: Buffer.from(a.key) } });
      const all = await txn(addresses.map(guarded), addresses.map(del), []);
      if (all.succeeded) return [];
      // Some key changed: delete the others one by one, and leave alone those that still exist.
      const left: string[] = [];
      for (const a of addresses) {
        const one = await txn([guarded(a)], [del(a)], [{ request_range: rangeOf(a.key, false, true) }]);
        if (!one.succeeded && one.responses[0].response_range.kvs.length > 0) left.push(a.key);
      }
      return left;
    },
    async releaseBlock(guard) {
      const addrPrefix = keys.addressesOfBlock(guard.cidr);
      const indexOps = await indexDeleteOps(guard);
      const res = await txn(
        [
          {
            key: Buffer.from(keys.block(guard.pool, guard.cidr)),
            target: "Mod",
            result: "Equal",
            mod_revision: guard.revision,
          },
          // Over a range, `create_revision == 0` holds only when no key exists in it (etcd's applyCompare).
          { ...rangeOf(addrPrefix, true), target: "Create", result: "Equal", create_revision: 0 },
        ],
        [{ request_delete_range: { key: Buffer.from(keys.block(guard.pool, guard.cidr)) } }, ...indexOps],
        readOps(guard.pool, guard.cidr),
      );
      if (res.succeeded) return { released: true };
      return {
        released: false,
        state: blockState(guard.pool, guard.cidr, res.responses[0], res.responses[1]),
      };
    },
    async removeBlock(guard) {
      const blockKey = keys.block(guard.pool, guard.cidr);
      const indexOps = await indexDeleteOps(guard);
      const res = await txn(
        [{ key: Buffer.from(blockKey), target: "Mod", result: "Equal", mod_revision: guard.revision }],
        [
          { request_delete_range: rangeOf(keys.addressesOfBlock(guard.cidr), true) },
          { request_delete_range: { key: Buffer.from(blockKey) } },
          ...indexOps,
        ],
        [],
      );
      if (!res.succeeded) return { removed: false };
      return { removed: true, addresses: Number(res.responses[0].response_delete_range.deleted) };
    },
  };
}

function rangeOf(key: string, prefix = false, keysOnly = false) {
  const out: { key: Buffer; range_end?: Buffer; keys_only?: boolean } = { key: Buffer.from(key) };
  if (prefix) out.range_end = Buffer.from(prefixRangeEnd(key));
  if (keysOnly) out.keys_only = true;
  return out;
}
