// A process that holds a node name as coild does (acquireNodeIdentity), for tests that need real
// processes in real network namespaces: prints "acquired", "reacquired" or "fenced <message>" lines on
// stdout, exits 3 with the error on stderr when the name is taken, and closes cleanly on SIGTERM.
// Usage: _identity_holder.ts ENDPOINT PREFIX NODE TTL DEAD_AFTER

import { connectEtcd } from "../../ipam/etcd_client.ts";
import { createLogger } from "../../daemon/log.ts";
import { acquireNodeIdentity, NodeNameTakenError } from "../../daemon/node_identity.ts";

const [endpoint, prefix, node, ttl, deadAfter] = Deno.args;
const client = await connectEtcd({ endpoints: [endpoint], prefix, callTimeoutMs: 5000 });
const stop = new AbortController();
Deno.addSignalListener("SIGTERM", () => stop.abort());
const fenced = Promise.withResolvers<void>();
let code = 0;
try {
  const identity = await acquireNodeIdentity({
    client,
    prefix,
    node,
    ttlSeconds: Number(ttl),
    deadAfterSeconds: Number(deadAfter),
    version: "test",
    log: createLogger(),
    signal: stop.signal,
    onReacquired: () => console.log("reacquired"),
    onFenced: (message) => {
      console.log(`fenced ${message}`);
      code = 4;
      fenced.resolve();
    },
  });
  console.log("acquired");
  await Promise.race([
    new Promise((resolve) => stop.signal.addEventListener("abort", resolve)),
    fenced.promise,
  ]);
  await identity.close();
} catch (err) {
  if (!(err instanceof NodeNameTakenError)) throw err;
  console.error(err.message);
  code = 3;
} finally {
  client.close();
}
Deno.exit(code);
