// The one CNI dispatcher, after containernetworking/cni pkg/skel: validates the environment and the
// netconf, gates verbs by version, runs the handler and prints its output or the error JSON.

import { type CniEnv, readEnv } from "./env.ts";
import { CniError, ERR_INTERNAL, ERR_IO } from "./errors.ts";
import { type NetConf, parseNetConf } from "./netconf.ts";
import { checkVerbAllowed, CURRENT_VERSION, SUPPORTED_VERSIONS, type Verb } from "./version.ts";

/** The process's I/O, injected so that the dispatcher is testable without a process. */
export interface CniIo {
  getenv(name: string): string | undefined;
  /** All of stdin. */
  readStdin(): Promise<Uint8Array>;
  writeStdout(text: string): Promise<void>;
  writeStderr(text: string): Promise<void>;
}

/** One validated call: its environment and its netconf. */
export interface CniCall {
  env: CniEnv;
  conf: NetConf;
}

/** A verb's handler: returns the JSON to print on stdout (ADD's result), or undefined for nothing. */
export type Handler = (call: CniCall) => Promise<unknown>;

export type Handlers = Record<Exclude<Verb, "version">, Handler>;

/**
 * Runs one CNI call and returns the process exit code: 0, or 1 after printing
 * `{cniVersion, code, msg, details?}` to stdout. A CniError keeps its code; any other error becomes 999
 * (its stack goes to stderr). VERSION reads no stdin (the spec allows ignoring it, and Go's skel does).
 */
export async function dispatch(io: CniIo, handlers: Handlers): Promise<number> {
  let cniVersion = CURRENT_VERSION;
  try {
    const isVersion = io.getenv("CNI_COMMAND") === "VERSION";
    // Read stdin before anything can fail, so that the runtime's write never meets a closed pipe.
    const stdin = isVersion ? undefined : await readStdin(io);
    const env = readEnv(io.getenv);
    if (env.verb === "version" || stdin === undefined) { // the same condition: VERSION is all it needs
      await io.writeStdout(
        JSON.stringify({ cniVersion: CURRENT_VERSION, supportedVersions: SUPPORTED_VERSIONS }) + "\n",
      );
      return 0;
    }
    const conf = parseNetConf(stdin);
    cniVersion = conf.cniVersion;
    checkVerbAllowed(env.verb, conf.cniVersion);
    const output = await handlers[env.verb]({ env, conf });
    if (output !== undefined) await io.writeStdout(JSON.stringify(output) + "\n");
    return 0;
  } catch (err) {
    const error = err instanceof CniError ? err : internal(err);
    if (!(err instanceof CniError)) {
      await io.writeStderr(`coil: ${err instanceof Error ? err.stack : String(err)}\n`);
    }
    const json: Record<string, unknown> = { cniVersion, code: error.code, msg: error.msg };
    if (error.details !== undefined) json.details = error.details;
    await io.writeStdout(JSON.stringify(json) + "\n");
    return 1;
  }
}

async function readStdin(io: CniIo): Promise<Uint8Array> {
  try {
    return await io.readStdin();
  } catch (err) {
    if (!(err instanceof Error)) throw err;
    throw new CniError(ERR_IO, `Cannot read the netconf from stdin: ${err.message}`);
  }
}

function internal(err: unknown): CniError {
  return new CniError(ERR_INTERNAL, `Internal error: ${err instanceof Error ? err.message : String(err)}`);
}
