// The schema line of `coil status`: the data model's version and what it means for this release. Status
// reads on whatever it finds; only commands that write refuse a newer schema (session.ts).

import type { Etcd3 } from "etcd3";
import { readSchema, SCHEMA_VERSION, SchemaError } from "../schema.ts";

export interface SchemaStatus {
  /** Null when the schema key is unreadable. */
  version: number | null;
  /** One line for people. */
  line: string;
}

/** @throws {IpamError} "unavailable" when etcd fails. */
export async function readSchemaStatus(client: Etcd3, prefix: string): Promise<SchemaStatus> {
  try {
    const { version } = await readSchema(client, prefix);
    return { version, line: describe(version) };
  } catch (err) {
    if (err instanceof SchemaError) return { version: null, line: `Warning: ${err.message}` };
    throw err;
  }
}

function describe(version: number): string {
  if (version === SCHEMA_VERSION) return `Schema version ${version}`;
  if (version < SCHEMA_VERSION) {
    return `Schema version ${version}: the first coild of this release to start upgrades it to ` +
      String(SCHEMA_VERSION);
  }
  return `Warning: schema version ${version} is newer than ${SCHEMA_VERSION}, the newest this coil knows: ` +
    "its commands that write refuse it; use a release that knows it";
}
