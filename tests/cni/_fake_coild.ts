// A stand-in for coild's socket, for the CNI client's tests only: it records each request and answers
// with a canned reply. Evidence for the client protocol, not for the daemon (tested elsewhere).

/** What the fake answers a request with: text to send, or `hold` to keep the connection open unanswered. */
export type FakeReply = string | "hold";

export interface FakeCoild extends AsyncDisposable {
  path: string;
  /** Each request as received, whole (the client half-closes after its line). */
  requests: string[];
}

/** Listens on a fresh socket in `dir` and answers every request with `reply(request)`. */
export function startFakeCoild(dir: string, reply: (request: string) => FakeReply): FakeCoild {
  const path = `${dir}/coild-${crypto.randomUUID().slice(0, 8)}.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const requests: string[] = [];
  const held = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  const serveOne = async (conn: Deno.Conn) => {
    const request = await readToEof(conn);
    requests.push(request);
    const answer = reply(request);
    if (answer === "hold") {
      held.add(conn);
      return;
    }
    const bytes = new TextEncoder().encode(answer);
    try {
      for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
    } catch (err) {
      // The client may stop reading early (a reply over its limit): that is its right.
      if (!(err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.ConnectionReset)) throw err;
    }
    conn.close();
  };
  const loop = (async () => {
    for await (const conn of listener) {
      const handler = serveOne(conn).finally(() => handlers.delete(handler));
      handlers.add(handler);
    }
  })();
  return {
    path,
    requests,
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop.catch(() => {});
      await Promise.all(handlers);
      for (const conn of held) conn.close();
    },
  };
}

async function readToEof(conn: Deno.Conn): Promise<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(4096);
  let text = "";
  for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
    text += decoder.decode(buffer.subarray(0, n), { stream: true });
  }
  return text + decoder.decode();
}
