// Certificates for TLS tests, made with openssl for each run (a CA, etcd's server certificate, a client
// certificate, and a client certificate from a CA etcd does not trust), and an etcd that requires them.

import { freePort, startEtcd, type TestEtcd } from "./etcd.ts";

/** PEM file paths under `dir`; remove `dir` when done. */
export interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate from a CA etcd does not trust. */
  rogueCert: string;
  rogueKey: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd: dir, stdin: "null" }).output();
  if (!out.success) throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

/** Makes a fresh CA, a rogue CA and certificates signed by them (P-256 keys) in a temporary dir. */
export async function makePki(): Promise<Pki> {
  const dir = await Deno.makeTempDir({ prefix: "coil-t-pki-" });
  try {
    const key = (name: string) =>
      openssl(dir, [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        `${name}.key`,
      ]);
    const ca = async (name: string) => {
      await key(name);
      await openssl(dir, [
        "req",
        "-x509",
        "-new",
        "-key",
        `${name}.key`,
        "-out",
        `${name}.crt`,
        "-days",
        "2",
        "-subj",
        `/CN=${name}`,
      ]);
    };
    const signed = async (name: string, by: string, extensions: string) => {
      await key(name);
      await openssl(dir, [
        "req",
        "-new",
        "-key",
        `${name}.key`,
        "-out",
        `${name}.csr`,
        "-subj",
        `/CN=${name}`,
      ]);
      await Deno.writeTextFile(`${dir}/${name}.ext`, extensions);
      await openssl(dir, [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        `${by}.crt`,
        "-CAkey",
        `${by}.key`,
        "-CAcreateserial",
        "-out",
        `${name}.crt`,
        "-days",
        "2",
        "-extfile",
        `${name}.ext`,
      ]);
    };
    await ca("ca");
    await ca("rogue-ca");
    // coild reaches etcd over its UNIX socket, whose TLS name is "localhost".
    await signed("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
    await signed("client", "ca", "extendedKeyUsage=clientAuth\n");
    await signed("rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n");
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  const p = (file: string) => `${dir}/${file}`;
  return {
    dir,
    ca: p("ca.crt"),
    serverCert: p("server.crt"),
    serverKey: p("server.key"),
    clientCert: p("client.crt"),
    clientKey: p("client.key"),
    rogueCert: p("rogue.crt"),
    rogueKey: p("rogue.key"),
  };
}

/**
 * etcd serving TLS only and requiring a client certificate signed by `pki.ca`, on TCP and on its UNIX
 * socket (`unixEndpoint`, for a coild inside a netns).
 */
export function startTlsEtcd(pki: Pki, args: string[] = []): Promise<TestEtcd> {
  const port = freePort();
  return startEtcd({
    scheme: "https",
    clientPort: port,
    args: [
      "--cert-file",
      pki.serverCert,
      "--key-file",
      pki.serverKey,
      "--trusted-ca-file",
      pki.ca,
      "--client-cert-auth",
      "--listen-client-urls",
      `https://127.0.0.1:${port},unixs://localhost:${port}`,
      ...args,
    ],
  });
}

/** The coil flags that present the client certificate. */
export function tlsFlags(pki: Pki): string[] {
  return ["--etcd-tls-ca", pki.ca, "--etcd-tls-cert", pki.clientCert, "--etcd-tls-key", pki.clientKey];
}
