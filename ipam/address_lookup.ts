// Who holds an address, read from etcd: its pool (from the definitions), its block and the block's owner,
// and the address record. `coil ip show` prints it; coild asks it at start about host veths it does not
// know, so that it never mistakes the pods of another node name for leftovers.

import { Buffer } from "node:buffer";
import type { Etcd3 } from "etcd3";
import { blockOf, type Cidr, contains, type IpAddress } from "./cidr.ts";
import { unavailable } from "./etcd_client.ts";
import { keysFor } from "./keys.ts";
import { blockPrefix, type Pool } from "./pool.ts";
import { PoolStore } from "./pool_store.ts";
import { type AddressRecord, parseAddressRecord, parseBlockRecord } from "./records.ts";

export interface AddressHolder {
  pool: Pool;
  block: Cidr;
  /** The node that claimed the block, if any. */
  owner?: string;
  /** The attachment holding the address, if allocated. */
  record?: AddressRecord;
}

/**
 * Looks `ips` up; an address in no pool is left out of the result.
 * @throws {IpamError} "unavailable" when etcd fails, "invalid" for a corrupt record.
 */
export async function lookupAddresses(
  client: Etcd3,
  prefix: string,
  ips: IpAddress[],
): Promise<Map<IpAddress, AddressHolder>> {
  const pools = await new PoolStore(client, prefix).listPools();
  const keys = keysFor(prefix);
  const found: { ip: IpAddress; pool: Pool; block: Cidr; blockKey: string; addressKey: string }[] = [];
  for (const ip of ips) {
    const pool = pools.find((p) => p.subnets.some((s) => contains(s, ip)));
    if (!pool) continue;
    const block = blockOf(ip, blockPrefix(pool, ip.family));
    found.push({
      ip,
      pool,
      block,
      blockKey: keys.block(pool.name, block),
      addressKey: keys.address(block, ip),
    });
  }
  const values = await readValues(client, found.flatMap((f) => [f.blockKey, f.addressKey]));
  return new Map(found.map((f, i) => {
    const [blockValue, addressValue] = [values[2 * i], values[2 * i + 1]];
    return [f.ip, {
      pool: f.pool,
      block: f.block,
      owner: blockValue === undefined ? undefined : parseBlockRecord(f.blockKey, blockValue).node,
      record: addressValue === undefined ? undefined : parseAddressRecord(f.addressKey, addressValue),
    }];
  }));
}

/** The values of `keys` in one consistent read (one txn). */
async function readValues(client: Etcd3, keys: string[]): Promise<(string | undefined)[]> {
  if (keys.length === 0) return [];
  try {
    const response = await client.kv.txn({
      success: keys.map((key) => ({ request_range: { key: Buffer.from(key) } })),
    });
    return response.responses.map((r) => r.response_range.kvs[0]?.value.toString());
  } catch (err) {
    throw unavailable(err);
  }
}
