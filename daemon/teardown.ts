// Every way an attachment ends — DEL, the GC verb, the leak sweep — takes the same steps in the same
// order: the pod's veth (and with it the host route) first, then the addresses. Released first, an
// address could go to another pod while a host route still pointed at the old one.

import type { Attachment } from "../cni/api.ts";
import type { Allocation, NodeIpam } from "../ipam/node_ipam.ts";
import type { KeyedQueue } from "./keyed_queue.ts";
import type { PodNetwork } from "./nodenet/pod_network.ts";

export interface Teardown {
  /**
   * Removes the attachment's pod network, then releases its addresses. The caller holds the
   * container's queue slot (a CNI call). A failure leaves the addresses allocated, so a retry can finish.
   */
  now(attachment: Attachment): Promise<Allocation | undefined>;
  /**
   * The same for an allocation found by a scan (GC, sweep), run in the container's queue and skipped
   * when, by then, the attachment is not that allocation any more (a DEL and a new ADD ran first).
   * @returns whether it tore the allocation down.
   */
  expire(allocation: Allocation): Promise<boolean>;
}

export function createTeardown(deps: {
  ipam: Pick<NodeIpam, "find" | "release">;
  podNetwork: Pick<PodNetwork, "destroy">;
  queue: KeyedQueue;
}): Teardown {
  const { ipam, podNetwork, queue } = deps;

  async function now(attachment: Attachment): Promise<Allocation | undefined> {
    await podNetwork.destroy(attachment);
    return await ipam.release(attachment.network, attachment.containerId, attachment.ifName);
  }

  function expire(allocation: Allocation): Promise<boolean> {
    return queue.run(allocation.containerId, async () => {
      const current = ipam.find(allocation.network, allocation.containerId, allocation.ifName);
      if (current?.createdAt !== allocation.createdAt || current.netns !== allocation.netns) return false;
      return (await now(allocation)) !== undefined;
    });
  }

  return { now, expire };
}
