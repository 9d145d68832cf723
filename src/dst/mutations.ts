import type { Rng } from "../core/rng.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { type TurnAdmission, TurnGate, type TurnPass } from "../runtime/turn-gate.ts";
// Planted bugs: test-only switches that break one guarantee each, to prove the simulation notices.
// Each lives in a simulation layer (a storage wrapper, the disk, the request handler, the random
// source, the turn gate the simulator injects) and is off unless named with --mutation;
// production code has no such switch.
export const PLANTED_BUGS = [
  // The storage wrapper acknowledges an agent's (fenced) commit at once and writes it a moment
  // later (and drops it if that write fails or the node dies first).
  "ack_before_commit",
  // The engine applies fenced commits without comparing the fencing token (it still checks that
  // the lease has not lapsed: a late commit after another node took the lease over gets through).
  "skip_fencing_check",
  // The engine compares the fencing token but lets a commit through after its lease lapsed (so a
  // node cut off from the database for a lease TTL still commits when it reconnects).
  "skip_lease_lapse_check",
  // The request handler retries a failed non-idempotent request on the server side, so an effect
  // the first attempt already committed is applied again.
  "double_apply_on_retry",
  // The disk loses its last commit when the node crashes, acknowledged or not (a missing fsync).
  "lose_acked_write_on_crash",
  // The block edit handler clips a value to the block's limit instead of rejecting it.
  "truncate_block_value",
  // Reads skip checksum verification, so a corrupt copy is served as if it were good.
  "skip_checksum_verify",
  // Turns are let in at once instead of through the agent's turn gate (the simulator's own gate,
  // injected at boot), so two turns sent to one agent interleave step by step.
  "two_turns_interleaved",
  // The storage wrapper commits an agent's step without its outbox entries and writes those a
  // moment later (forgotten if that write fails or the node dies first): the model was told
  // "Successfully sent message" before the message was committed anywhere.
  "async_send_acked_before_commit",
  // The node's seeded random source hands out a fresh fork of each concern's stream at every
  // step, as forking per step would: the memory tool mints the same block id step after step.
  "per_step_rng_fork",
  // The node's runtime runs tier writes (archival, working memory) with the agent's fence but
  // outside its mailbox, as writes straight to the tier storage did: two first inserts into an
  // agent's archival memory both find no archive and each make one.
  "tier_write_outside_mailbox",
  // Working-memory limits are checked by the request layer against a read of the agent's working
  // memory, and the storage wrapper commits the put without the engine's in-transaction check:
  // concurrent puts that each fit alone all get in, past the limit.
  "limit_checked_outside_txn",
] as const;
export type PlantedBug = (typeof PLANTED_BUGS)[number];

export function isPlantedBug(name: string): name is PlantedBug {
  return (PLANTED_BUGS as readonly string[]).includes(name);
}

export interface BugSwitches {
  ackBeforeCommit: boolean;
  skipFencingCheck: boolean;
  skipLeaseLapseCheck: boolean;
  doubleApplyOnRetry: boolean;
  loseLastCommitOnCrash: boolean;
  truncateBlockValue: boolean;
  skipChecksumVerify: boolean;
  interleaveTurns: boolean;
  outboxWriteBehind: boolean;
  forkPerStep: boolean;
  tierWriteOutsideMailbox: boolean;
  limitOutsideTxn: boolean;
}

export function bugSwitches(bug: PlantedBug | null): BugSwitches {
  return {
    ackBeforeCommit: bug === "ack_before_commit",
    skipFencingCheck: bug === "skip_fencing_check",
    skipLeaseLapseCheck: bug === "skip_lease_lapse_check",
    doubleApplyOnRetry: bug === "double_apply_on_retry",
    loseLastCommitOnCrash: bug === "lose_acked_write_on_crash",
    truncateBlockValue: bug === "truncate_block_value",
    skipChecksumVerify: bug === "skip_checksum_verify",
    interleaveTurns: bug === "two_turns_interleaved",
    outboxWriteBehind: bug === "async_send_acked_before_commit",
    forkPerStep: bug === "per_step_rng_fork",
    tierWriteOutsideMailbox: bug === "tier_write_outside_mailbox",
    limitOutsideTxn: bug === "limit_checked_outside_txn",
  };
}

/** A node's random source with `per_step_rng_fork` planted: a fork's stream starts over whenever simulated time moved. */
export class PerStepForkRng implements Rng {
  constructor(
    private readonly base: Rng,
    private readonly nowMs: () => number,
  ) {}

  next(): number {
    return this.base.next();
  }

  int(maxExclusive: number): number {
    return this.base.int(maxExclusive);
  }

  uuid(): string {
    return this.base.uuid();
  }

  fork(name: string): Rng {
    let stream = this.base.fork(name);
    let atMs = this.nowMs();
    const current = (): Rng => {
      if (this.nowMs() !== atMs) {
        stream = this.base.fork(name);
        atMs = this.nowMs();
      }
      return stream;
    };
    return {
      next: () => current().next(),
      int: (n) => current().int(n),
      uuid: () => current().uuid(),
      fork: (inner) => current().fork(inner),
    };
  }
}

/** The turn gate with `two_turns_interleaved` planted: every turn is let in at once. */
export class OpenTurnGate extends TurnGate {
  override admit(_admission: TurnAdmission): Promise<TurnPass> {
    return Promise.resolve({ reentrant: true, release() {} });
  }
}

/** The operations (as named to Runtime.invoke) that write an agent's tiers. */
const TIER_WRITES = new Set(["archival_write", "working_memory"]);

/**
 * `tier_write_outside_mailbox` planted in a node's runtime: a tier write enters the agent's
 * mailbox only to learn its fence, and runs after leaving it, unserialized with the agent's other ops.
 */
export function runTierWritesOutsideMailbox(runtime: Runtime): void {
  const invoke = runtime.invoke.bind(runtime);
  runtime.invoke = (agentId, op, operation) => {
    if (operation === undefined || !TIER_WRITES.has(operation)) return invoke(agentId, op, operation);
    return invoke(agentId, async (ctx) => ctx, operation).then((ctx) => op(ctx));
  };
}
