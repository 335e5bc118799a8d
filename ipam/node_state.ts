// What one node knows: the blocks it owns and the attachments holding addresses in them, and how a
// read from etcd brings that knowledge in line (a block gone or taken is dropped, found addresses taken).

import { allocationFromRecord, type AttachmentEntry, attachmentKey, withAddress } from "./allocation.ts";
import { markUsed } from "./block_allocator.ts";
import { formatCidr, formatIp, offsetOf } from "./cidr.ts";
import type { BlockState, StoredAddress } from "./etcd_values.ts";
import { blockId } from "./keys.ts";
import { addOwnedBlock, newOwnedBlock, type OwnedBlockState, type OwnedBlockTable } from "./owned_blocks.ts";

export interface NodeState {
  readonly node: string;
  readonly blocks: OwnedBlockTable;
  /** By attachmentKey(). */
  readonly attachments: Map<string, AttachmentEntry>;
  /** Whether an allocate or release of this attachment is in flight: its own txn result records it. */
  readonly busy: (attachmentKey: string) => boolean;
  readonly log: (event: Record<string, unknown>) => void;
  readonly listeners: (() => void)[];
  /** Txns re-run so far (lost block claims, address writes re-run after a failed compare). */
  retries: number;
}

export function newNodeState(
  node: string,
  log: (event: Record<string, unknown>) => void,
  busy: (attachmentKey: string) => boolean,
): NodeState {
  return { node, blocks: new Map(), attachments: new Map(), busy, log, listeners: [], retries: 0 };
}

/**
 * Applies a fresh read of one block: gone or someone else's → dropped from the owned blocks; still
 * ours → its revision updated and its addresses absorbed. With `adopt`, a block of ours that memory
 * lacks is added (loading at start).
 */
export function applyBlockState(state: NodeState, read: BlockState, adopt = false): void {
  let block = state.blocks.get(blockId(read.cidr));
  const owner = read.block?.record.node;
  if (!read.block || owner !== state.node) {
    if (block) dropBlock(state, block, "block lost", { owner });
    return;
  }
  if (block) {
    block.revision = read.block.revision;
  } else if (adopt) {
    block = newOwnedBlock(read.block.pool, read.cidr, read.block.revision);
    addOwnedBlock(state.blocks, block);
  }
  absorbAddresses(state, read.addresses);
}

/** Adds a block just claimed, with the addresses already in it, and tells the listeners. */
export function addClaimedBlock(
  state: NodeState,
  claimed: { pool: string; cidr: OwnedBlockState["cidr"]; revision: string; addresses: StoredAddress[] },
): OwnedBlockState {
  const block = newOwnedBlock(claimed.pool, claimed.cidr, claimed.revision);
  addOwnedBlock(state.blocks, block);
  absorbAddresses(state, claimed.addresses);
  state.log({ event: "block claimed", pool: block.pool, block: formatCidr(block.cidr), node: state.node });
  notifyBlocksChanged(state);
  return block;
}

/**
 * Records addresses found in etcd: their offsets become used in owned blocks, and their attachments
 * known (so that gc() can free those of containers that are gone).
 */
export function absorbAddresses(state: NodeState, addresses: StoredAddress[]): void {
  for (const found of addresses) {
    const { ip, record } = found;
    if (!ip || !record) state.log({ event: "bad address key", key: found.key, problem: found.problem });
    if (!ip) continue;
    const key = record && attachmentKey(record.network, record.containerId, record.ifName);
    // A busy attachment's own txn result decides: a read taken before its release committed must not
    // mark the address used again after the release freed it.
    if (key && state.busy(key)) continue;
    const block = state.blocks.get(blockId(found.block));
    if (block) markUsed(block.allocator, Number(offsetOf(block.cidr, ip)));
    if (!record || !key) continue;
    const address = { family: ip.family, address: ip, block: found.block };
    const stored = { key: found.key, revision: found.revision };
    const entry = state.attachments.get(key);
    if (!entry) {
      state.attachments.set(key, { allocation: allocationFromRecord(record, address), stored: [stored] });
    } else if (entry.stored.some((s) => s.key === found.key)) {
      continue;
    } else if (entry.allocation.addresses.some((a) => a.family === ip.family)) {
      state.log({ event: "second address for one attachment", key: found.key, address: formatIp(ip) });
    } else {
      entry.allocation = withAddress(entry.allocation, address);
      entry.stored.push(stored);
    }
  }
}

/** Forgets a block (released, or lost to another party) and tells the listeners. */
export function dropBlock(
  state: NodeState,
  block: OwnedBlockState,
  event: string,
  extra: Record<string, unknown> = {},
): void {
  const id = blockId(block.cidr);
  if (state.blocks.get(id) !== block) return;
  state.blocks.delete(id);
  state.log({ event, pool: block.pool, block: formatCidr(block.cidr), node: state.node, ...extra });
  notifyBlocksChanged(state);
}

export function notifyBlocksChanged(state: NodeState): void {
  for (const listener of state.listeners) {
    try {
      listener();
    } catch (err) {
      state.log({ event: "blocks listener failed", error: String(err) });
    }
  }
}
