// Address pools: a name, subnets of one or both families, and a block size. Validated once, here,
// whether the definition comes from the CLI or from etcd.

import { type Cidr, type Family, familyBits, formatCidr, overlaps, parseCidr, tryParseCidr } from "./cidr.ts";
import { IpamError } from "./errors.ts";

/** The pool serving every namespace that has no pool of its own. */
export const DEFAULT_POOL = "default";

/** Default block size: 2^5 addresses, a /27 (IPv4, 30 of them for pods) or /123 (IPv6, 31 for pods). */
export const DEFAULT_BLOCK_SIZE_BITS = 5;

/**
 * Smallest block: 2^1 addresses. A block's first address is never handed out (it is the gateway that
 * IPAM-mode answers name), nor is an IPv4 block's last (the pods' broadcast address) from 2^2 on (see
 * reservedOffsets in block_allocator.ts): a block of one address could serve no pod, a block of 2^n
 * serves 2^n - 1 IPv6 pods and 2^n - 2 IPv4 pods (one in a /31).
 */
export const MIN_BLOCK_SIZE_BITS = 1;

/**
 * Largest block: 2^16 addresses. A block is what one node hands out and tracks in memory, and no node
 * runs 65536 pods; a larger value is nearly always a prefix length typed as bits (27 for 5). Coil v1
 * allowed 24 (IPv4) and 120 (IPv6), which only made such typos succeed.
 */
export const MAX_BLOCK_SIZE_BITS = 16;

/**
 * Shortest subnet prefix per family. A shorter one (`10.0.0.0/1`, `fd00::/8`) is nearly always a
 * typo, and a cluster never needs more than a /8 of IPv4 or a /32 (a whole LIR allocation) of IPv6.
 */
export const MIN_SUBNET_PREFIX: Readonly<Record<Family, number>> = { 4: 8, 6: 32 };

/**
 * Ranges no pool may touch: they are not unicast-routable, or they are Coil's own link-local gateway
 * range (169.254.1.1 and the host veth's fe80:: address, see DESIGN.md §3).
 */
const RESERVED: readonly { cidr: Cidr; what: string }[] = [
  ["0.0.0.0/8", '"this network" (RFC 791)'],
  ["127.0.0.0/8", "loopback"],
  ["169.254.0.0/16", "link-local, where the pod gateway 169.254.1.1 lives"],
  ["224.0.0.0/4", "multicast"],
  ["240.0.0.0/4", "reserved (RFC 1112) and broadcast"],
  ["::/8", "reserved (unspecified, loopback, IPv4-mapped)"],
  ["fe80::/10", "link-local, where the pod gateway lives"],
  ["ff00::/8", "multicast"],
].map(([text, what]) => ({ cidr: parseCidr(text), what }));

export interface Pool {
  name: string;
  subnets: Cidr[];
  /** log2 of the number of addresses per block. */
  blockSizeBits: number;
}

/** Prefix length of this pool's blocks in the given family. */
export function blockPrefix(pool: Pool, family: Family): number {
  return familyBits(family) - pool.blockSizeBits;
}

// A Kubernetes namespace name is an RFC 1123 DNS label; pools bind to namespaces by that name.
const POOL_NAME_REGEXP = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const POOL_FIELDS = new Set(["subnets", "blockSizeBits"]);

/**
 * Checks that `name` can name a pool: a DNS label (lower-case letters, digits and `-`, at most 63
 * characters), as Kubernetes namespace names are.
 * @throws {IpamError} kind "invalid", quoting the name.
 */
export function validatePoolName(name: string): void {
  if (typeof name !== "string" || name.length > 63 || !POOL_NAME_REGEXP.test(name)) {
    throw new IpamError(
      "invalid",
      `Invalid pool name ${JSON.stringify(name)}: a pool is named after a Kubernetes namespace, so it ` +
        `must be 1 to 63 lower-case letters, digits or "-", starting and ending with a letter or digit`,
    );
  }
}

/**
 * Validates a pool definition `{"subnets": [CIDR, …], "blockSizeBits": N}` (`blockSizeBits` optional,
 * default 5), given as a parsed object or as JSON text (an etcd value). Subnets are returned in the
 * order given, normalised (so `FD00::/48` becomes `fd00::/48`). Rules: the name is a DNS label; at
 * least one subnet; each a CIDR without host bits, no shorter than MIN_SUBNET_PREFIX, outside the
 * reserved ranges, overlapping no other subnet of the pool and holding at least one block;
 * blockSizeBits an integer from MIN_BLOCK_SIZE_BITS to MAX_BLOCK_SIZE_BITS; no other fields.
 * @throws {IpamError} kind "invalid", naming the pool, the rule and the offending value.
 */
export function parsePool(name: string, raw: unknown): Pool {
  validatePoolName(name);
  const fail = (problem: string) => new IpamError("invalid", `Invalid pool "${name}": ${problem}`);
  if (typeof raw === "string") {
    try {
      raw = JSON.parse(raw);
    } catch (err) {
      throw fail(`not JSON: ${(err as Error).message}`);
    }
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw fail(`the definition must be a JSON object, not ${describe(raw)}`);
  }
  const fields = raw as Record<string, unknown>;
  for (const field of Object.keys(fields)) {
    if (!POOL_FIELDS.has(field)) {
      throw fail(`unknown field ${JSON.stringify(field)} (expected "subnets" and "blockSizeBits")`);
    }
  }
  const blockSizeBits = fields.blockSizeBits === undefined
    ? DEFAULT_BLOCK_SIZE_BITS
    : parseBlockSizeBits(fields.blockSizeBits, fail);
  const texts = fields.subnets;
  if (!Array.isArray(texts) || texts.length === 0) {
    throw fail(`"subnets" must be a non-empty list of CIDRs, not ${describe(texts)}`);
  }
  const subnets: Cidr[] = [];
  for (const text of texts) {
    const subnet = parseSubnet(text, blockSizeBits, fail);
    const clash = subnets.find((other) => overlaps(other, subnet));
    if (clash) {
      throw fail(
        formatCidr(clash) === formatCidr(subnet)
          ? `subnet ${formatCidr(subnet)} is listed twice`
          : `subnet ${formatCidr(subnet)} overlaps ${formatCidr(clash)}`,
      );
    }
    subnets.push(subnet);
  }
  return { name, subnets, blockSizeBits };
}

function parseBlockSizeBits(value: unknown, fail: (problem: string) => IpamError): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw fail(
      `blockSizeBits must be an integer from ${MIN_BLOCK_SIZE_BITS} to ${MAX_BLOCK_SIZE_BITS}, not ${
        describe(value)
      }`,
    );
  }
  if (value < MIN_BLOCK_SIZE_BITS) {
    throw fail(
      `blockSizeBits ${value} is too small: at least ${MIN_BLOCK_SIZE_BITS} (2 addresses per block), ` +
        `since each block's first address is reserved as the pods' gateway`,
    );
  }
  if (value > MAX_BLOCK_SIZE_BITS) {
    throw fail(
      `blockSizeBits ${value} is too large: at most ${MAX_BLOCK_SIZE_BITS} (65536 addresses per block); ` +
        `it is log2 of the addresses per block, not a prefix length`,
    );
  }
  return value;
}

function parseSubnet(text: unknown, blockSizeBits: number, fail: (problem: string) => IpamError): Cidr {
  if (typeof text !== "string") throw fail(`a subnet must be a CIDR string, not ${describe(text)}`);
  const subnet = tryParseCidr(text, { strict: true });
  if (subnet === undefined) {
    const loose = tryParseCidr(text, { strict: false });
    throw fail(
      loose
        ? `subnet "${text}" has host bits set, did you mean "${formatCidr(loose)}"?`
        : `subnet "${text}" is not a CIDR such as 10.1.0.0/16 or fd00::/48`,
    );
  }
  const shown = formatCidr(subnet);
  const family = subnet.family;
  if (subnet.prefix < MIN_SUBNET_PREFIX[family]) {
    throw fail(
      `subnet ${shown} is too large: IPv${family} subnets must be /${MIN_SUBNET_PREFIX[family]} or longer`,
    );
  }
  const reserved = RESERVED.find((r) => overlaps(r.cidr, subnet));
  if (reserved) {
    throw fail(`subnet ${shown} overlaps ${formatCidr(reserved.cidr)}, which is ${reserved.what}`);
  }
  const hostBits = familyBits(family) - subnet.prefix;
  if (blockSizeBits > hostBits) {
    throw fail(
      `subnet ${shown} is smaller than one block of 2^${blockSizeBits} addresses ` +
        `(/${familyBits(family) - blockSizeBits})`,
    );
  }
  return subnet;
}

function describe(value: unknown): string {
  if (value === undefined) return "missing";
  if (Array.isArray(value)) return value.length === 0 ? "an empty list" : "a list";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

/** The etcd value of a pool: `{"subnets":[…],"blockSizeBits":N}` (the name is in the key). */
export function poolToJson(pool: Pool): string {
  return JSON.stringify({ subnets: pool.subnets.map(formatCidr), blockSizeBits: pool.blockSizeBits });
}

/** A subnet of one pool that shares addresses with a subnet of another. */
export interface PoolOverlap {
  subnet: Cidr;
  pool: string;
  other: Cidr;
}

/** The first subnet of `pool` that overlaps a subnet of one of `others` (pools of its own name are skipped). */
export function findOverlap(pool: Pool, others: Iterable<Pool>): PoolOverlap | undefined {
  for (const other of others) {
    if (other.name === pool.name) continue;
    for (const subnet of pool.subnets) {
      const clash = other.subnets.find((s) => overlaps(s, subnet));
      if (clash) return { subnet, pool: other.name, other: clash };
    }
  }
  return undefined;
}

/**
 * The pool with one more subnet, validated again (block size unchanged).
 * @throws {IpamError} kind "conflict" when the subnet overlaps one of the pool's, "invalid" when it
 * breaks another rule of parsePool.
 */
export function poolWithSubnet(pool: Pool, subnetText: string): Pool {
  const parsed = parsePool(pool.name, { subnets: [subnetText], blockSizeBits: pool.blockSizeBits });
  const subnet = parsed.subnets[0];
  const clash = pool.subnets.find((s) => overlaps(s, subnet));
  if (clash) {
    throw new IpamError(
      "conflict",
      `Cannot add subnet ${formatCidr(subnet)} to pool "${pool.name}": it overlaps ${
        formatCidr(clash)
      } of that pool`,
    );
  }
  return { ...pool, subnets: [...pool.subnets, subnet] };
}
