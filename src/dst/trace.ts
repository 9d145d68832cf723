// The event trace of one run: one line per event (op issued, acked or failed, fault injected,
// crash, restart, check), hashed with SHA-256 as it grows. The same seed gives the same lines, so
// the same hash; a failing seed's replay prints the lines.
import { createHash, type Hash } from "node:crypto";
import type { SimScheduler } from "./scheduler.ts";

/** Lines kept for printing; the hash covers every line, kept or not. */
export const TRACE_LINES_KEPT_MAX = 200_000;

export class Trace {
  private readonly hash: Hash = createHash("sha256");
  private readonly lines: string[] = [];
  linesCount = 0;
  private digest: string | null = null;

  constructor(
    private readonly scheduler: SimScheduler,
    private readonly keepLines: boolean,
  ) {}

  add(line: string): void {
    const text = `${this.scheduler.nowMs()} ${line}`;
    this.hash.update(text);
    this.hash.update("\n");
    this.linesCount++;
    if (this.keepLines && this.lines.length < TRACE_LINES_KEPT_MAX) this.lines.push(text);
  }

  /** The hex SHA-256 of every line; the trace takes no lines after this. */
  finish(): string {
    this.digest ??= this.hash.digest("hex");
    return this.digest;
  }

  text(): string {
    const dropped = this.linesCount - this.lines.length;
    return this.lines.join("\n") + (dropped > 0 ? `\n... ${dropped} more lines not kept` : "");
  }
}
