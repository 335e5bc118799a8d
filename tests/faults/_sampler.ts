// etcd samples for the history checker (_history.ts): every address key under the campaign's prefix,
// read in one range request (one etcd revision), once or periodically while the campaign runs.

import type { Etcd3 } from "etcd3";
import { History } from "./_history.ts";
import { readIpamState } from "./_ipam_state.ts";

/** Reads every address key and records it as a sample of `history`. */
export async function sampleEtcd(history: History, client: Etcd3, prefix: string): Promise<void> {
  const start = History.now();
  const { addresses } = await readIpamState(client, prefix);
  history.sample(start, addresses);
}

/** Samples every `everyMs` until disposed; a failed read (etcd down on purpose) is skipped. */
export function startSampler(
  history: History,
  client: Etcd3,
  prefix: string,
  everyMs: number,
): AsyncDisposable {
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      await sampleEtcd(history, client, prefix).catch(() => {});
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async [Symbol.asyncDispose]() {
      stopped = true;
      await loop;
    },
  };
}
