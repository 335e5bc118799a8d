// What connecting to etcd needs from files and the TLS stack: the PEM files (read, parsed and matched
// at start, so a wrong file is one clear error), the password file, and Deno's node:tls taught to
// reach etcd at an IP address. Messages name files, never their content.

import type { IOptions } from "etcd3";
import { IpamError } from "./errors.ts";

type Credentials = NonNullable<IOptions["credentials"]>;

/** The `--etcd-tls-*` paths. */
export interface TlsFiles {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/**
 * The client's TLS credentials from the PEM files, checked.
 * @throws {IpamError} "invalid" naming the flag and file when one is missing, unreadable or not what it
 * should be, or when the key is not the certificate's.
 */
export async function tlsCredentials(options: TlsFiles): Promise<Credentials> {
  const credentials = {
    rootCertificate: await readPem(options.tlsCa, "--etcd-tls-ca"),
    certChain: options.tlsCert ? await readPem(options.tlsCert, "--etcd-tls-cert") : undefined,
    privateKey: options.tlsKey ? await readPem(options.tlsKey, "--etcd-tls-key") : undefined,
  };
  await checkPems(options, credentials);
  return credentials;
}

let ipServerNamesAllowed = false;

/**
 * Lets TLS reach etcd at an IP address (`https://10.0.0.1:2379`, the usual form). grpc-js always
 * passes the target host as `servername` (channel-credentials.js getConnectionOptions()); RFC 6066
 * section 3 forbids an IP there, which Node.js only warns about (DEP0123) but Deno's node:tls rejects
 * with ERR_INVALID_ARG_VALUE. So tls.connect() drops an IP `servername`, once for the process; the
 * server certificate is still checked against the IP, through `host` (checkServerIdentity).
 */
export async function allowIpServerNames(): Promise<void> {
  if (ipServerNamesAllowed) return;
  ipServerNamesAllowed = true;
  const tls = (await import("node:tls")).default;
  const { isIP } = await import("node:net");
  const connect = tls.connect;
  tls.connect = ((...args: Parameters<typeof connect>) => {
    const options = args[0];
    if (typeof options === "object" && options !== null && "servername" in options) {
      const name = (options as { servername?: unknown }).servername;
      if (typeof name === "string" && isIP(name) !== 0) {
        delete (options as { servername?: string }).servername;
      }
    }
    return connect(...args);
  }) as typeof connect;
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
 * Checks that the CA and the certificate parse and that the key is a private key of the certificate:
 * Deno's node:tls takes any bytes, so grpc-js would only report "Last error: null" on every call. The
 * parsers' messages name the problem ("unsupported PEM label: CERTIFICATE"), never the file's content.
 */
async function checkPems(options: TlsFiles, pems: Credentials): Promise<void> {
  const { createPrivateKey, X509Certificate } = await import("node:crypto");
  const parse = <T>(flag: string, path: string | undefined, what: string, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      throw new IpamError("invalid", `${flag} "${path}" is not a PEM ${what}: ${(err as Error).message}`);
    }
  };
  parse("--etcd-tls-ca", options.tlsCa, "certificate", () => new X509Certificate(pems.rootCertificate));
  if (!pems.certChain || !pems.privateKey) return;
  const cert = parse(
    "--etcd-tls-cert",
    options.tlsCert,
    "certificate",
    () => new X509Certificate(pems.certChain!),
  );
  const key = parse(
    "--etcd-tls-key",
    options.tlsKey,
    "private key",
    () => createPrivateKey(pems.privateKey!),
  );
  if (!cert.checkPrivateKey(key)) {
    throw new IpamError(
      "invalid",
      `--etcd-tls-key "${options.tlsKey}" is not the private key of --etcd-tls-cert "${options.tlsCert}"`,
    );
  }
}

/** The password in `path`, without one trailing line break; the message never quotes the file. */
export async function readPassword(path: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new IpamError("invalid", `Cannot read --etcd-password-file "${path}": ${(err as Error).message}`);
  }
  const password = text.replace(/\r?\n$/, "");
  if (password === "") throw new IpamError("invalid", `--etcd-password-file "${path}" is empty`);
  return password;
}
