// Small helpers shared by the benchmarks.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function percentileMs(samplesMs: number[], p: number): number {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return round3(sorted[index] ?? Number.NaN);
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export function nowMs(): number {
  return performance.now();
}

export function benchDir(): string {
  return mkdtempSync(join(tmpdir(), "kelpie-bench-"));
}
