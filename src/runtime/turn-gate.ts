// Turns are serial per agent. A turn holds its agent's lane from its first step to its end; a
// second turn to the same agent waits in a bounded queue behind it (over the bound: AGENT_BUSY,
// 429 with a Retry-After). The gate sits on top of the mailbox: the turn's steps are still
// mailbox ops, and other ops (block edits through the API) still run between them; reads never
// come here.
//
// Agent-to-agent calls must not deadlock. A turn suspended in a call waits for the callee's turn,
// so the callee's turn carries the run ids of every suspended caller up its chain. A turn enters
// an agent whose holder is suspended waiting (transitively) for it without queueing — it runs
// inside the holder's turn, as Orleans's call-chain reentrancy does:
// - along its own chain: A asks B, B asks A (A's turn is in the chain of the A it reaches);
// - across chains: A's turn asks B while B's turn asks A. A's call waits in B's queue behind B's
//   turn, which is in the chain of the call that reaches A: the wait cycle closes at A, so that
//   call enters A, B's turn finishes, and A's call gets B.
// A wait cycle can only close when a turn queues (a turn just let in waits on nothing yet), so
// checking there finds every one.
import { assert } from "../core/assert.ts";
import type { Clock } from "../core/clock.ts";
import { TURN_RETRY_AFTER_S_MAX, TURNS_QUEUED_PER_AGENT_MAX } from "../core/constants.ts";
import { KelpieError } from "../core/errors.ts";

/** What a turn gives back when it ends; releasing twice is harmless. */
export interface TurnPass {
  /** Entered inside a suspended holder's turn (holds nothing). */
  readonly reentrant: boolean;
  release(): void;
}

export interface TurnAdmission {
  agentId: string;
  runId: string;
  /** Run ids of the callers suspended waiting for this turn, outermost first ([] for a client's). */
  chain: readonly string[];
  /** Aborting it drops the turn from the queue (the promise rejects with the signal's reason). */
  signal: AbortSignal;
}

interface Waiter {
  readonly admission: TurnAdmission;
  readonly lane: Lane;
  resolve(pass: TurnPass): void;
  reject(err: unknown): void;
  onAbort(): void;
}

interface Lane {
  readonly agentId: string;
  /** The run holding the agent. */
  holder: string;
  holderSinceMs: number;
  queue: Waiter[];
}

export interface TurnGateStats {
  agentsHeld: number;
  turnsQueued: number;
  turnsReentrantTotal: number;
  agentBusyTotal: number;
}

/** The first guess at how long a turn takes, before any has ended. */
const TURN_MS_GUESS = 2_000;
/** Weight of the newest turn in the running mean of turn durations. */
const TURN_MS_MEAN_WEIGHT = 0.2;

export class TurnGate {
  private readonly lanes = new Map<string, Lane>();
  /** Queued waiters by the run ids in their chains: what each suspended run waits for. */
  private readonly waitingFor = new Map<string, Set<Waiter>>();
  private turnMsMean = TURN_MS_GUESS;
  private readonly counters = { turnsReentrantTotal: 0, agentBusyTotal: 0 };

  constructor(
    private readonly clock: Clock,
    private readonly queuedPerAgentMax = TURNS_QUEUED_PER_AGENT_MAX,
  ) {
    assert(queuedPerAgentMax >= 0, "a turn queue bound is never negative");
  }

  /**
   * Lets a turn in: at once when its agent is free or its holder waits on it, else queued.
   * Throws AGENT_BUSY at once (synchronously) when the agent's queue is full, so a caller can
   * answer 429 before it acknowledges anything.
   */
  admit(admission: TurnAdmission): Promise<TurnPass> {
    const lane = this.lanes.get(admission.agentId);
    if (lane === undefined) return Promise.resolve(this.hold(admission));
    if (this.waitsOn(lane.holder, admission.chain, new Set())) {
      this.counters.turnsReentrantTotal++;
      return Promise.resolve({ reentrant: true, release() {} });
    }
    if (lane.queue.length >= this.queuedPerAgentMax) {
      this.counters.agentBusyTotal++;
      throw this.busy(lane);
    }
    if (admission.signal.aborted) return Promise.reject(admission.signal.reason);
    return new Promise<TurnPass>((resolve, reject) => {
      const waiter: Waiter = {
        admission,
        lane,
        resolve,
        reject,
        onAbort: () => {
          this.unqueue(waiter);
          reject(admission.signal.reason);
        },
      };
      lane.queue.push(waiter);
      for (const runId of admission.chain) {
        const set = this.waitingFor.get(runId) ?? new Set<Waiter>();
        this.waitingFor.set(runId, set);
        set.add(waiter);
      }
      admission.signal.addEventListener("abort", waiter.onAbort, { once: true });
    });
  }

  /** Whether run `holder` waits, through suspended calls and queues, for a turn with this chain. */
  private waitsOn(holder: string, chain: readonly string[], seen: Set<string>): boolean {
    if (chain.includes(holder)) return true;
    if (seen.has(holder)) return false;
    seen.add(holder);
    for (const waiter of this.waitingFor.get(holder) ?? []) {
      if (this.waitsOn(waiter.lane.holder, chain, seen)) return true;
    }
    return false;
  }

  private hold(admission: TurnAdmission): TurnPass {
    const lane: Lane = {
      agentId: admission.agentId,
      holder: admission.runId,
      holderSinceMs: this.clock.monotonicMs(),
      queue: [],
    };
    this.lanes.set(admission.agentId, lane);
    return this.passOf(lane, admission.runId);
  }

  private passOf(lane: Lane, runId: string): TurnPass {
    let released = false;
    return {
      reentrant: false,
      release: () => {
        if (released) return;
        released = true;
        assert(
          lane.holder === runId && this.lanes.get(lane.agentId) === lane,
          "a pass releases its own lane",
        );
        this.handOver(lane);
      },
    };
  }

  private handOver(lane: Lane): void {
    const nowMs = this.clock.monotonicMs();
    const heldMs = Math.max(0, nowMs - lane.holderSinceMs);
    this.turnMsMean += TURN_MS_MEAN_WEIGHT * (heldMs - this.turnMsMean);
    const next = lane.queue[0];
    if (next === undefined) {
      this.lanes.delete(lane.agentId);
      return;
    }
    this.unqueue(next);
    lane.holder = next.admission.runId;
    lane.holderSinceMs = nowMs;
    next.resolve(this.passOf(lane, next.admission.runId));
  }

  private unqueue(waiter: Waiter): void {
    const at = waiter.lane.queue.indexOf(waiter);
    if (at >= 0) waiter.lane.queue.splice(at, 1);
    waiter.admission.signal.removeEventListener("abort", waiter.onAbort);
    for (const runId of waiter.admission.chain) {
      const set = this.waitingFor.get(runId);
      set?.delete(waiter);
      if (set?.size === 0) this.waitingFor.delete(runId);
    }
  }

  private busy(lane: Lane): KelpieError {
    const waitMs = (lane.queue.length + 1) * this.turnMsMean;
    const retryAfterS = Math.min(TURN_RETRY_AFTER_S_MAX, Math.max(1, Math.ceil(waitMs / 1_000)));
    return new KelpieError(
      "AGENT_BUSY",
      `agent ${lane.agentId} is busy: a turn is running and ${lane.queue.length} more are queued (max ${this.queuedPerAgentMax}); send again after ${retryAfterS} s, or wait for each reply before sending the next message`,
      { retryAfterS },
    );
  }

  /** The number of turns waiting for one agent. */
  queued(agentId: string): number {
    return this.lanes.get(agentId)?.queue.length ?? 0;
  }

  stats(): TurnGateStats {
    let turnsQueued = 0;
    for (const lane of this.lanes.values()) turnsQueued += lane.queue.length;
    return { agentsHeld: this.lanes.size, turnsQueued, ...this.counters };
  }
}
