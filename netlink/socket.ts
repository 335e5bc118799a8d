// A libmnl netlink socket (NETLINK_ROUTE) bound in one network namespace: request/ACK, dumps and
// batches, each matched to the replies that carry its own sequence numbers.

import {
  NETLINK_CAP_ACK,
  NETLINK_EXT_ACK,
  NETLINK_GET_STRICT_CHK,
  NETLINK_ROUTE,
  NLM_F_DUMP_INTR,
  NLMSG_DONE,
  NLMSG_ERROR,
} from "./constants.ts";
import { EAGAIN, EBADF, EINTR, type ErrorContext, NetlinkError } from "./errors.ts";
import { lastErrno, libc, mnl, SO_RCVBUFFORCE, SO_RCVTIMEO, SOCK_CLOEXEC, SOL_SOCKET } from "./ffi.ts";
import { type Message, readStatus, splitMessages, stampMessage } from "./message.ts";
import { withNetns } from "./netns.ts";

// Dump replies are at most 32 KiB per datagram (netlink_recvmsg() caps max_recvmsg_len).
const RECV_BUFFER_SIZE = 64 * 1024;
// Bytes per sendto() in a batch: below the default 208 KiB send buffer (netlink_sendmsg() rejects
// larger), and few enough messages that their error replies fit in the receive buffer.
const BATCH_BYTES = 128 * 1024;
// Forced receive buffer (the kernel doubles it): a batch chunk whose every message fails must not
// overflow it, or the kernel drops replies and reports ENOBUFS.
const RECV_SOCKET_BUFFER = 4 * 1024 * 1024;

/** Options of a NetlinkSocket. */
export interface NetlinkSocketOptions {
  /** Open the socket inside this namespace (fd from openNetns()); default: the current one. */
  netnsFd?: number;
  /** How long to wait for a reply before failing with EAGAIN; the kernel normally answers at once. */
  timeoutMs?: number;
}

/** Turns one reply message into a value, or undefined to skip it. */
export type Parse<T> = (message: Message) => T | undefined;

/**
 * Owns one NETLINK_ROUTE socket. A socket stays in the namespace it was opened in, so calls need no
 * switching; use one socket per namespace. All calls are synchronous and complete their exchange
 * (a request reads up to its ACK, a dump up to its NLMSG_DONE), so replies never interleave.
 */
export class NetlinkSocket implements Disposable {
  #handle: Deno.PointerObject | null;
  #portId: number;
  #seq: number;
  #recv = new Uint8Array(RECV_BUFFER_SIZE);

  /** Opens and binds the socket. @throws {NetlinkError} when libmnl or setns fails. */
  constructor(options: NetlinkSocketOptions = {}) {
    const { netnsFd, timeoutMs = 10_000 } = options;
    this.#handle = openRouteSocket(netnsFd, timeoutMs);
    this.#portId = mnl().mnl_socket_get_portid(this.#handle);
    this.#seq = crypto.getRandomValues(new Uint32Array(1))[0];
  }

  /** The port ID the kernel assigned at bind time. */
  get portId(): number {
    return this.#portId;
  }

  /** Closes the socket; idempotent. */
  close(): void {
    if (this.#handle === null) return;
    mnl().mnl_socket_close(this.#handle);
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Sends one request with NLM_F_ACK and reads until the ACK for its sequence number, returning the
   * replies that `parse` maps (e.g. the answer to RTM_GETLINK). Stamps `message` in place.
   * @throws {NetlinkError} with the kernel's errno and extack message when the request fails.
   */
  request<T = never>(message: Uint8Array, context: ErrorContext, parse?: Parse<T>): T[] {
    const seq = this.#nextSeq();
    stampMessage(message, seq, true);
    this.#send(message, context);
    const replies: T[] = [];
    this.#read(context, (reply) => {
      if (reply.seq !== seq) return false; // a late reply to an abandoned exchange
      if (reply.type === NLMSG_ERROR) {
        const { errno, extack } = readStatus(reply);
        if (errno !== 0) throw new NetlinkError(context, errno, extack);
        return true;
      }
      const value = parse?.(reply);
      if (value !== undefined) replies.push(value);
      return false;
    });
    return replies;
  }

  /**
   * Sends a dump request (NLM_F_DUMP set by the caller) and reads until NLMSG_DONE, mapping each
   * reply with `parse`. The dump is always read to its end, even when `parse` throws, so the socket
   * stays usable. Stamps `message` in place.
   * @throws {NetlinkError} on failure; code EINTR (see isDumpInterrupted()) when the kernel flagged
   * the dump as inconsistent (NLM_F_DUMP_INTR): retry it.
   */
  dump<T>(message: Uint8Array, context: ErrorContext, parse: Parse<T>): T[] {
    const seq = this.#nextSeq();
    stampMessage(message, seq, false);
    this.#send(message, context);
    const values: T[] = [];
    let interrupted = false;
    let parseError: unknown;
    this.#read(context, (reply) => {
      if (reply.seq !== seq) return false;
      if (reply.flags & NLM_F_DUMP_INTR) interrupted = true;
      if (reply.type === NLMSG_DONE || reply.type === NLMSG_ERROR) {
        const { errno, extack } = readStatus(reply);
        if (errno !== 0) throw new NetlinkError(context, errno, extack);
        return true;
      }
      if (parseError !== undefined) return false;
      try {
        const value = parse(reply);
        if (value !== undefined) values.push(value);
      } catch (err) {
        parseError = err;
      }
      return false;
    });
    if (parseError !== undefined) throw parseError;
    if (interrupted) throw new NetlinkError(context, EINTR, "dump interrupted by a concurrent change, retry");
    return values;
  }

  /**
   * Sends many requests in few sendto() calls and returns, per message (same order), undefined on
   * success or its NetlinkError worded by `describe(index)`. Only the last message of each chunk asks
   * for an ACK: the kernel handles a chunk in order inside sendto() and always reports failures, so
   * that ACK proves every earlier message done. The messages are copied, not modified.
   * @throws {NetlinkError} when sending or receiving itself fails (e.g. ENOBUFS: replies were lost).
   */
  batch(
    messages: readonly Uint8Array[],
    describe: (index: number) => ErrorContext,
  ): (NetlinkError | undefined)[] {
    const results = new Array<NetlinkError | undefined>(messages.length).fill(undefined);
    const context = { op: "send", object: `a batch of ${messages.length} netlink messages` };
    let buffer = new Uint8Array(BATCH_BYTES);
    for (let first = 0; first < messages.length;) {
      let end = first, size = 0;
      while (end < messages.length && (end === first || size + messages[end].length <= BATCH_BYTES)) {
        size += messages[end++].length;
      }
      if (size > buffer.length) buffer = new Uint8Array(size);
      const firstSeq = (this.#seq + 1) >>> 0;
      for (let i = first, at = 0; i < end; at += messages[i++].length) {
        buffer.set(messages[i], at);
        stampMessage(buffer.subarray(at, at + messages[i].length), this.#nextSeq(), i === end - 1);
      }
      this.#send(buffer.subarray(0, size), context);
      const count = end - first;
      this.#read(context, (reply) => {
        const k = (reply.seq - firstSeq) >>> 0;
        if (reply.type !== NLMSG_ERROR || k >= count) return false;
        const { errno, extack } = readStatus(reply);
        if (errno !== 0) results[first + k] = new NetlinkError(describe(first + k), errno, extack);
        return k === count - 1;
      });
      first = end;
    }
    return results;
  }

  #nextSeq(): number {
    this.#seq = (this.#seq + 1) >>> 0;
    return this.#seq;
  }

  #live(context: ErrorContext): Deno.PointerObject {
    if (this.#handle === null) throw new NetlinkError(context, EBADF, "the netlink socket is closed");
    return this.#handle;
  }

  #send(bytes: Uint8Array, context: ErrorContext): void {
    const handle = this.#live(context);
    for (;;) {
      if (mnl().mnl_socket_sendto(handle, bytes, BigInt(bytes.length)) >= 0n) return;
      const errno = lastErrno();
      if (errno !== EINTR) throw new NetlinkError(context, errno);
    }
  }

  // Reads datagrams and hands each of our messages to `onMessage` until it returns true.
  #read(context: ErrorContext, onMessage: (message: Message) => boolean): void {
    const handle = this.#live(context);
    for (;;) {
      const n = receiveDatagram(handle, this.#recv, context);
      for (const message of splitMessages(this.#recv.subarray(0, n))) {
        if (message.pid === this.#portId && onMessage(message)) return;
      }
    }
  }
}

/**
 * Reads one datagram into `buf` and returns its length, for NetlinkSocket and OffThreadNetlinkSocket alike.
 * @throws {NetlinkError} with recvmsg()'s errno; EAGAIN when no reply came within the socket's timeout.
 */
export function receiveDatagram(handle: Deno.PointerObject, buf: Uint8Array, context: ErrorContext): number {
  for (;;) {
    const n = Number(mnl().mnl_socket_recvfrom(handle, buf, BigInt(buf.length)));
    if (n >= 0) return n;
    // With SO_RCVTIMEO a signal interrupts recvmsg() even under SA_RESTART (socket(7)).
    const errno = lastErrno();
    if (errno === EINTR) continue;
    throw new NetlinkError(context, errno, errno === EAGAIN ? "no reply from the kernel in time" : undefined);
  }
}

/**
 * A bound, configured libmnl NETLINK_ROUTE socket in the namespace `netnsFd` (default: the calling
 * thread's), for NetlinkSocket and OffThreadNetlinkSocket alike.
 * @throws {NetlinkError} when libmnl, setns or a socket option fails (the socket is closed then).
 */
export function openRouteSocket(netnsFd: number | undefined, timeoutMs: number): Deno.PointerObject {
  const handle = netnsFd === undefined ? openBound() : withNetns(netnsFd, openBound);
  try {
    configure(handle, timeoutMs);
  } catch (err) {
    mnl().mnl_socket_close(handle);
    throw err;
  }
  return handle;
}

function openBound(): Deno.PointerObject {
  const context = { op: "open", object: "netlink socket" };
  const handle = mnl().mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (handle === null) throw new NetlinkError(context, lastErrno());
  // Port 0: the kernel picks a free port ID (MNL_SOCKET_AUTOPID).
  if (mnl().mnl_socket_bind(handle, 0, 0) < 0) {
    const errno = lastErrno();
    mnl().mnl_socket_close(handle);
    throw new NetlinkError(context, errno);
  }
  return handle;
}

function configure(handle: Deno.PointerObject, timeoutMs: number): void {
  const context = { op: "configure", object: "netlink socket" };
  const one = new Uint8Array(new Int32Array([1]).buffer);
  // EXT_ACK: error replies carry the kernel's reason. CAP_ACK: they do not echo the whole request.
  // GET_STRICT_CHK: dumps honour their filters (a route dump by table reads only that table).
  for (const option of [NETLINK_EXT_ACK, NETLINK_CAP_ACK, NETLINK_GET_STRICT_CHK]) {
    if (mnl().mnl_socket_setsockopt(handle, option, one, one.length) < 0) {
      throw new NetlinkError(context, lastErrno());
    }
  }
  const fd = mnl().mnl_socket_get_fd(handle);
  // Best effort: without CAP_NET_ADMIN the default buffer stays, and a batch may see ENOBUFS.
  const rcvbuf = new Uint8Array(new Int32Array([RECV_SOCKET_BUFFER]).buffer);
  libc().setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf, rcvbuf.length);
  const timeval = new Uint8Array(
    new BigInt64Array([
      BigInt(Math.floor(timeoutMs / 1000)),
      BigInt((timeoutMs % 1000) * 1000),
    ]).buffer,
  );
  if (libc().setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeval, timeval.length) < 0) {
    throw new NetlinkError(context, lastErrno());
  }
}
