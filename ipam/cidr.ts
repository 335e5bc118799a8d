// IPv4 and IPv6 addresses and prefixes as BigInt values, so both families share one code path and
// no offset is ever cut to 32 or 53 bits (the Whereabouts and v1 Coil bugs came from fixed widths).

/** Address family: 4 or 6. */
export type Family = 4 | 6;

/** One IP address: its family and its value as an unsigned integer. */
export interface IpAddress {
  family: Family;
  value: bigint;
}

/** A prefix: `base` is the network address (host bits zero), `prefix` its length. */
export interface Cidr {
  family: Family;
  base: bigint;
  prefix: number;
}

/** Number of bits in an address of this family. */
export function familyBits(family: Family): 32 | 128 {
  return family === 4 ? 32 : 128;
}

// Decimal octet without leading zeros: rejects "01", "0x1", "1e2", " 1", which Number() accepts.
const OCTET_REGEXP = /^(0|[1-9][0-9]{0,2})$/;
const HEXTET_REGEXP = /^[0-9a-fA-F]{1,4}$/;

// IPv4 paths use plain numbers (32 bits fit) and make one BigInt at the edge: route sync converts
// tens of thousands of addresses, and BigInt arithmetic per octet was a visible part of its CPU.
function parseIpv4(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!OCTET_REGEXP.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return BigInt(value);
}

// `endsAddress`: only the group that ends the whole address may be dotted IPv4 (RFC 4291 §2.2), so
// "1.2.3.4::" is refused even though "1.2.3.4" ends the part before the "::".
function parseHextets(text: string, endsAddress: boolean): bigint[] | undefined {
  if (text === "") return [];
  const hextets: bigint[] = [];
  const parts = text.split(":");
  for (const [i, part] of parts.entries()) {
    if (endsAddress && i === parts.length - 1 && part.includes(".")) {
      const v4 = parseIpv4(part);
      if (v4 === undefined) return undefined;
      hextets.push(v4 >> 16n, v4 & 0xffffn);
    } else if (HEXTET_REGEXP.test(part)) {
      hextets.push(BigInt(parseInt(part, 16)));
    } else {
      return undefined;
    }
  }
  return hextets;
}

function parseIpv6(text: string): bigint | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = parseHextets(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? parseHextets(halves[1], true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...Array<bigint>(halves.length === 2 ? missing : 0).fill(0n), ...tail];
  return all.reduce((acc, h) => (acc << 16n) | h, 0n);
}

/** Parses an address, or returns undefined. Strict: decimal IPv4 octets only; IPv6 may embed IPv4. */
export function tryParseIp(text: string): IpAddress | undefined {
  if (typeof text !== "string") return undefined;
  if (text.includes(":")) {
    const value = parseIpv6(text);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseIpv4(text);
  return value === undefined ? undefined : { family: 4, value };
}

/**
 * Parses an IPv4 or IPv6 address.
 * @throws {TypeError} naming the input when it is not an address.
 */
export function parseIp(text: string): IpAddress {
  const ip = tryParseIp(text);
  if (ip === undefined) throw new TypeError(`Invalid IP address: "${text}"`);
  return ip;
}

const PREFIX_REGEXP = /^(0|[1-9][0-9]{0,2})$/;

/** Parses `address/prefix`, or returns undefined. With `strict`, host bits must be zero. */
export function tryParseCidr(text: string, options: { strict?: boolean } = {}): Cidr | undefined {
  if (typeof text !== "string") return undefined;
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const ip = tryParseIp(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (ip === undefined || !PREFIX_REGEXP.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > familyBits(ip.family)) return undefined;
  const base = ip.value & prefixMask(ip.family, prefix);
  if (options.strict && base !== ip.value) return undefined;
  return { family: ip.family, base, prefix };
}

/**
 * Parses `address/prefix` into its network. With `strict` (the default), host bits must be zero,
 * so `10.0.0.1/24` is refused rather than silently read as `10.0.0.0/24`.
 * @throws {TypeError} naming the input.
 */
export function parseCidr(text: string, options: { strict?: boolean } = {}): Cidr {
  const cidr = tryParseCidr(text, { strict: options.strict ?? true });
  if (cidr !== undefined) return cidr;
  const loose = tryParseCidr(text, { strict: false });
  if (loose !== undefined) {
    throw new TypeError(`Invalid CIDR "${text}": host bits set, did you mean "${formatCidr(loose)}"?`);
  }
  throw new TypeError(`Invalid CIDR: "${text}"`);
}

function prefixMask(family: Family, prefix: number): bigint {
  const bits = BigInt(familyBits(family));
  const all = (1n << bits) - 1n;
  return all ^ ((1n << (bits - BigInt(prefix))) - 1n);
}

/** Formats an address: dotted IPv4, or RFC 5952 IPv6 (lower case, longest zero run as `::`). */
export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) {
    const n = Number(ip.value);
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  }
  const hextets = Array.from({ length: 8 }, (_, i) => Number((ip.value >> BigInt(112 - 16 * i)) & 0xffffn));
  let bestStart = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (hextets[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && hextets[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = hextets.map((h) => h.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** Formats a prefix as `network/length`. */
export function formatCidr(cidr: Cidr): string {
  return `${formatIp({ family: cidr.family, value: cidr.base })}/${cidr.prefix}`;
}

/** Number of addresses in the prefix. */
export function cidrSize(cidr: Cidr): bigint {
  return 1n << BigInt(familyBits(cidr.family) - cidr.prefix);
}

/** Whether the address lies inside the prefix. */
export function contains(cidr: Cidr, ip: IpAddress): boolean {
  return cidr.family === ip.family && ip.value >= cidr.base && ip.value < cidr.base + cidrSize(cidr);
}

/** Whether two prefixes share any address. */
export function overlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  return a.base < b.base + cidrSize(b) && b.base < a.base + cidrSize(a);
}

/** The address at offset `n` from the start of the prefix. @throws {RangeError} outside it. */
export function nthAddress(cidr: Cidr, n: bigint): IpAddress {
  if (n < 0n || n >= cidrSize(cidr)) {
    throw new RangeError(`Offset ${n} outside ${formatCidr(cidr)}`);
  }
  return { family: cidr.family, value: cidr.base + n };
}

/** The offset of an address inside the prefix. @throws {RangeError} when it is outside. */
export function offsetOf(cidr: Cidr, ip: IpAddress): bigint {
  if (!contains(cidr, ip)) throw new RangeError(`${formatIp(ip)} outside ${formatCidr(cidr)}`);
  return ip.value - cidr.base;
}

/** How many blocks of length `blockPrefix` the subnet holds (0 when the blocks are larger). */
export function blockCount(subnet: Cidr, blockPrefix: number): bigint {
  if (blockPrefix < subnet.prefix) return 0n;
  return 1n << BigInt(blockPrefix - subnet.prefix);
}

/** The `index`-th block of length `blockPrefix` inside the subnet. @throws {RangeError} outside it. */
export function blockAt(subnet: Cidr, blockPrefix: number, index: bigint): Cidr {
  if (index < 0n || index >= blockCount(subnet, blockPrefix)) {
    throw new RangeError(`Block ${index} outside ${formatCidr(subnet)}`);
  }
  const size = 1n << BigInt(familyBits(subnet.family) - blockPrefix);
  return { family: subnet.family, base: subnet.base + index * size, prefix: blockPrefix };
}

/** The block of length `blockPrefix` that holds the address. */
export function blockOf(ip: IpAddress, blockPrefix: number): Cidr {
  return { family: ip.family, base: ip.value & prefixMask(ip.family, blockPrefix), prefix: blockPrefix };
}

/** The address as network-order bytes (4 or 16), e.g. for netlink attributes. */
export function ipToBytes(ip: IpAddress): Uint8Array {
  if (ip.family === 4) {
    const n = Number(ip.value);
    return new Uint8Array([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
  }
  const bytes = new Uint8Array(16);
  let v = ip.value;
  for (let i = 15; i >= 0; i--) {
    bytes[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return bytes;
}

/** Reads network-order bytes (4 or 16) as an address. @throws {RangeError} for other lengths. */
export function ipFromBytes(bytes: Uint8Array): IpAddress {
  if (bytes.length !== 4 && bytes.length !== 16) {
    throw new RangeError(`An IP address has 4 or 16 bytes, not ${bytes.length}`);
  }
  if (bytes.length === 4) {
    return {
      family: 4,
      value: BigInt(((bytes[0] << 24) >>> 0) + (bytes[1] << 16) + (bytes[2] << 8) + bytes[3]),
    };
  }
  const value = bytes.reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
  return { family: 6, value };
}
