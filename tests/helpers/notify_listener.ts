// A real $NOTIFY_SOCKET listener for tests: a Python process binds a UNIX datagram socket (a path, or an
// abstract `@name`) and prints each datagram it receives as a JSON line with its arrival time.

const LISTENER = `
import json, socket, sys, time
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + name[1:] if name.startswith("@") else name)
print(json.dumps({"bound": True}), flush=True)
while True:
    data = s.recv(4096)
    print(json.dumps({"at": time.time() * 1000, "text": data.decode()}), flush=True)
`;

/** One datagram: its text and when it arrived (ms since the Unix epoch). */
export interface Datagram {
  at: number;
  text: string;
  /** The KEY=VALUE lines, as a map. */
  fields: Map<string, string>;
}

export interface NotifyListener extends AsyncDisposable {
  /** The address to put into NOTIFY_SOCKET. */
  socket: string;
  /** Every datagram so far. */
  received(): Datagram[];
  /** Waits until a datagram has `key` (and `value`, when given); returns it. @throws after `limitMs`. */
  waitFor(key: string, value?: string, limitMs?: number): Promise<Datagram>;
}

/**
 * Binds `socket` (a path, or `@name`) and collects what arrives; dispose kills the listener and removes
 * a path socket.
 */
export async function listenNotify(socket: string): Promise<NotifyListener> {
  const child = new Deno.Command("python3", {
    args: ["-c", LISTENER, socket],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const datagrams: Datagram[] = [];
  let bound = false;
  let buffer = "";
  const decoder = new TextDecoder();
  const reading = child.stdout.pipeTo(
    new WritableStream({
      write(chunk) {
        buffer += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = JSON.parse(buffer.slice(0, nl));
          buffer = buffer.slice(nl + 1);
          if (line.bound) bound = true;
          else {
            const fields = new Map<string, string>(
              line.text.split("\n").map((
                l: string,
              ) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
            );
            datagrams.push({ at: line.at, text: line.text, fields });
          }
        }
      },
    }),
  ).catch(() => {});
  const stderr = new Response(child.stderr).text();
  const dispose = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await reading;
    await stderr;
    if (!socket.startsWith("@")) await Deno.remove(socket).catch(() => {});
  };
  const deadline = Date.now() + 10_000;
  while (!bound) {
    if (Date.now() > deadline) {
      await dispose();
      throw new Error(`Notify listener on "${socket}" did not bind: ${await stderr}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    socket,
    received: () => [...datagrams],
    async waitFor(key, value, limitMs = 10_000) {
      const until = Date.now() + limitMs;
      for (;;) {
        const hit = datagrams.find((d) =>
          d.fields.has(key) && (value === undefined || d.fields.get(key) === value)
        );
        if (hit) return hit;
        if (Date.now() > until) {
          throw new Error(
            `No ${key}${value ? `=${value}` : ""} on "${socket}" within ${limitMs} ms; got:\n` +
              datagrams.map((d) => JSON.stringify(d.text)).join("\n"),
          );
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    [Symbol.asyncDispose]: dispose,
  };
}
