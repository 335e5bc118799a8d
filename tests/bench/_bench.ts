// The shape every benchmark module exports, and what main.ts hands it: where figures go, and whether
// this is a quick smoke run (few iterations; figures not meaningful).

import type { Figure } from "./_report.ts";

export interface BenchContext {
  /** `--quick`: a handful of iterations, to check that the benchmark itself works. */
  quick: boolean;
  /** Records and prints one figure. */
  report(figure: Omit<Figure, "bench">): void;
  /** Prints a line of progress or explanation. */
  info(text: string): void;
}

export interface Benchmark {
  /** Selects it on the command line, e.g. `route-sync`. */
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<void>;
}

/** `full` normally, `quick` under --quick. */
export function iterations(ctx: BenchContext, full: number, quick: number): number {
  return ctx.quick ? quick : full;
}
