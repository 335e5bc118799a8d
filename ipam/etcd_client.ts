// Connecting to etcd: endpoints, TLS and user/password as in Coil v1's --etcd-* flags, no hidden
// retries (a failed call surfaces at once as IpamError "unavailable", which CNI reports as code 11).

import { Etcd3, type IOptions } from "etcd3";
import { IpamError } from "./errors.ts";

/** How to reach etcd. Paths name PEM files. */
export interface EtcdOptions {
  endpoints: string[];
  /** Key prefix, ending with `/` (default `/coil/`). */
  prefix: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  username?: string;
  password?: string;
  /** Deadline of each call, in ms. */
  callTimeoutMs?: number;
}

export const DEFAULT_ETCD_PREFIX = "/coil/";
export const DEFAULT_ETCD_ENDPOINTS = ["http://127.0.0.1:2379"];

/**
 * Opens a client. It connects lazily; use `waitForEtcd` to learn whether etcd answers.
 * The library's circuit breaker is replaced by a fail-fast policy: its 5 s open window would turn a
 * one-off hiccup into 5 s of refused ADDs.
 * @throws {IpamError} kind "invalid" when a TLS file cannot be read.
 */
export async function connectEtcd(options: EtcdOptions): Promise<Etcd3> {
  const { noop } = await import("cockatiel");
  const timeout = options.callTimeoutMs ?? 5000;
  const config: IOptions = {
    hosts: options.endpoints,
    dialTimeout: timeout,
    defaultCallOptions: () => ({ deadline: Date.now() + timeout }),
    faultHandling: { host: () => noop, global: noop },
  };
  if (options.tlsCa || options.tlsCert || options.tlsKey) {
    config.credentials = {
      rootCertificate: await readPem(options.tlsCa, "--etcd-tls-ca"),
      certChain: options.tlsCert ? await readPem(options.tlsCert, "--etcd-tls-cert") : undefined,
      privateKey: options.tlsKey ? await readPem(options.tlsKey, "--etcd-tls-key") : undefined,
    };
  }
  if (options.username) {
    config.auth = { username: options.username, password: options.password ?? "" };
  }
  return new Etcd3(config);
}

async function readPem(path: string | undefined, flag: string) {
  const { Buffer } = await import("node:buffer");
  if (!path) throw new IpamError("invalid", `Missing ${flag}: TLS needs a CA certificate`);
  try {
    return Buffer.from(await Deno.readFile(path));
  } catch (err) {
    throw new IpamError("invalid", `Cannot read ${flag} "${path}": ${(err as Error).message}`);
  }
}

/**
 * Waits until etcd answers a read, polling every 200 ms.
 * @throws {IpamError} kind "unavailable" after `timeoutMs`.
 */
export async function waitForEtcd(client: Etcd3, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      await client.get("health-probe").exists();
      return;
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw unavailable(last);
}

/** Wraps an etcd client failure as IpamError "unavailable"; passes IpamErrors through. */
export function unavailable(err: unknown): IpamError {
  if (err instanceof IpamError) return err;
  const cause = err instanceof Error ? err.message : String(err);
  return new IpamError("unavailable", `etcd is unreachable: ${cause}`, { cause: err });
}
