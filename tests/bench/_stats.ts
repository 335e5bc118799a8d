// Order statistics for benchmark samples: medians and percentiles by nearest rank, never means, because
// this machine is shared and one slow outlier must not move the figure.

/** The values sorted ascending, as a copy. */
function sorted(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

/**
 * The `p`-th percentile (0 < p ≤ 100) by nearest rank: a value that was really measured.
 * @throws {RangeError} for no values or p outside (0, 100].
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new RangeError("Cannot take a percentile of no values");
  if (!(p > 0 && p <= 100)) throw new RangeError(`Percentile ${p} is outside (0, 100]`);
  const ordered = sorted(values);
  return ordered[Math.max(0, Math.ceil((p / 100) * ordered.length) - 1)];
}

/** The median; for an even count, the mean of the two middle values. @throws {RangeError} for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError("Cannot take the median of no values");
  const ordered = sorted(values);
  const mid = ordered.length >> 1;
  return ordered.length % 2 ? ordered[mid] : (ordered[mid - 1] + ordered[mid]) / 2;
}

/** The figures printed for one series of samples. */
export interface Summary {
  n: number;
  median: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
}

/** Median, p90, p99, min and max of `values`. @throws {RangeError} for no values. */
export function summarize(values: readonly number[]): Summary {
  const ordered = sorted(values);
  return {
    n: ordered.length,
    median: median(ordered),
    p90: percentile(ordered, 90),
    p99: percentile(ordered, 99),
    min: ordered[0],
    max: ordered[ordered.length - 1],
  };
}

/** Rotates `items` by `round`, so that no contender always runs first (or last) in an interleaved loop. */
export function rotate<T>(items: readonly T[], round: number): T[] {
  const k = round % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}
