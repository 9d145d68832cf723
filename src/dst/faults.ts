// Faults as plain data: a seeded plan says when each fault starts (and, for windows, how long it
// lasts); the layers that inject them (storage wrapper, network, cluster, scripted LLM, sandbox)
// count an injection only when it actually happened, so the summary never overstates coverage.
import type { Rng } from "../core/rng.ts";

export const FAULT_TYPES = [
  "storage_write_fail",
  "storage_read_fail",
  "storage_corruption",
  "storage_latency",
  "network_partition",
  // A node cut off from the database (its heartbeats fail, its leases lapse), and from the other
  // nodes (requests forwarded to or from it fail).
  "db_partition",
  "node_partition",
  "network_delay",
  "network_loss",
  "network_reorder",
  "crash_before_write",
  "crash_after_write",
  "crash_during_txn",
  "clock_skew",
  "clock_jump",
  // Beyond the required list: the scripted LLM and sandbox fail too, and nodes restart cleanly.
  "llm_error",
  "llm_timeout",
  "llm_malformed_tool_call",
  "sandbox_fail",
  "node_restart",
] as const;
export type FaultType = (typeof FAULT_TYPES)[number];

/** Faults that hold for a window of simulated time (each affected call counts as one injection). */
const WINDOW_FAULTS: ReadonlySet<FaultType> = new Set([
  "storage_write_fail",
  "storage_read_fail",
  "storage_corruption",
  "storage_latency",
  "network_partition",
  "db_partition",
  "node_partition",
  "network_delay",
  "network_loss",
  "network_reorder",
  "llm_error",
  "llm_timeout",
  "llm_malformed_tool_call",
  "sandbox_fail",
]);

export interface PlannedFault {
  type: FaultType;
  atMs: number;
  /** For window faults; 0 for one-shot faults (crashes, clock moves, restarts). */
  durationMs: number;
}

export interface FaultPlanOptions {
  /** The plan spreads faults over [0, horizonMs). */
  horizonMs: number;
  /** Faults beyond the one of each type every plan holds. */
  extraFaultsCount: number;
}

export const FAULT_WINDOW_MS_MIN = 500;
export const FAULT_WINDOW_MS_MAX = 6_000;

/**
 * A seeded plan: every fault type at least once (so each seed exercises each kind), plus extras
 * drawn at random, sorted by start time (ties by type order, so the plan is a function of the seed).
 */
export function makeFaultPlan(rng: Rng, options: FaultPlanOptions): PlannedFault[] {
  const types: FaultType[] = [...FAULT_TYPES];
  for (let i = 0; i < options.extraFaultsCount; i++) types.push(FAULT_TYPES[rng.int(FAULT_TYPES.length)]!);
  const plan = types.map((type) => ({
    type,
    atMs: rng.int(options.horizonMs),
    durationMs: WINDOW_FAULTS.has(type)
      ? FAULT_WINDOW_MS_MIN + rng.int(FAULT_WINDOW_MS_MAX - FAULT_WINDOW_MS_MIN)
      : 0,
  }));
  const order = new Map(FAULT_TYPES.map((t, i) => [t, i]));
  plan.sort((a, b) => a.atMs - b.atMs || order.get(a.type)! - order.get(b.type)!);
  return plan;
}

/** Injections, by type: what the run really did, not what the plan hoped for. */
export class FaultCounters {
  readonly counts = new Map<FaultType, number>(FAULT_TYPES.map((t) => [t, 0]));

  count(type: FaultType): void {
    this.counts.set(type, this.counts.get(type)! + 1);
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }
}

/** The windows open now, per fault type: layers ask before each call they could fail. */
export class ActiveFaults {
  private readonly until = new Map<FaultType, number>();

  open(type: FaultType, untilMs: number): void {
    this.until.set(type, Math.max(untilMs, this.until.get(type) ?? 0));
  }

  close(type: FaultType): void {
    this.until.delete(type);
  }

  isOpen(type: FaultType, nowMs: number): boolean {
    const until = this.until.get(type);
    return until !== undefined && nowMs < until;
  }
}
