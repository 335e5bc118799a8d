// Worker side of link_deleter.ts: deletes host veths with its own netlink socket, so that the ~25 ms the
// kernel takes per veth (RCU grace periods) block this thread, not coild's request loop.
/// <reference lib="deno.worker" />

import { isNotFound, NetlinkError } from "../netlink/errors.ts";
import { linkByName, linkDel } from "../netlink/link.ts";
import { NetlinkSocket } from "../netlink/socket.ts";
import type { DeleteReply, DeleteRequest } from "./link_deleter.ts";
import { isAttachmentLink } from "./veth_name.ts";

// Opened when the worker starts: the thread was created by coild's main thread in the node's netns.
const sock = new NetlinkSocket();

self.onmessage = (event: MessageEvent<DeleteRequest>) => {
  const { id, name, aliases } = event.data;
  let reply: DeleteReply;
  try {
    const link = linkByName(sock, name);
    const ours = link !== undefined && isAttachmentLink(link.alias, aliases);
    if (ours) linkDel(sock, link.index);
    reply = { id, deleted: ours };
  } catch (err) {
    if (isNotFound(err)) reply = { id, deleted: false };
    else {reply = {
        id,
        error: err instanceof NetlinkError || err instanceof Error ? err.message : String(err),
      };}
  }
  self.postMessage(reply);
};
