// Block and address keys as read back from etcd, validated once into typed data: a key or value that
// is not what Coil writes is reported with the key instead of failing a later step.

import type { IKeyValue } from "etcd3";
import { type Cidr, contains, type IpAddress, tryParseCidr, tryParseIp } from "./cidr.ts";
import type { Keys } from "./keys.ts";
import { type AddressRecord, type BlockRecord, parseAddressRecord, parseBlockRecord } from "./records.ts";

/** A block key as read: `revision` is its ModRevision, what ownership compares check. */
export interface StoredBlock {
  pool: string;
  cidr: Cidr;
  key: string;
  record: BlockRecord;
  revision: string;
}

/**
 * An address key as read. `ip` is undefined when the key names no address of the block, `record` when
 * the value is corrupt; `problem` then says why.
 */
export interface StoredAddress {
  key: string;
  block: Cidr;
  ip?: IpAddress;
  revision: string;
  record?: AddressRecord;
  problem?: string;
}

/** A block key and its address range, read together. `block` is undefined when the key is gone. */
export interface BlockState {
  cidr: Cidr;
  block?: StoredBlock;
  addresses: StoredAddress[];
}

/** A key that was unreadable, and why. */
export interface BadKey {
  key: string;
  problem: string;
}

/** `10.1.0.32_27` → the block, or undefined when the id is not a strict CIDR. */
export function parseBlockId(id: string): Cidr | undefined {
  if (id.includes("/")) return undefined;
  return tryParseCidr(id.replace("_", "/"), { strict: true });
}

/** Any key under `keys.blocks()`: a block, or why it is not one. */
export function decodeBlockKey(keys: Keys, kv: IKeyValue): StoredBlock | BadKey {
  const key = kv.key.toString();
  const [pool, id, ...rest] = key.slice(keys.blocks().length).split("/");
  const cidr = id === undefined || rest.length > 0 ? undefined : parseBlockId(id);
  if (!cidr) return { key, problem: "not a block key" };
  try {
    return { pool, cidr, key, record: parseBlockRecord(key, kv.value.toString()), revision: kv.mod_revision };
  } catch (err) {
    return { key, problem: (err as Error).message };
  }
}

/** The key of a known block; undefined when its owner record is corrupt, so not provably anyone's. */
export function decodeBlock(keys: Keys, pool: string, cidr: Cidr, kv: IKeyValue): StoredBlock | undefined {
  const key = keys.block(pool, cidr);
  try {
    return { pool, cidr, key, record: parseBlockRecord(key, kv.value.toString()), revision: kv.mod_revision };
  } catch {
    return undefined;
  }
}

/** The keys of a block's address range. Bad ones are kept (with `problem`): they still block a release. */
export function decodeAddresses(keys: Keys, block: Cidr, kvs: IKeyValue[]): StoredAddress[] {
  const prefix = keys.addressesOfBlock(block);
  return kvs.map((kv): StoredAddress => {
    const key = kv.key.toString();
    const revision = kv.mod_revision;
    const ip = tryParseIp(key.slice(prefix.length));
    if (!ip || !contains(block, ip)) return { key, block, revision, problem: "not an address of the block" };
    try {
      return { key, block, ip, revision, record: parseAddressRecord(key, kv.value.toString()) };
    } catch (err) {
      return { key, block, ip, revision, problem: (err as Error).message };
    }
  });
}
