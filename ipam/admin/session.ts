// One etcd connection per admin command: opened from the parsed flags, closed afterwards, and its
// failures turned into one readable line that names the endpoints.

import type { Etcd3 } from "etcd3";
import { conciseCause, connectEtcd, type EtcdOptions } from "../etcd_client.ts";
import { IpamError, isIpamError } from "../errors.ts";
import { assertSchemaWritable } from "../schema.ts";
import { type EtcdFlagValues, etcdOptionsFrom } from "./etcd_flags.ts";

/**
 * Connects with the flag values, runs `fn`, and closes the client. A command that writes names itself in
 * `writes` (e.g. "coil pool create"): it is refused before `fn` when the data has a newer schema.
 * @throws {IpamError} from `fn`; kind "unavailable" reworded to name the endpoints and the cause.
 * @throws {SchemaError} when `writes` is given and the schema is newer than this code's.
 * @throws {InvalidArgumentError} for inconsistent flags (see etcdOptionsFrom).
 */
export async function withEtcd<T>(
  values: EtcdFlagValues,
  fn: (client: Etcd3, options: EtcdOptions) => Promise<T>,
  { writes }: { writes?: string } = {},
): Promise<T> {
  const options = etcdOptionsFrom(values);
  const client = await connectEtcd(options);
  try {
    if (writes) await assertSchemaWritable(client, options.prefix, writes);
    return await fn(client, options);
  } catch (err) {
    if (isIpamError(err, "unavailable")) throw explain(err, options);
    throw err;
  } finally {
    client.close();
  }
}

function explain(err: IpamError, options: EtcdOptions): IpamError {
  const cause = err.cause instanceof Error ? err.cause.message : err.message;
  return new IpamError(
    "unavailable",
    `Cannot reach etcd at ${options.endpoints.join(",")}: ${tidy(cause, options)}`,
    {
      cause: err,
    },
  );
}

// A deadline reads better in the operator's own unit; everything else is etcd_client's concise cause.
function tidy(message: string, options: EtcdOptions): string {
  if (message.includes("DEADLINE_EXCEEDED")) return `no answer within ${options.callTimeoutMs} ms`;
  return conciseCause(message);
}
