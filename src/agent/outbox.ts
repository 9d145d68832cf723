// The outbox of async messages between agents (send_message_to_agent_async). The tool's answer and
// an outbox entry are committed in the sender's step, under its fence, so "Successfully sent
// message" is never said of a message that a crash can lose. This dispatcher then delivers each
// entry at least once, as a message send under an Idempotency-Key derived from the entry's id: the
// target's run id derives from the key, so a redelivery (after a crash, on another node) finds the
// run — replays it, joins it, or resumes it — and the target applies the message once.
//
// Entries are delivered by the node holding their sender: after the step that committed them, when
// the sender activates (on restart, or on the node that took it over), and by a sweep on the
// injected clock (retries after backoff, senders nobody holds). Delivery runs outside the sender's
// mailbox; marking an entry delivered (deleting it) or retried is a fenced commit inside it.
import { assert } from "../core/assert.ts";
import type { Clock, Timer } from "../core/clock.ts";
import { OUTBOX_ENTRIES_PER_AGENT_MAX } from "../core/constants.ts";
import type { Env } from "../core/env.ts";
import { isKelpieError } from "../core/errors.ts";
import { newId } from "../core/ids.ts";
import type { Rng } from "../core/rng.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { Mutation, OutboxRecord, Storage } from "../storage/types.ts";
import type { MessageService } from "./message-service.ts";
import type { ToolOutput } from "./tool-calls.ts";

/** Failed deliveries of one entry before it is given up (and the giving up audited). */
export const OUTBOX_DELIVERY_ATTEMPTS_MAX = 10;
/** The wait after a failed delivery doubles from the min up to the max. */
export const OUTBOX_RETRY_BACKOFF_MS_MIN = 500;
export const OUTBOX_RETRY_BACKOFF_MS_MAX = 60_000;
/** How often a node looks for senders with entries waiting (a dead node's, retries that are due). */
export const OUTBOX_SWEEP_INTERVAL_MS = 10_000;
/** Senders one sweep looks at. */
export const OUTBOX_SWEEP_SENDERS_MAX = 256;
/** Senders one node delivers for at once; the others wait for the next sweep. */
export const OUTBOX_SENDERS_DELIVERING_MAX = 16;

assert(OUTBOX_RETRY_BACKOFF_MS_MIN <= OUTBOX_RETRY_BACKOFF_MS_MAX, "backoff min <= max");
assert(OUTBOX_ENTRIES_PER_AGENT_MAX > 0, "an outbox holds at least one entry");

/**
 * The Idempotency-Key an entry is delivered under: one per entry, the same for every attempt, on
 * every node and after every crash. An attempt whose answer was lost (the reply was dropped, the
 * sender's node died, the failure was recorded) may still have been applied by the target: a key
 * per attempt would apply it again. A failed attempt that left nothing in the target's history is
 * run again under the same key (see MessageService.send).
 */
export function outboxIdempotencyKey(entry: Pick<OutboxRecord, "id">): string {
  return `outbox:${entry.id}`;
}

/** The wait before attempt `attempts + 1`, after `attempts` failed ones. */
export function outboxBackoffMs(attempts: number): number {
  assert(attempts >= 1, "a backoff follows a failed attempt");
  return Math.min(OUTBOX_RETRY_BACKOFF_MS_MAX, OUTBOX_RETRY_BACKOFF_MS_MIN * 2 ** Math.min(attempts - 1, 20));
}

/** Sends one entry to its target; resolves once the target has taken it (its turn is over), else throws. */
export type Delivery = (entry: OutboxRecord) => Promise<void>;

/** Delivery on this node: the target's turn runs here (its lease is here, or free). */
export function localDelivery(messages: () => MessageService): Delivery {
  return async (entry) => {
    const result = await messages().send(
      entry.target_agent_id,
      { messages: [{ role: "user", content: entry.text }] },
      {
        streamTokens: false,
        senderId: entry.agent_id,
        callDepth: entry.call_depth + 1,
        idempotencyKey: outboxIdempotencyKey(entry),
      },
    );
    // The input is committed with the run's first step: once one is, the target has the message,
    // whatever became of the rest of its turn (as a client's turn would). A run that committed no
    // step (its model failed, its mailbox was full, its first step's commit failed) left nothing:
    // the dispatcher tries again when the error is retryable, under the same key. A step
    // counted in the usage may not have committed; a message in the result has.
    if (result.error !== undefined && result.messages.length === 0) throw result.error;
  };
}

/**
 * Takes the outbox entries a tool's output carries into the step about to commit (`accepted`), or,
 * when the sender's outbox cannot hold them, turns the output into the error the model reads.
 * Runs in the sender's mailbox, so the count it reads is not raced by the sender's other steps;
 * the commit checks the limit again.
 */
export async function admitOutbox(
  storage: Storage,
  agentId: string,
  output: ToolOutput,
  accepted: OutboxRecord[],
): Promise<ToolOutput> {
  const entries = output.outbox ?? [];
  if (entries.length === 0) return output;
  const held = (await storage.countOutbox(agentId)) + accepted.length;
  if (held + entries.length > OUTBOX_ENTRIES_PER_AGENT_MAX) {
    return {
      ok: false,
      value: `Not sent: ${held} of your async messages are still waiting for delivery (max ${OUTBOX_ENTRIES_PER_AGENT_MAX}); try again later.`,
    };
  }
  accepted.push(...entries);
  const { outbox: _entries, ...rest } = output;
  return rest;
}

export interface OutboxStats {
  deliveredTotal: number;
  retriedTotal: number;
  undeliverableTotal: number;
}

export class OutboxDispatcher {
  private readonly clock: Clock;
  private readonly storage: Storage;
  private readonly rng: Rng;
  /** Senders whose entries are being delivered now, and those to look at again after. */
  private readonly delivering = new Set<string>();
  private readonly again = new Set<string>();
  private sweepTimer: Timer | null = null;
  private sweepAtMs = Number.POSITIVE_INFINITY;
  private stopped = false;
  private readonly counters: OutboxStats = { deliveredTotal: 0, retriedTotal: 0, undeliverableTotal: 0 };

  constructor(
    env: Env,
    private readonly runtime: Runtime,
    private readonly deliver: Delivery,
  ) {
    this.clock = env.clock;
    this.storage = env.storage;
    this.rng = env.rng.fork("outbox");
  }

  /** Delivers what a crash or shutdown left, and sweeps from now on. */
  async start(): Promise<void> {
    await this.sweep();
  }

  stop(): void {
    this.stopped = true;
    this.sweepTimer?.cancel();
    this.sweepTimer = null;
  }

  stats(): OutboxStats {
    return { ...this.counters };
  }

  /** The sender has entries (just committed, or found at its activation): deliver those due. */
  kick(senderId: string): void {
    if (this.stopped) return;
    if (this.delivering.has(senderId)) {
      this.again.add(senderId);
      return;
    }
    if (this.delivering.size >= OUTBOX_SENDERS_DELIVERING_MAX) {
      this.sweepIn(OUTBOX_RETRY_BACKOFF_MS_MIN);
      return;
    }
    this.delivering.add(senderId);
    void this.drain(senderId)
      .catch(() => this.sweepIn(OUTBOX_RETRY_BACKOFF_MS_MIN))
      .finally(() => {
        this.delivering.delete(senderId);
        if (this.again.delete(senderId)) this.kick(senderId);
      });
  }

  /** Gets every sender with entries delivered by the node holding it: here, when it is held here or by nobody. */
  private async sweep(): Promise<void> {
    this.sweepTimer = null;
    this.sweepAtMs = Number.POSITIVE_INFINITY;
    if (this.stopped) return;
    try {
      const senders = await this.storage.listOutboxSenders(OUTBOX_SWEEP_SENDERS_MAX);
      for (const sender of senders) {
        if (this.runtime.isHeld(sender)) this.kick(sender);
        // Activating it here (its activation kicks it) fails when another node holds it: that
        // node delivers.
        else this.runtime.invoke(sender, async () => {}, "outbox").catch(() => {});
      }
    } catch {
      // The database is away: the next sweep tries again.
    }
    this.sweepIn(OUTBOX_SWEEP_INTERVAL_MS);
  }

  /** Sweeps after `ms` at the latest. */
  private sweepIn(ms: number): void {
    if (this.stopped) return;
    const atMs = this.clock.monotonicMs() + ms;
    if (atMs >= this.sweepAtMs) return;
    this.sweepTimer?.cancel();
    this.sweepAtMs = atMs;
    this.sweepTimer = this.clock.setTimer(ms, () => void this.sweep());
  }

  /** Delivers the sender's due entries in order; one target's later entries wait for its earlier ones. */
  private async drain(senderId: string): Promise<void> {
    const entries = await this.storage.listOutbox(senderId, OUTBOX_ENTRIES_PER_AGENT_MAX);
    const blocked = new Set<string>();
    for (const entry of entries) {
      if (this.stopped) return;
      const waitMs = entry.next_attempt_at_ms - this.clock.nowMs();
      if (waitMs > 0 || blocked.has(entry.target_agent_id)) {
        blocked.add(entry.target_agent_id);
        this.sweepIn(Math.max(waitMs, OUTBOX_RETRY_BACKOFF_MS_MIN));
        continue;
      }
      if (!(await this.deliverOne(entry))) blocked.add(entry.target_agent_id);
    }
  }

  /** One attempt at one entry, and its outcome committed; whether it was delivered. */
  private async deliverOne(entry: OutboxRecord): Promise<boolean> {
    let failure: unknown = null;
    try {
      await this.deliver(entry);
    } catch (err) {
      failure = err;
    }
    if (failure === null) {
      this.counters.deliveredTotal++;
      await this.record(entry, [{ op: "delete_outbox", entry_id: entry.id }]);
      return true;
    }
    if (this.stopped) return false;
    const reason = failure instanceof Error ? failure.message : String(failure);
    const attempts = entry.attempts + 1;
    const retryable = !isKelpieError(failure) || failure.retryable;
    if (retryable && attempts < OUTBOX_DELIVERY_ATTEMPTS_MAX) {
      const backoffMs = outboxBackoffMs(attempts);
      await this.record(entry, [
        {
          op: "put_outbox",
          create: false,
          entry: {
            ...entry,
            attempts,
            last_error: reason,
            next_attempt_at_ms: this.clock.nowMs() + backoffMs,
          },
        },
      ]);
      this.counters.retriedTotal++;
      this.sweepIn(backoffMs);
      return false;
    }
    // The target is gone, refuses the message, or never took it in all the attempts: said in the
    // audit log, not dropped silently.
    await this.record(entry, [
      { op: "delete_outbox", entry_id: entry.id },
      {
        op: "put_audit",
        entry: {
          id: newId("audit", this.rng),
          at_ms: this.clock.nowMs(),
          actor: `agent:${entry.agent_id}`,
          action: "outbox.undeliverable",
          target: entry.target_agent_id,
          detail: { agent_id: entry.agent_id, outbox_entry_id: entry.id, attempts, error: reason },
        },
      },
    ]);
    this.counters.undeliverableTotal++;
    return false;
  }

  /**
   * Commits an entry's outcome in its sender's mailbox, under its fence. When the sender has moved
   * to another node (or was deleted) nothing is written: that node delivers the entry again, and
   * the target's idempotency key makes the second delivery a replay of the first.
   */
  private async record(entry: OutboxRecord, mutations: Mutation[]): Promise<void> {
    try {
      await this.runtime.invoke(
        entry.agent_id,
        (ctx) => this.storage.commit(mutations, { fence: ctx.fence }),
        "outbox",
      );
    } catch (err) {
      if (!isKelpieError(err)) throw err;
      if (err.code !== "AGENT_NOT_FOUND" && err.code !== "NOT_FOUND")
        this.sweepIn(OUTBOX_RETRY_BACKOFF_MS_MIN);
    }
  }
}
