// The version of Coil's etcd data model, in one key under the prefix (`schema`: {"version": N}). coild
// upgrades older data in place before it loads its blocks and refuses data newer than it knows; admin
// commands that write refuse newer data too. docs/design.md ("Schema versions and upgrades") has the table.

import { Buffer } from "node:buffer";
import type { Etcd3, ICompare, IKeyValue } from "etcd3";
import { unavailable } from "./etcd_client.ts";
import { IpamError, type IpamErrorKind } from "./errors.ts";
import { keysFor } from "./keys.ts";

/**
 * The version this code reads and writes. 1: no schema key (everything written up to commit 62c6a4d);
 * 2: the same records plus the schema key. Upgrading 1 → 2 writes the key and nothing else: the per-node
 * block index (ipam/node_block_index.ts) stays each node's own to build, at its first start on code that
 * maintains it: a coild older than the index may still run on that node, claiming blocks without entries.
 */
export const SCHEMA_VERSION = 2;

/** The version of data that has no schema key. */
export const UNVERSIONED = 1;

/** Attempts at the upgrade txn: each failed compare means another coild changed the key meanwhile. */
const UPGRADE_ATTEMPTS = 5;

/** Data this code must not touch: a newer schema, or a schema key it cannot read. */
export class SchemaError extends IpamError {
  constructor(kind: IpamErrorKind, message: string) {
    super(kind, message);
    this.name = "SchemaError";
  }
}

/** The schema key as read: `version` is UNVERSIONED when the key is absent. */
export interface StoredSchema {
  key: string;
  version: number;
  /** ModRevision of the key; undefined when it is absent. */
  revision?: string;
}

/** What ensureSchema() found and did. */
export interface SchemaOutcome {
  version: number;
  /** The version found before this call upgraded it; undefined when nothing was written. */
  upgradedFrom?: number;
}

/**
 * Reads the schema version under `prefix`.
 * @throws {SchemaError} "invalid" when the key's value is not {"version": N} with N a positive integer.
 * @throws {IpamError} "unavailable" when etcd fails.
 */
export async function readSchema(client: Etcd3, prefix: string): Promise<StoredSchema> {
  const key = keysFor(prefix).schema();
  let kv: IKeyValue | undefined;
  try {
    kv = (await client.kv.range({ key: Buffer.from(key) })).kvs[0];
  } catch (err) {
    throw unavailable(err);
  }
  return decodeSchema(key, kv);
}

/**
 * Brings the data under `prefix` to SCHEMA_VERSION at coild's start: reads the key, accepts an equal one
 * as is (no write: a full etcd charges a txn's put against its quota even when its compare fails, so a
 * restart under the NOSPACE alarm must not write), creates it if absent (a txn that only creates, so
 * coilds starting at once write it once, and old coilds' records are untouched) and upgrades an older
 * one by a compare on its ModRevision.
 * @throws {SchemaError} "conflict" for a newer version, "invalid" for an unreadable key; nothing written.
 * @throws {IpamError} "unavailable" when etcd fails.
 */
export async function ensureSchema(client: Etcd3, prefix: string): Promise<SchemaOutcome> {
  const key = keysFor(prefix).schema();
  const value = Buffer.from(schemaValue(SCHEMA_VERSION));
  let found = await readSchema(client, prefix);
  for (let attempt = 0; attempt < UPGRADE_ATTEMPTS; attempt++) {
    assertWritable(prefix, found, "this coild");
    if (found.version === SCHEMA_VERSION) return { version: SCHEMA_VERSION };
    let res;
    try {
      res = await client.kv.txn({
        compare: [unchanged(found)],
        success: [{ request_put: { key: Buffer.from(key), value } }],
        failure: [{ request_range: { key: Buffer.from(key) } }],
      });
    } catch (err) {
      throw unavailable(err);
    }
    if (res.succeeded) return { version: SCHEMA_VERSION, upgradedFrom: found.version };
    found = decodeSchema(key, res.responses[0].response_range.kvs[0]);
  }
  throw new IpamError(
    "conflict",
    `Schema key "${key}": it kept changing during ${UPGRADE_ATTEMPTS} upgrades`,
  );
}

/**
 * Refuses a write by `writer` (e.g. "coil pool create") into data of a newer schema; older data is fine,
 * since what this code writes is valid in every version up to SCHEMA_VERSION.
 * @throws {SchemaError} as ensureSchema() does. @throws {IpamError} "unavailable" when etcd fails.
 */
export async function assertSchemaWritable(client: Etcd3, prefix: string, writer: string): Promise<void> {
  assertWritable(prefix, await readSchema(client, prefix), writer);
}

/** `{"version":2}`: the key's value. */
export function schemaValue(version: number): string {
  return JSON.stringify({ version });
}

/** The compare that the key is still as `found` read it: absent (never created), or at its ModRevision. */
function unchanged(found: StoredSchema): ICompare {
  const key = Buffer.from(found.key);
  return found.revision === undefined
    ? { key, target: "Create", result: "Equal", create_revision: "0" }
    : { key, target: "Mod", result: "Equal", mod_revision: found.revision };
}

function assertWritable(prefix: string, found: StoredSchema, writer: string): void {
  if (found.version <= SCHEMA_VERSION) return;
  throw new SchemaError(
    "conflict",
    `The data under etcd prefix "${prefix}" has schema version ${found.version} (key "${found.key}"), ` +
      `newer than ${SCHEMA_VERSION}, the newest ${writer} knows: run a Coil release that knows ` +
      `version ${found.version}`,
  );
}

function decodeSchema(key: string, kv: IKeyValue | undefined): StoredSchema {
  if (!kv) return { key, version: UNVERSIONED };
  const text = kv.value.toString();
  let version: unknown;
  try {
    version = (JSON.parse(text) as { version?: unknown } | null)?.version;
  } catch { /* reported below */ }
  if (typeof version !== "number" || !Number.isSafeInteger(version) || version < 1) {
    throw new SchemaError(
      "invalid",
      `Corrupt value at "${key}": expected {"version": N} with N a positive integer, found ${
        JSON.stringify(text.slice(0, 80))
      }`,
    );
  }
  return { key, version, revision: kv.mod_revision };
}
