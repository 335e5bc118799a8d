// The CNI side of coild's socket: one connection per call, the request as one JSON line, the reply read
// to EOF. No logic beyond the protocol: coild decides, and its CNI error codes pass through unchanged.

import { describe, isObject } from "./_json.ts";
import type { AddResult, ApiRequest } from "./api.ts";
import { CniError, ERR_INTERNAL, ERR_IO, ERR_TRY_AGAIN_LATER } from "./errors.ts";
import { parseResult } from "./result.ts";

/** A reply longer than this is not coild's: ADD results are a few hundred bytes. */
const MAX_REPLY_BYTES = 1 << 20;
/** How much of a bad reply goes into the error's details. */
const MAX_DETAILS_CHARS = 2000;

/**
 * Sends `request` to coild at `socket` and returns its ADD result (undefined for the other verbs).
 * Not idempotent by itself: whether a repeat is harmless depends on the verb (coild makes them so).
 * @throws {CniError} 11 when coild is not reachable (no socket, connection refused or reset, no reply
 *   within `timeoutMs`); coild's own code when it reports a failure; 999 when the reply is not the
 *   protocol (its text in `details`); 5 for other socket errors
 */
export async function callCoild(
  socket: string,
  request: ApiRequest,
  timeoutMs: number,
): Promise<AddResult | undefined> {
  const text = await exchange(socket, JSON.stringify(request) + "\n", timeoutMs);
  return parseReply(socket, text);
}

async function exchange(socket: string, line: string, timeoutMs: number): Promise<string> {
  let conn: Deno.UnixConn | undefined;
  let timedOut = false;
  // AbortSignal.timeout, not setTimeout: the first setTimeout loads Deno's Node timer code (~3.7 ms).
  const signal = AbortSignal.timeout(timeoutMs);
  let onTimeout = () => {};
  const deadline = new Promise<never>((_, reject) => {
    onTimeout = () => {
      timedOut = true;
      conn?.close(); // wakes the pending read or write, whose rejection race() has already handled
      reject(unreachable(socket, `no reply within ${timeoutMs} ms`));
    };
    signal.addEventListener("abort", onTimeout, { once: true });
  });
  const talk = async (): Promise<string> => {
    const opened = await Deno.connect({ transport: "unix", path: socket });
    if (timedOut) {
      opened.close();
      return "";
    }
    conn = opened;
    await writeAll(conn, new TextEncoder().encode(line));
    // Half-close: coild sees EOF after the request even if it reads to EOF rather than to a newline.
    await conn.closeWrite();
    return new TextDecoder().decode(await readAll(socket, conn));
  };
  try {
    return await Promise.race([talk(), deadline]);
  } catch (err) {
    throw timedOut ? err : connectionError(socket, err);
  } finally {
    signal.removeEventListener("abort", onTimeout);
    if (!timedOut) conn?.close();
  }
}

async function writeAll(conn: Deno.UnixConn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

async function readAll(socket: string, conn: Deno.UnixConn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const buffer = new Uint8Array(16 * 1024);
  for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
    chunks.push(buffer.slice(0, n));
    size += n;
    if (size > MAX_REPLY_BYTES) {
      throw new CniError(
        ERR_INTERNAL,
        `Invalid reply from coild at ${socket}: longer than ${MAX_REPLY_BYTES} bytes`,
      );
    }
  }
  const all = new Uint8Array(size);
  chunks.reduce((offset, chunk) => (all.set(chunk, offset), offset + chunk.length), 0);
  return all;
}

function connectionError(socket: string, err: unknown): unknown {
  if (err instanceof CniError) return err;
  if (err instanceof Deno.errors.NotFound) return unreachable(socket, "the socket does not exist", err);
  if (err instanceof Deno.errors.ConnectionRefused) return unreachable(socket, "connection refused", err);
  if (
    err instanceof Deno.errors.ConnectionReset || err instanceof Deno.errors.BrokenPipe ||
    err instanceof Deno.errors.UnexpectedEof
  ) {
    // coild restarted or died mid-call; every verb is safe to repeat, so the runtime may retry.
    return unreachable(socket, `the connection broke: ${err.message}`, err);
  }
  if (err instanceof Error) {
    const msg = `Cannot talk to coild at ${socket}: ${err.message}`;
    return new CniError(ERR_IO, msg, undefined, { cause: err });
  }
  return err;
}

function unreachable(socket: string, cause: string, err?: unknown): CniError {
  const msg = `Node daemon coild is not reachable at ${socket}: ${cause}`;
  return new CniError(ERR_TRY_AGAIN_LATER, msg, undefined, { cause: err });
}

function parseReply(socket: string, text: string): AddResult | undefined {
  if (text === "") {
    // coild closed without answering: it stopped mid-call. Transient, like a refused connection.
    throw unreachable(socket, "it closed the connection without a reply");
  }
  const bad = (problem: string): never => {
    throw new CniError(
      ERR_INTERNAL,
      `Invalid reply from coild at ${socket}: ${problem}`,
      text.length > MAX_DETAILS_CHARS ? `${text.slice(0, MAX_DETAILS_CHARS)}...` : text,
    );
  };
  let reply: unknown;
  try {
    reply = JSON.parse(text);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    return bad("not JSON");
  }
  if (!isObject(reply) || typeof reply.ok !== "boolean") return bad("no boolean ok");
  if (!reply.ok) {
    const { code, msg, details } = reply;
    // v2's client dropped the error when a failure carried no code (coil-anchor.md: convertError).
    if (!Number.isSafeInteger(code) || (code as number) < 1) {
      return bad(`a failure with code ${describe(code)}`);
    }
    if (typeof msg !== "string") return bad(`a failure with msg ${describe(msg)}`);
    if (details !== undefined && typeof details !== "string") {
      return bad(`a failure with details ${describe(details)}`);
    }
    throw new CniError(code as number, msg, details);
  }
  if (reply.result === undefined) return undefined;
  try {
    return parseResult(reply.result, ERR_INTERNAL, "result");
  } catch (err) {
    if (!(err instanceof CniError)) throw err;
    return bad(err.msg);
  }
}
