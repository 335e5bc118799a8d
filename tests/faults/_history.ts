// The history of a campaign: every CNI call as the runtime-like client made it (attachment, verb, start,
// end, result), etcd samples taken meanwhile, and a checker over the whole of it: no address held by two
// attachments at once, each held address kept in etcd until its DEL, nothing left at the end.
//
// When an attachment holds an address. The runtime knows only when its calls started and ended, so
// each holding has a part that is certain and a part that is merely possible:
// - possible: from the start of the ADD that returned the address until the end of the first DEL of the
//   attachment that succeeded after it (or a successful GC that did not list it); open when there is
//   none (a vanished netns is released by a later sweep, which the client does not see);
// - certain: from the end of that ADD until the start of the first later call that may release it: any
//   DEL that reached coild, whatever it answered (a DEL that coild applied and then died before answering
//   reads as 11), a GC of the network that does not list it, or its netns vanishing. A DEL that never
//   reached coild (socket missing, connection refused) releases nothing. A failed ADD releases nothing
//   (a failed call must not undo an earlier success) and starts no holding: an ADD whose outcome is
//   unknown may have taken an address, and its owed DEL gives it back.
// Violations are what the protocol rules out whatever the interleaving inside the calls:
// (a) the certain parts of two attachments' holdings of one address overlap; overlaps of possible parts
//     only (a DEL in flight whose address a concurrent ADD already got) are counted, not failed;
// (b) an etcd sample, read wholly inside a certain holding, lacks the address key or shows it held by
//     another attachment;
// (c) the final state (after the last DELs and a sweep) holds an address key or a tagged host veth.

/** An attachment as CNI names it (network, container ID, interface). */
export interface Attachment {
  network: string;
  containerId: string;
  ifName: string;
}

export type Verb = "ADD" | "DEL" | "CHECK" | "GC" | "VANISH";

/**
 * How a call ended. `refused`: it never reached coild (socket missing or connection refused), so it
 * changed nothing; `error`: coild (or the plugin) answered with a CNI error; `unknown`: no answer (coild
 * died mid-call, the client timed out, or the output was not the protocol).
 */
export type CallResult =
  | { status: "ok"; addresses: string[] }
  | { status: "refused" | "error" | "unknown"; code: number; msg: string };

/** One recorded call; `start` and `end` are monotonic ms (performance.now()). */
export interface Call {
  id: number;
  verb: Verb;
  /** For GC: the network, with empty container ID and interface. */
  attachment: Attachment;
  start: number;
  end: number;
  result: CallResult;
  /** GC only: the attachments the runtime listed as valid. */
  valid?: Attachment[];
  /** Where the call went (node name), for reports. */
  node?: string;
}

/** One address key as read from etcd (see _ipam_state.ts). */
export interface SampledKey {
  ip: string;
  network: string;
  containerId: string;
  ifName: string;
}

/** A read of every address key, taken at one etcd revision somewhere between `start` and `end`. */
export interface Sample {
  id: number;
  start: number;
  end: number;
  keys: SampledKey[];
}

/** What is left once every pod was deleted and a sweep ran: must be nothing. */
export interface FinalState {
  keys: SampledKey[];
  /** Host veths tagged by coil (their alias), on every node. */
  veths: string[];
}

export interface Violation {
  rule: "a" | "b" | "c";
  /** Names the violation by the records involved: stable as the history grows, unlike the message. */
  key: string;
  message: string;
}

/** The checker's figures over one history. */
export interface HistoryReport {
  calls: number;
  addsOk: number;
  delsOk: number;
  /** Holdings (successful ADDs) checked. */
  holdings: number;
  samples: number;
  /** Address keys compared against certain holdings across all samples. */
  keysChecked: number;
  /** Overlaps of possible holdings only: allowed by the protocol, counted for the record. */
  possibleOverlaps: number;
  /** The first of those, its two ADDs and the release calls between them, for the record. */
  possibleOverlapExample?: string;
  violations: Violation[];
}

/** The calls of one campaign, appended as they end. Plain data; not shared across processes. */
export class History {
  readonly calls: Call[] = [];
  readonly samples: Sample[] = [];
  #final: FinalState | undefined;
  #next = 1;

  /** Monotonic ms, the clock of every record. */
  static now(): number {
    return performance.now();
  }

  /** Records a call that ran from `start` to now. */
  record(call: Omit<Call, "id" | "end"> & { end?: number }): Call {
    const full: Call = { ...call, id: this.#next++, end: call.end ?? History.now() };
    this.calls.push(full);
    return full;
  }

  /** Records that the attachment's netns was removed without a DEL (the sweep may then release it). */
  vanished(attachment: Attachment, node?: string): void {
    const at = History.now();
    this.record({ verb: "VANISH", attachment, start: at, end: at, result: okNothing(), node });
  }

  /** Records an etcd read of every address key made between `start` and now. */
  sample(start: number, keys: SampledKey[]): void {
    this.samples.push({ id: this.#next++, start, end: History.now(), keys });
  }

  /** Records the state after the final DELs and a sweep; checked by rule (c). */
  final(state: FinalState): void {
    this.#final = state;
  }

  get finalState(): FinalState | undefined {
    return this.#final;
  }
}

function okNothing(): CallResult {
  return { status: "ok", addresses: [] };
}

/** One address held by one attachment, from one successful ADD. */
interface Holding {
  ip: string;
  attachment: Attachment;
  add: Call;
  /** The first call after the ADD that may have released it, if any (ends the certain part). */
  releaseFrom?: Call;
  /** The first call after the ADD that surely released it (ends the possible part). */
  released?: Call;
}

/** The checker's verdict on `history`; never throws. */
export function checkHistory(history: History): HistoryReport {
  const holdings = holdingsOf(history.calls);
  const violations: Violation[] = [];
  let possibleOverlaps = 0;
  let possibleOverlapExample: string | undefined;

  const byIp = new Map<string, Holding[]>();
  for (const h of holdings) byIp.set(h.ip, [...(byIp.get(h.ip) ?? []), h]);
  for (const list of byIp.values()) {
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const [x, y] = [list[i], list[j]];
        if (sameAttachment(x.attachment, y.attachment)) continue;
        if (overlaps(certainOf(x), certainOf(y))) {
          violations.push({
            rule: "a",
            key: `a ${x.ip} #${x.add.id} #${y.add.id}`,
            message: `Address ${x.ip} held by two attachments at once:\n` +
              `  ${describeCall(x.add)}\n  ${describeCall(y.add)}\n` +
              `  release of the first: ${x.releaseFrom ? describeCall(x.releaseFrom) : "none"}\n` +
              `  release of the second: ${y.releaseFrom ? describeCall(y.releaseFrom) : "none"}`,
          });
        } else if (overlaps(possibleOf(x), possibleOf(y))) {
          possibleOverlaps++;
          possibleOverlapExample ??= `${x.ip}:\n  ${describeCall(x.add)}\n  ${describeCall(y.add)}\n` +
            `  release of the first: ${x.releaseFrom ? describeCall(x.releaseFrom) : "none"}` +
            (x.released && x.released !== x.releaseFrom ? `, then ${describeCall(x.released)}` : "");
        }
      }
    }
  }

  let keysChecked = 0;
  for (const sample of history.samples) {
    const keyByIp = new Map(sample.keys.map((k) => [k.ip, k]));
    for (const h of holdings) {
      const [from, to] = certainOf(h);
      if (!(from <= sample.start && sample.end <= to)) continue;
      keysChecked++;
      const key = keyByIp.get(h.ip);
      if (key && sameAttachment(key, h.attachment)) continue;
      const holder = key
        ? `held by ${describeAttachment(key)}` +
          lastAddOf(history.calls, key, sample.end).map((c) => ` (its last ADD: ${describeCall(c)})`).join("")
        : "missing";
      violations.push({
        rule: "b",
        key: `b ${h.ip} #${h.add.id} #${sample.id}`,
        message: `Address ${h.ip} of ${describeAttachment(h.attachment)} not in etcd while held:\n` +
          `  ${describeCall(h.add)}\n  ${describeSample(sample)}: its key is ${holder}`,
      });
    }
  }

  const final = history.finalState;
  if (final) {
    for (const key of final.keys) {
      const calls = history.calls.filter((c) => sameAttachment(c.attachment, key));
      violations.push({
        rule: "c",
        key: `c ${key.ip}`,
        message: `Address ${key.ip} left in etcd for ${describeAttachment(key)} after the final DELs:\n` +
          `  ${calls.slice(-2).map(describeCall).join("\n  ") || "no call of this attachment"}`,
      });
    }
    for (const veth of final.veths) {
      violations.push({
        rule: "c",
        key: `c ${veth}`,
        message: `Host veth tagged "${veth}" left after the final DELs`,
      });
    }
  }

  const count = (verb: Verb) =>
    history.calls.filter((c) => c.verb === verb && c.result.status === "ok").length;
  return {
    calls: history.calls.filter((c) => c.verb !== "VANISH").length,
    addsOk: count("ADD"),
    delsOk: count("DEL"),
    holdings: holdings.length,
    samples: history.samples.length,
    keysChecked,
    possibleOverlaps,
    possibleOverlapExample,
    violations,
  };
}

/**
 * checkHistory(), printing its figures as `<campaign> history: …`, then throwing on a violation.
 * @throws {Error} naming the first violation's calls and how many violations there are in all.
 */
export function assertHistory(history: History, campaign: string): HistoryReport {
  const report = checkHistory(history);
  console.log(`${campaign} ${formatReport(report)}`);
  if (report.possibleOverlapExample) {
    console.log(`${campaign} history: first overlap of possible holdings, ${report.possibleOverlapExample}`);
  }
  if (report.violations.length > 0) {
    const [first] = report.violations;
    throw new Error(
      `History check failed: ${report.violations.length} violations in ${report.calls} calls; ` +
        `the first (rule ${first.rule}):\n${first.message}`,
    );
  }
  return report;
}

/** The figures as one line, for the campaigns' output. */
export function formatReport(report: HistoryReport): string {
  return `history: ${report.calls} calls checked (${report.addsOk} ADD ok, ${report.delsOk} DEL ok), ` +
    `${report.holdings} holdings, ${report.samples} etcd samples (${report.keysChecked} keys checked), ` +
    `${report.possibleOverlaps} overlaps of possible holdings only, ${report.violations.length} violations`;
}

/** Every successful ADD's addresses with the calls that end their holding, in start order. */
function holdingsOf(calls: Call[]): Holding[] {
  const ordered = [...calls].sort((a, b) => a.start - b.start || a.id - b.id);
  const holdings: Holding[] = [];
  for (const add of ordered) {
    if (add.verb !== "ADD" || add.result.status !== "ok") continue;
    const later = ordered.slice(firstStartingAt(ordered, add.end)).filter((c) => c !== add);
    const releaseFrom = later.find((c) => mayRelease(c, add.attachment));
    const released = later.find((c) => surelyReleases(c, add.attachment));
    for (const ip of add.result.addresses) {
      holdings.push({ ip: ip.split("/")[0], attachment: add.attachment, add, releaseFrom, released });
    }
  }
  return holdings;
}

/** Index of the first of `ordered` (sorted by start) that starts at or after `t`. */
function firstStartingAt(ordered: Call[], t: number): number {
  let [lo, hi] = [0, ordered.length];
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ordered[mid].start < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function mayRelease(c: Call, a: Attachment): boolean {
  if (c.verb === "DEL") return sameAttachment(c.attachment, a) && c.result.status !== "refused";
  if (c.verb === "GC") return gcCovers(c, a) && c.result.status !== "refused";
  return c.verb === "VANISH" && sameAttachment(c.attachment, a);
}

function surelyReleases(c: Call, a: Attachment): boolean {
  if (c.verb === "DEL") return sameAttachment(c.attachment, a) && c.result.status === "ok";
  if (c.verb === "GC") return gcCovers(c, a) && c.result.status === "ok";
  // A vanished netns is released by a later sweep: its holding may last until the end of the history.
  return false;
}

/** Whether GC call `c` concerns `a`: same network, and `a` is not listed as valid. */
function gcCovers(c: Call, a: Attachment): boolean {
  return c.attachment.network === a.network &&
    !(c.valid ?? []).some((v) => v.containerId === a.containerId && v.ifName === a.ifName);
}

function certainOf(h: Holding): [number, number] {
  return [h.add.end, h.releaseFrom?.start ?? Infinity];
}

function possibleOf(h: Holding): [number, number] {
  return [h.add.start, h.released?.end ?? Infinity];
}

/** Whether two half-open intervals share an instant (a release at t and a claim at t do not). */
function overlaps([s1, e1]: [number, number], [s2, e2]: [number, number]): boolean {
  return s1 < e2 && s2 < e1;
}

function lastAddOf(calls: Call[], a: Attachment, before: number): Call[] {
  const adds = calls.filter((c) => c.verb === "ADD" && c.start <= before && sameAttachment(c.attachment, a));
  return adds.slice(-1);
}

function sameAttachment(a: Attachment, b: Attachment): boolean {
  return a.network === b.network && a.containerId === b.containerId && a.ifName === b.ifName;
}

function describeAttachment(a: Attachment): string {
  return `${a.network}/${a.containerId}/${a.ifName}`;
}

/** `#12 ADD net/c1/eth0 on node1 at 10.0-25.3 ms: ok 10.64.0.3/32`. */
export function describeCall(c: Call): string {
  const r = c.result;
  const outcome = r.status === "ok"
    ? `ok ${r.addresses.join(", ") || "(no address)"}`
    : `${r.status} ${r.code} ${r.msg.length > 200 ? `${r.msg.slice(0, 197)}...` : r.msg}`;
  const who = c.verb === "GC"
    ? `network ${c.attachment.network} keeping ${c.valid?.length ?? 0}`
    : describeAttachment(c.attachment);
  return `#${c.id} ${c.verb} ${who}${c.node ? ` on ${c.node}` : ""} at ${c.start.toFixed(1)}-${
    c.end.toFixed(1)
  } ms: ${outcome}`;
}

function describeSample(s: Sample): string {
  return `etcd sample #${s.id} at ${s.start.toFixed(1)}-${s.end.toFixed(1)} ms (${s.keys.length} keys)`;
}
