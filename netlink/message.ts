// Pure encode/decode of netlink messages: the nlmsghdr, fixed-size family headers by layout, and
// attributes (4-byte aligned, nestable). Host byte order; the reader rejects malformed sizes.

import {
  NLA_F_NESTED,
  NLA_TYPE_MASK,
  NLM_F_ACK,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLMSG_ERROR,
  NLMSGERR_ATTR_MSG,
} from "./constants.ts";

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const NLMSG_HDRLEN = 16;
const NLA_HDRLEN = 4;
const NLA_MAX_LEN = 0xffff;

/** Rounds up to the 4-byte alignment of netlink messages and attributes (NLMSG_ALIGN, NLA_ALIGN). */
function align4(n: number): number {
  return (n + 3) & ~3;
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---- Writing ----

/** A message being built: `bytes[0, length)` is written so far. Fresh buffers are zero-filled. */
export interface MessageWriter {
  bytes: Uint8Array;
  view: DataView;
  length: number;
}

/**
 * Starts a message with its nlmsghdr; sequence number and port are left 0 for the socket to fill.
 * `capacity` bounds the whole message: writing past it throws a RangeError.
 */
export function newMessage(type: number, flags: number, capacity = 256): MessageWriter {
  const bytes = new Uint8Array(capacity);
  const w: MessageWriter = { bytes, view: viewOf(bytes), length: 0 };
  const at = reserve(w, NLMSG_HDRLEN);
  w.view.setUint16(at + 4, type, LITTLE_ENDIAN);
  w.view.setUint16(at + 6, flags, LITTLE_ENDIAN);
  return w;
}

/** Sets nlmsg_len and returns the message bytes (a view onto the writer's buffer). */
export function endMessage(w: MessageWriter): Uint8Array {
  w.view.setUint32(0, w.length, LITTLE_ENDIAN);
  return w.bytes.subarray(0, w.length);
}

/**
 * Stamps an encoded message with its sequence number and sets or clears NLM_F_ACK, in place; the
 * socket does this when it sends, so encoders need not know about sequencing.
 */
export function stampMessage(message: Uint8Array, seq: number, ack: boolean): void {
  // Byte by byte, not through a DataView: a batch stamps thousands of messages.
  const lo = LITTLE_ENDIAN ? 6 : 7; // the byte of nlmsg_flags that holds NLM_F_ACK (0x4)
  message[lo] = ack ? message[lo] | NLM_F_ACK : message[lo] & ~NLM_F_ACK;
  for (let i = 0; i < 4; i++) message[8 + (LITTLE_ENDIAN ? i : 3 - i)] = (seq >>> (8 * i)) & 0xff;
}

// Claims `size` bytes plus alignment padding and returns their offset.
function reserve(w: MessageWriter, size: number): number {
  const at = w.length;
  const end = at + align4(size);
  if (end > w.bytes.length) {
    throw new RangeError(`Netlink message too large: ${end} bytes exceed its ${w.bytes.length}-byte buffer`);
  }
  w.length = end;
  return at;
}

/** Appends an attribute with a raw payload. @throws {RangeError} past the buffer or 64 KiB. */
export function putAttr(w: MessageWriter, type: number, payload: Uint8Array): void {
  const at = putAttrHeader(w, type, payload.length);
  w.bytes.set(payload, at + NLA_HDRLEN);
}

function putAttrHeader(w: MessageWriter, type: number, payloadLength: number): number {
  const length = NLA_HDRLEN + payloadLength;
  if (length > NLA_MAX_LEN) throw new RangeError(`Netlink attribute ${type} too large: ${length} bytes`);
  const at = reserve(w, length);
  w.view.setUint16(at, length, LITTLE_ENDIAN);
  w.view.setUint16(at + 2, type, LITTLE_ENDIAN);
  return at;
}

export function putU8(w: MessageWriter, type: number, value: number): void {
  w.view.setUint8(putAttrHeader(w, type, 1) + NLA_HDRLEN, value);
}

export function putU16(w: MessageWriter, type: number, value: number): void {
  w.view.setUint16(putAttrHeader(w, type, 2) + NLA_HDRLEN, value, LITTLE_ENDIAN);
}

export function putU32(w: MessageWriter, type: number, value: number): void {
  w.view.setUint32(putAttrHeader(w, type, 4) + NLA_HDRLEN, value, LITTLE_ENDIAN);
}

const encoder = new TextEncoder();

/** Appends a NUL-terminated string attribute, as the kernel's NLA_STRING/NLA_NUL_STRING expect. */
export function putString(w: MessageWriter, type: number, value: string): void {
  const text = encoder.encode(value);
  const at = putAttrHeader(w, type, text.length + 1);
  w.bytes.set(text, at + NLA_HDRLEN);
}

/** Opens a nested attribute (flagged NLA_F_NESTED, as libmnl does); close it with nestEnd(). */
export function nestStart(w: MessageWriter, type: number): number {
  return putAttrHeader(w, type | NLA_F_NESTED, 0);
}

/** Closes the nested attribute opened at `start`, fixing its length. */
export function nestEnd(w: MessageWriter, start: number): void {
  const length = w.length - start;
  if (length > NLA_MAX_LEN) throw new RangeError(`Nested netlink attribute too large: ${length} bytes`);
  w.view.setUint16(start, length, LITTLE_ENDIAN);
}

// ---- Fixed-size family headers (layouts in headers.ts) ----

/** A C struct as field names and sizes in order; "" is padding. */
export type Layout = readonly (readonly [string, 1 | 2 | 4])[];
/** The struct's named fields as numbers. */
export type StructOf<L extends Layout> = { [F in Exclude<L[number][0], "">]: number };

/** Byte size of a family header. */
export function structSize(layout: Layout): number {
  return layout.reduce((sum, [, size]) => sum + size, 0);
}

/** Appends a family header right after the nlmsghdr; missing fields are 0. */
export function putStruct<L extends Layout>(w: MessageWriter, layout: L, value: Partial<StructOf<L>>): void {
  let at = reserve(w, structSize(layout));
  const fields = value as Record<string, number | undefined>;
  for (const [name, size] of layout) {
    const v = name === "" ? 0 : fields[name] ?? 0;
    if (size === 1) w.view.setUint8(at, v);
    else if (size === 2) w.view.setUint16(at, v, LITTLE_ENDIAN);
    else w.view.setUint32(at, v, LITTLE_ENDIAN);
    at += size;
  }
}

/** Reads a family header from the start of a payload. @throws {RangeError} when the payload is short. */
export function readStruct<L extends Layout>(payload: Uint8Array, layout: L): StructOf<L> {
  const size = structSize(layout);
  if (payload.length < size) {
    throw new RangeError(`Malformed netlink message: ${payload.length}-byte payload, header needs ${size}`);
  }
  const view = viewOf(payload);
  const out: Record<string, number> = {};
  let at = 0;
  for (const [name, size] of layout) {
    if (name !== "") {
      out[name] = size === 1
        ? view.getUint8(at)
        : size === 2
        ? view.getUint16(at, LITTLE_ENDIAN)
        : view.getUint32(at, LITTLE_ENDIAN);
    }
    at += size;
  }
  return out as StructOf<L>;
}

// ---- Reading ----

/** One received message; `payload` views the receive buffer, so copy what must outlive the callback. */
export interface Message {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  payload: Uint8Array;
}

/** Splits a datagram into messages. @throws {RangeError} on a length below the header or past the end. */
export function splitMessages(datagram: Uint8Array): Message[] {
  const view = viewOf(datagram);
  const messages: Message[] = [];
  let at = 0;
  while (at < datagram.length) {
    const remaining = datagram.length - at;
    if (remaining < NLMSG_HDRLEN) {
      throw new RangeError(`Malformed netlink message: ${remaining} leftover bytes`);
    }
    const length = view.getUint32(at, LITTLE_ENDIAN);
    if (length < NLMSG_HDRLEN || length > remaining) {
      throw new RangeError(`Malformed netlink message: length ${length} with ${remaining} bytes left`);
    }
    messages.push({
      type: view.getUint16(at + 4, LITTLE_ENDIAN),
      flags: view.getUint16(at + 6, LITTLE_ENDIAN),
      seq: view.getUint32(at + 8, LITTLE_ENDIAN),
      pid: view.getUint32(at + 12, LITTLE_ENDIAN),
      payload: datagram.subarray(at + NLMSG_HDRLEN, at + length),
    });
    at += align4(length);
  }
  return messages;
}

/** Expected payload of an attribute: fixed-size integers, an address (4 or 16 bytes), or free-form. */
export type AttrKind = "u8" | "u16" | "u32" | "ip" | "string" | "nested" | "bytes";
/** Per-message table of the attributes read; others are skipped (newer kernels add attributes). */
export type AttrSchema = Readonly<Record<number, AttrKind>>;
/** Attribute payloads by type (flags masked off); the last of a repeated type wins, as in the kernel. */
export type Attrs = Map<number, Uint8Array>;

const FIXED_SIZES: Partial<Record<AttrKind, readonly number[]>> = {
  u8: [1],
  u16: [2],
  u32: [4],
  ip: [4, 16],
};

/**
 * Reads the attributes in `bytes` (from `offset`) that `schema` names.
 * @throws {RangeError} on a truncated or oversized attribute, a size that does not fit its kind,
 * or leftover bytes too short to be an attribute.
 */
export function readAttrs(bytes: Uint8Array, schema: AttrSchema, offset = 0): Attrs {
  const view = viewOf(bytes);
  const attrs: Attrs = new Map();
  let at = offset;
  while (at < bytes.length) {
    const remaining = bytes.length - at;
    if (remaining < NLA_HDRLEN) {
      throw new RangeError(`Malformed netlink attribute: ${remaining} leftover bytes`);
    }
    const length = view.getUint16(at, LITTLE_ENDIAN);
    const type = view.getUint16(at + 2, LITTLE_ENDIAN) & NLA_TYPE_MASK;
    if (length < NLA_HDRLEN || length > remaining) {
      throw new RangeError(
        `Malformed netlink attribute ${type}: length ${length} with ${remaining} bytes left`,
      );
    }
    const kind = schema[type];
    if (kind !== undefined) {
      const size = length - NLA_HDRLEN;
      const sizes = FIXED_SIZES[kind];
      if (sizes && !sizes.includes(size)) {
        throw new RangeError(
          `Malformed netlink attribute ${type}: ${size} bytes, expected ${sizes.join(" or ")}`,
        );
      }
      attrs.set(type, bytes.subarray(at + NLA_HDRLEN, at + length));
    }
    at += align4(length);
  }
  return attrs;
}

export function attrU8(attrs: Attrs, type: number): number | undefined {
  return attrs.get(type)?.[0];
}

export function attrU16(attrs: Attrs, type: number): number | undefined {
  const b = attrs.get(type);
  return b && viewOf(b).getUint16(0, LITTLE_ENDIAN);
}

export function attrU32(attrs: Attrs, type: number): number | undefined {
  const b = attrs.get(type);
  return b && viewOf(b).getUint32(0, LITTLE_ENDIAN);
}

const decoder = new TextDecoder();

/** A string attribute, up to its NUL terminator. */
export function attrString(attrs: Attrs, type: number): string | undefined {
  const b = attrs.get(type);
  if (b === undefined) return undefined;
  const nul = b.indexOf(0);
  return decoder.decode(nul < 0 ? b : b.subarray(0, nul));
}

/** The outcome carried by an NLMSG_ERROR (0 = ACK) or NLMSG_DONE message, with the kernel's extack text. */
export interface Status {
  errno: number;
  extack?: string;
}

const EXTACK_SCHEMA: AttrSchema = { [NLMSGERR_ATTR_MSG]: "string" };

/**
 * Reads the status of an NLMSG_ERROR or NLMSG_DONE message. An error echoes the request (only its
 * header with NETLINK_CAP_ACK); extack attributes follow when NLM_F_ACK_TLVS is set.
 * @throws {RangeError} when the payload is malformed.
 */
export function readStatus(message: Message): Status {
  const { payload } = message;
  if (payload.length < 4) {
    if (message.type === NLMSG_ERROR) throw new RangeError("Malformed netlink error: payload too short");
    return { errno: 0 }; // an old-style NLMSG_DONE without its int
  }
  const view = viewOf(payload);
  const errno = -view.getInt32(0, LITTLE_ENDIAN) || 0; // never -0
  if (!(message.flags & NLM_F_ACK_TLVS)) return { errno };
  let tlvs = 4;
  if (message.type === NLMSG_ERROR) {
    if (payload.length < 4 + NLMSG_HDRLEN) throw new RangeError("Malformed netlink error: no request header");
    tlvs += message.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(view.getUint32(4, LITTLE_ENDIAN));
  }
  const extack = attrString(
    readAttrs(payload, EXTACK_SCHEMA, Math.min(tlvs, payload.length)),
    NLMSGERR_ATTR_MSG,
  );
  return extack ? { errno, extack } : { errno };
}
