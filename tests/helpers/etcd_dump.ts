// Every key under a prefix, read at one revision: as prefix-relative fixture records (readable JSON,
// loadable under another prefix) and as key → value and ModRevision, to prove that nothing changed.

import { Buffer } from "node:buffer";
import type { Etcd3 } from "etcd3";
import { prefixRangeEnd } from "../../ipam/keys.ts";

/**
 * A stored value as a fixture holds it: a JSON object, array or number when the stored text is exactly
 * its JSON (so the file stays readable), else the stored text itself.
 */
export type FixtureValue = string | number | Record<string, unknown> | unknown[];

/** Prefix-relative key → value, sorted by key. */
export type FixtureRecords = Record<string, FixtureValue>;

/** Every key under `prefix` with its value and ModRevision, sorted by key. */
export async function readPrefix(
  client: Etcd3,
  prefix: string,
): Promise<Map<string, { value: string; modRevision: string }>> {
  const res = await client.kv.range({
    key: Buffer.from(prefix),
    range_end: Buffer.from(prefixRangeEnd(prefix)),
  });
  const entries = res.kvs.map((kv) =>
    [kv.key.toString(), { value: kv.value.toString(), modRevision: kv.mod_revision }] as const
  );
  return new Map(entries.sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0));
}

/** The keys under `prefix` as fixture records, leaving out those that start with one of `omit`. */
export async function dumpRecords(
  client: Etcd3,
  prefix: string,
  omit: string[] = [],
): Promise<FixtureRecords> {
  const records: FixtureRecords = {};
  for (const [key, { value }] of await readPrefix(client, prefix)) {
    const relative = key.slice(prefix.length);
    if (!omit.some((p) => relative.startsWith(p))) records[relative] = toFixtureValue(value);
  }
  return records;
}

/** Puts every record under `prefix` in one txn per 100 keys (etcd's default limit is 128 ops). */
export async function loadRecords(client: Etcd3, prefix: string, records: FixtureRecords): Promise<void> {
  const entries = Object.entries(records);
  for (let i = 0; i < entries.length; i += 100) {
    await client.kv.txn({
      compare: [],
      success: entries.slice(i, i + 100).map(([key, value]) => ({
        request_put: { key: Buffer.from(prefix + key), value: Buffer.from(fromFixtureValue(value)) },
      })),
      failure: [],
    });
  }
}

function toFixtureValue(text: string): FixtureValue {
  try {
    const parsed = JSON.parse(text);
    const structured = typeof parsed === "number" || (typeof parsed === "object" && parsed !== null);
    if (structured && JSON.stringify(parsed) === text) return parsed;
  } catch { /* not JSON: kept as text */ }
  return text;
}

function fromFixtureValue(value: FixtureValue): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}
