// Addresses between the string API ("10.0.0.1", "fe80::1", "10.0.0.0/24") and the network-order bytes
// netlink carries, without BigInt: the only text netlink/ reads or writes, so it needs nothing of ipam/.

export type Family = 4 | 6;

/** An address or a prefix as netlink carries it: 4 or 16 network-order bytes. */
export interface IpBytes {
  family: Family;
  bytes: Uint8Array;
}

export interface PrefixBytes extends IpBytes {
  /** Prefix length in bits. */
  length: number;
}

// Decimal octet without leading zeros: rejects "01", "0x1", "1e2", " 1", which Number() accepts.
const OCTET = /^(0|[1-9][0-9]{0,2})$/;
const HEXTET = /^[0-9a-fA-F]{1,4}$/;
const LENGTH = /^(0|[1-9][0-9]{0,2})$/;

/** Parses a dotted IPv4 address into `out` at `at`; false when it is not one. */
function putIpv4(text: string, out: Uint8Array, at: number): boolean {
  const parts = text.split(".");
  if (parts.length !== 4) return false;
  for (const [i, part] of parts.entries()) {
    if (!OCTET.test(part)) return false;
    const octet = Number(part);
    if (octet > 255) return false;
    out[at + i] = octet;
  }
  return true;
}

/**
 * Parses colon-separated groups into 16-bit values; only the group that ends the whole address may be
 * dotted IPv4 (RFC 4291 §2.2). Undefined when a group is malformed.
 */
function hextets(text: string, endsAddress: boolean): number[] | undefined {
  if (text === "") return [];
  const out: number[] = [];
  const parts = text.split(":");
  for (const [i, part] of parts.entries()) {
    if (endsAddress && i === parts.length - 1 && part.includes(".")) {
      const v4 = new Uint8Array(4);
      if (!putIpv4(part, v4, 0)) return undefined;
      out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    } else if (HEXTET.test(part)) {
      out.push(parseInt(part, 16));
    } else {
      return undefined;
    }
  }
  return out;
}

function ipv6Bytes(text: string): Uint8Array | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = hextets(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? hextets(halves[1], true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const groups = [...head, ...Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 255;
  });
  return bytes;
}

function tryParseIp(text: string): IpBytes | undefined {
  if (text.includes(":")) {
    const bytes = ipv6Bytes(text);
    return bytes && { family: 6, bytes };
  }
  const bytes = new Uint8Array(4);
  return putIpv4(text, bytes, 0) ? { family: 4, bytes } : undefined;
}

/** Parses an IPv4 or IPv6 address. @throws {TypeError} naming the input. */
export function parseIp(text: string): IpBytes {
  const ip = typeof text === "string" ? tryParseIp(text) : undefined;
  if (ip === undefined) throw new TypeError(`Invalid IP address: "${text}"`);
  return ip;
}

/** Clears the bits after `length`; whether any was set. */
function clearHostBits(bytes: Uint8Array, length: number): boolean {
  let hadHostBits = false;
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, length - 8 * i));
    const mask = (0xff << (8 - keep)) & 0xff;
    if (bytes[i] & ~mask) hadHostBits = true;
    bytes[i] &= mask;
  }
  return hadHostBits;
}

/**
 * Parses `address/length` into its network; host bits must be zero, so `10.0.0.1/24` is refused rather
 * than read as `10.0.0.0/24`. @throws {TypeError} naming the input.
 */
export function parsePrefix(text: string): PrefixBytes {
  const slash = typeof text === "string" ? text.indexOf("/") : -1;
  const ip = slash < 0 ? undefined : tryParseIp(text.slice(0, slash));
  const lengthText = slash < 0 ? "" : text.slice(slash + 1);
  const length = Number(lengthText);
  if (ip === undefined || !LENGTH.test(lengthText) || length > ip.bytes.length * 8) {
    throw new TypeError(`Invalid CIDR: "${text}"`);
  }
  if (clearHostBits(ip.bytes, length)) {
    const network = formatPrefix(ip.bytes, length);
    throw new TypeError(`Invalid CIDR "${text}": host bits set, did you mean "${network}"?`);
  }
  return { ...ip, length };
}

/** Formats 4 bytes as dotted IPv4, 16 as RFC 5952 IPv6 (lower case, longest zero run as `::`). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  if (bytes.length !== 16) throw new RangeError(`An IP address has 4 or 16 bytes, not ${bytes.length}`);
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i] << 8) | bytes[2 * i + 1]);
  let bestStart = -1, bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

/** Formats a prefix as `network/length`. */
export function formatPrefix(bytes: Uint8Array, length: number): string {
  return `${formatIp(bytes)}/${length}`;
}
