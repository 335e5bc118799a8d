// Plain-text output of the admin CLI: aligned tables and label/value lists, counts that may be IPv6-sized,
// and JSON in which BigInt counts become decimal strings (JSON numbers lose precision past 2^53).

/** Columns separated by two spaces, each as wide as its widest cell; no trailing blanks. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  return [headers, ...rows]
    .map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join("  "))
    .join("\n");
}

/** `Label:  value` lines with the values aligned. */
export function fields(pairs: [string, string][]): string {
  const width = Math.max(...pairs.map(([label]) => label.length)) + 1;
  return pairs.map(([label, value]) => `${`${label}:`.padEnd(width)}  ${value}`).join("\n");
}

/** Exact below ten million; `2^k` for a larger power of two; else about three digits, `≈3.78e22`. */
export function formatCount(n: bigint | number): string {
  const value = BigInt(n);
  if (value < 10_000_000n) return value.toString();
  if ((value & (value - 1n)) === 0n) return `2^${value.toString(2).length - 1}`;
  return `≈${Number(value).toExponential(2).replace("e+", "e")}`;
}

/** `used/total` as a whole percentage, `-` when total is 0. */
export function percent(used: number, total: number): string {
  return total === 0 ? "-" : `${Math.round((100 * used) / total)}%`;
}

/** JSON with 2-space indent; BigInt values become decimal strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? v.toString() : v), 2);
}
