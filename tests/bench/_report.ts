// Printing benchmark figures: each one next to its baseline from the same run, the ratio between
// them, the target and PASS/MISS, and at the end one Markdown table of the whole run.

/** How a figure is read: times are better lower, rates higher. */
export type Unit = "ms" | "s" | "/s" | "count";

/** One measured figure. */
export interface Figure {
  /** The benchmark's name, e.g. `cni-exec`. */
  bench: string;
  /** What was measured, e.g. `IPAM ADD exec, median`. */
  name: string;
  value: number;
  unit: Unit;
  /** The same measurement of the reference, taken in the same run. */
  baseline?: { name: string; value: number };
  /** The goal from the issues and whether `value` meets it. */
  target?: { text: string; pass: boolean };
  note?: string;
}

/** Formats a value with its unit, three significant digits for small times. */
export function formatValue(value: number, unit: Unit): string {
  switch (unit) {
    case "ms":
      return `${value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0)} ms`;
    case "s":
      return `${value < 10 ? value.toFixed(3) : value.toFixed(2)} s`;
    case "/s":
      return `${Math.round(value)}/s`;
    case "count":
      return String(value);
  }
}

/** `value / baseline`, e.g. `12.3×`; empty without a baseline. */
export function ratioText(figure: Figure): string {
  if (!figure.baseline || figure.baseline.value === 0) return "";
  const ratio = figure.value / figure.baseline.value;
  return `${ratio < 10 ? ratio.toFixed(2) : ratio.toFixed(1)}×`;
}

function verdict(figure: Figure): string {
  return figure.target ? (figure.target.pass ? "PASS" : "MISS") : "";
}

/** Prints one figure as soon as it is known, so a long run shows progress. */
export function printFigure(figure: Figure): void {
  const parts = [`  ${figure.name}: ${formatValue(figure.value, figure.unit)}`];
  if (figure.baseline) {
    parts.push(`${figure.baseline.name} ${formatValue(figure.baseline.value, figure.unit)}`);
    parts.push(`ratio ${ratioText(figure)}`);
  }
  if (figure.target) parts.push(`target ${figure.target.text}: ${verdict(figure)}`);
  console.log(parts.join(" | "));
  if (figure.note) console.log(`      ${figure.note}`);
}

/** Prints a benchmark's title line. */
export function printTitle(name: string, description: string): void {
  console.log(`\n== ${name}: ${description}`);
}

/** Prints a progress or explanation line under the current benchmark. */
export function printInfo(text: string): void {
  console.log(`   ${text}`);
}

/** The figures of a run as one Markdown table (for the terminal and for docs/benchmarks.md). */
export function markdownTable(figures: readonly Figure[]): string {
  const rows = [
    "| benchmark | figure | Coil | baseline | ratio | target | verdict |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const f of figures) {
    const baseline = f.baseline ? `${f.baseline.name}: ${formatValue(f.baseline.value, f.unit)}` : "";
    rows.push(
      `| ${f.bench} | ${f.name} | ${formatValue(f.value, f.unit)} | ${baseline} | ${ratioText(f)} | ` +
        `${f.target?.text ?? ""} | ${verdict(f)} |`,
    );
  }
  return rows.join("\n");
}
