// A netlink socket whose requests run in the kernel on a thread without a JS isolate: the kernel handles
// a request inside sendto(), so a slow one (a veth's unregistration waits ~25 ms for RCU grace periods)
// blocks a thread of Deno's blocking pool, not the caller's event loop, and costs no Worker isolate.

import { NLMSG_ERROR } from "./constants.ts";
import { EBADF, type ErrorContext, NetlinkError } from "./errors.ts";
import { mnl } from "./ffi.ts";
import { readStatus, splitMessages, stampMessage } from "./message.ts";
import { openRouteSocket, receiveDatagram } from "./socket.ts";

// sendto() declared nonblocking: Deno runs it on a pool thread and returns a promise (~1000× the cost of
// a sync FFI call: fine for requests that take the kernel milliseconds, wrong for quick ones).
const OFFTHREAD_SYMBOLS = {
  mnl_socket_sendto: { parameters: ["pointer", "buffer", "usize"], result: "isize", nonblocking: true },
} as const;

let offthread: Deno.DynamicLibrary<typeof OFFTHREAD_SYMBOLS> | undefined;

const RECV_BUFFER_SIZE = 8 * 1024;
const EIO = 5;

/**
 * Owns one NETLINK_ROUTE socket for requests that take the kernel long. One exchange at a time: calls
 * queue behind each other, so a socket is one slot of concurrency; open several for more.
 */
export class OffThreadNetlinkSocket implements AsyncDisposable {
  #handle: Deno.PointerObject | null;
  #portId: number;
  #seq = crypto.getRandomValues(new Uint32Array(1))[0];
  #recv = new Uint8Array(RECV_BUFFER_SIZE);
  #tail: Promise<unknown> = Promise.resolve();

  /**
   * Opens and binds the socket in the namespace `netnsFd` (default: the calling thread's).
   * @throws {NetlinkError} when libmnl or setns fails.
   */
  constructor(options: { netnsFd?: number; timeoutMs?: number } = {}) {
    const { netnsFd, timeoutMs = 10_000 } = options;
    this.#handle = openRouteSocket(netnsFd, timeoutMs);
    this.#portId = mnl().mnl_socket_get_portid(this.#handle);
  }

  /**
   * Closes the socket once the exchanges already queued are done (a pool thread may be using it until
   * then); idempotent.
   */
  async close(): Promise<void> {
    await this.#tail;
    if (this.#handle === null) return;
    mnl().mnl_socket_close(this.#handle);
    this.#handle = null;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Sends one request with NLM_F_ACK off the JS thread and reads its ACK. Stamps `message` in place.
   * @throws {NetlinkError} with the kernel's errno and extack text; EIO when sendto() itself failed
   * (its errno belongs to the pool thread and is lost).
   */
  request(message: Uint8Array, context: ErrorContext): Promise<void> {
    const run = this.#tail.then(() => this.#exchange(message, context));
    this.#tail = run.catch(() => {});
    return run;
  }

  async #exchange(message: Uint8Array, context: ErrorContext): Promise<void> {
    const seq = this.#seq = (this.#seq + 1) >>> 0;
    stampMessage(message, seq, true);
    offthread ??= Deno.dlopen("libmnl.so.0", OFFTHREAD_SYMBOLS);
    const sent = await offthread.symbols.mnl_socket_sendto(
      this.#live(context),
      message,
      BigInt(message.length),
    );
    if (sent < 0n) throw new NetlinkError(context, EIO, "sendto() failed on a pool thread");
    // The kernel queued the ACK before sendto() returned: this read does not wait.
    for (;;) {
      const n = receiveDatagram(this.#live(context), this.#recv, context);
      for (const reply of splitMessages(this.#recv.subarray(0, n))) {
        if (reply.pid !== this.#portId || reply.seq !== seq || reply.type !== NLMSG_ERROR) continue;
        const { errno, extack } = readStatus(reply);
        if (errno !== 0) throw new NetlinkError(context, errno, extack);
        return;
      }
    }
  }

  #live(context: ErrorContext): Deno.PointerObject {
    if (this.#handle === null) throw new NetlinkError(context, EBADF, "the netlink socket is closed");
    return this.#handle;
  }
}
