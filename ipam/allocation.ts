// What NodeIpam hands out: the addresses of one attachment (network, container, interface) and the
// pod they belong to, plus the conversions to and from the address records kept in etcd.

import type { Cidr, Family, IpAddress } from "./cidr.ts";
import type { AddressRecord } from "./records.ts";

/** Who asks for addresses: one interface of one container in one CNI network. */
export interface AllocationRequest {
  network: string;
  containerId: string;
  ifName: string;
  podNamespace: string;
  podName: string;
  podUid: string;
  netns: string;
}

export interface AllocatedAddress {
  family: Family;
  address: IpAddress;
  /** The owned block the address comes from. */
  block: Cidr;
}

export interface Allocation extends AllocationRequest {
  pool: string;
  node: string;
  /** RFC 3339. */
  createdAt: string;
  /** One per family of the pool, IPv4 first. */
  addresses: AllocatedAddress[];
}

/** A block this node owns. */
export interface OwnedBlock {
  pool: string;
  block: Cidr;
}

/** An allocation and the etcd keys that hold it, with the ModRevision a release must compare. */
export interface AttachmentEntry {
  allocation: Allocation;
  stored: { key: string; revision: string }[];
}

/** The identity of an attachment, as a map key. */
export function attachmentKey(network: string, containerId: string, ifName: string): string {
  return JSON.stringify([network, containerId, ifName]);
}

/** The etcd value for an address of `allocation`. */
export function addressRecordOf(allocation: Omit<Allocation, "addresses">): AddressRecord {
  const { network, containerId, ifName, podNamespace, podName, podUid, netns, node, pool, createdAt } =
    allocation;
  return { network, containerId, ifName, podNamespace, podName, podUid, netns, node, pool, createdAt };
}

/** An allocation holding only the address read back from etcd with this record. */
export function allocationFromRecord(record: AddressRecord, address: AllocatedAddress): Allocation {
  return { ...addressRecordOf(record), addresses: [address] };
}

/** Adds an address in family order (IPv4 first). */
export function withAddress(allocation: Allocation, address: AllocatedAddress): Allocation {
  const addresses = [...allocation.addresses, address].sort((a, b) => a.family - b.family);
  return { ...allocation, addresses };
}
