// Virtual actors. `invoke(agentId, op)` activates the agent on first use (checks it exists, takes
// a fencing token), queues ops in its bounded mailbox and runs them one at a time; different
// agents run concurrently. Idle activations are dropped by a sweep on the injected clock.
//
// An activation is deliberately tiny (id, token, timestamps, a lazily made queue): reads come
// from committed storage inside the turn, so there is no cached state to keep coherent.
import { assert } from "../core/assert.ts";
import type { Clock, Timer } from "../core/clock.ts";
import { ACTOR_IDLE_SWEEP_INTERVAL_MS, ACTOR_IDLE_TIMEOUT_MS, MAILBOX_DEPTH_MAX } from "../core/constants.ts";
import { isKelpieError, KelpieError, notFound } from "../core/errors.ts";
import { NO_TELEMETRY, type Telemetry } from "../observability/telemetry.ts";
import type { Storage } from "../storage/types.ts";
import type { Placement } from "./placement.ts";

/** What an op sees of its activation. */
export interface TurnContext {
  readonly agentId: string;
  readonly fencingToken: number;
  /** The fence to pass to `storage.commit` for this agent's state. */
  readonly fence: { agent_id: string; token: number };
  /** Ends the activation after this op (the agent was deleted, say). */
  deactivateAfter(): void;
}

export type Op<T> = (ctx: TurnContext) => Promise<T>;

/** Runs once per activation, under its fencing token, before the first op (repairs what a dead activation left). */
export type ActivationHook = (ctx: TurnContext) => Promise<void>;

interface Envelope {
  run: Op<unknown>;
  operation: string;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

interface Activation {
  readonly agentId: string;
  /** 0 until the activation has taken its token. */
  token: number;
  lastActiveMs: number;
  running: boolean;
  deactivating: boolean;
  /** Its lease was lost: it ends without releasing one. */
  leaseLost: boolean;
  queue: Envelope[] | null;
}

export interface RuntimeOptions {
  clock: Clock;
  storage: Storage;
  placement: Placement;
  idleTimeoutMs?: number;
  mailboxDepthMax?: number;
  telemetry?: Telemetry;
}

export interface RuntimeStats {
  activeCount: number;
  /** Operations queued or running across all mailboxes. */
  mailboxDepthTotal: number;
  activationsTotal: number;
  deactivationsTotal: number;
  opsTotal: number;
  mailboxFullTotal: number;
}

export class Runtime {
  private readonly clock: Clock;
  private readonly storage: Storage;
  private readonly placement: Placement;
  private readonly idleTimeoutMs: number;
  private readonly mailboxDepthMax: number;
  private readonly telemetry: Telemetry;
  private readonly activations = new Map<string, Activation>();
  private sweepTimer: Timer | null = null;
  private activationHook: ActivationHook | null = null;
  private stopping = false;
  private readonly counters = {
    activationsTotal: 0,
    deactivationsTotal: 0,
    opsTotal: 0,
    mailboxFullTotal: 0,
  };

  constructor(options: RuntimeOptions) {
    this.clock = options.clock;
    this.storage = options.storage;
    this.placement = options.placement;
    this.idleTimeoutMs = options.idleTimeoutMs ?? ACTOR_IDLE_TIMEOUT_MS;
    this.mailboxDepthMax = options.mailboxDepthMax ?? MAILBOX_DEPTH_MAX;
    this.telemetry = options.telemetry ?? NO_TELEMETRY;
    assert(this.idleTimeoutMs > 0, "idle timeout must be positive");
    assert(this.mailboxDepthMax > 0, "mailbox depth must be positive");
  }

  /** Sets the hook every new activation runs before its first op; its failure fails the activation. */
  onActivate(hook: ActivationHook): void {
    this.activationHook = hook;
  }

  /** Starts the idle sweep. */
  start(): void {
    const sweepMs = Math.min(ACTOR_IDLE_SWEEP_INTERVAL_MS, this.idleTimeoutMs);
    const tick = () => {
      void this.deactivateIdle();
      if (!this.stopping) this.sweepTimer = this.clock.setTimer(sweepMs, tick);
    };
    this.sweepTimer = this.clock.setTimer(sweepMs, tick);
  }

  /** Queues `op` in the agent's mailbox and resolves with its result; `operation` names it in metrics. */
  invoke<T>(agentId: string, op: Op<T>, operation = "op"): Promise<T> {
    if (this.stopping) return Promise.reject(new KelpieError("SHUTTING_DOWN", "server is shutting down"));
    let activation = this.activations.get(agentId);
    if (activation === undefined) {
      activation = {
        agentId,
        token: 0,
        lastActiveMs: this.clock.monotonicMs(),
        running: false,
        deactivating: false,
        leaseLost: false,
        queue: null,
      };
      this.activations.set(agentId, activation);
    }
    const depth = (activation.queue?.length ?? 0) + (activation.running ? 1 : 0);
    if (depth >= this.mailboxDepthMax) {
      this.counters.mailboxFullTotal++;
      return Promise.reject(
        new KelpieError(
          "MAILBOX_FULL",
          `agent ${agentId} has ${depth} operations queued (max ${this.mailboxDepthMax})`,
        ),
      );
    }
    return new Promise<T>((resolve, reject) => {
      const envelope: Envelope = {
        run: op as Op<unknown>,
        operation,
        resolve: resolve as (v: unknown) => void,
        reject,
      };
      activation.queue ??= [];
      activation.queue.push(envelope);
      if (!activation.running) void this.drain(activation);
    });
  }

  private async drain(activation: Activation): Promise<void> {
    assert(!activation.running, "an activation drains once at a time");
    activation.running = true;
    try {
      while (activation.queue !== null && activation.queue.length > 0) {
        const envelope = activation.queue.shift()!;
        if (activation.token === 0) {
          try {
            await this.activate(activation);
          } catch (err) {
            envelope.reject(err);
            this.failQueued(activation, err);
            this.remove(activation);
            return;
          }
        }
        await this.runOne(activation, envelope);
        activation.lastActiveMs = this.clock.monotonicMs();
        if (activation.deactivating) {
          this.failQueuedOrKeep(activation);
          return;
        }
      }
      activation.queue = null;
    } finally {
      activation.running = false;
    }
  }

  private async activate(activation: Activation): Promise<void> {
    const agent = await this.storage.getAgent(activation.agentId);
    if (agent === null) throw notFound("agent", activation.agentId);
    const token = await this.placement.acquire(activation.agentId);
    assert(token > 0, "fencing tokens start at 1");
    // Held from here (heartbeats renew it), though not counted as an activation until the hook is done.
    activation.token = token;
    if (this.activationHook !== null) {
      try {
        await this.activationHook(this.context(activation, token));
      } catch (err) {
        activation.token = 0;
        void this.placement.release(activation.agentId, token);
        throw err;
      }
    }
    this.counters.activationsTotal++;
  }

  private context(activation: Activation, token: number): TurnContext {
    return {
      agentId: activation.agentId,
      fencingToken: token,
      fence: { agent_id: activation.agentId, token },
      deactivateAfter: () => {
        activation.deactivating = true;
      },
    };
  }

  private async runOne(activation: Activation, envelope: Envelope): Promise<void> {
    const ctx = this.context(activation, activation.token);
    this.counters.opsTotal++;
    const startMs = this.clock.monotonicMs();
    try {
      const result = await this.telemetry.span(
        "actor.invoke",
        { operation: envelope.operation, agent_id: activation.agentId },
        () => envelope.run(ctx),
      );
      this.telemetry.invocation({
        operation: envelope.operation,
        status: "ok",
        durationMs: this.clock.monotonicMs() - startMs,
      });
      envelope.resolve(result);
    } catch (err) {
      this.telemetry.invocation({
        operation: envelope.operation,
        status: "error",
        durationMs: this.clock.monotonicMs() - startMs,
      });
      // A fenced commit means another activation owns the agent now: this one must end.
      if (isKelpieError(err) && err.code === "FENCED") activation.deactivating = true;
      envelope.reject(err);
    }
  }

  /** After a deactivating op: the activation ends; queued ops start a fresh one. */
  private failQueuedOrKeep(activation: Activation): void {
    const rest = activation.queue ?? [];
    this.remove(activation);
    if (!activation.leaseLost) void this.placement.release(activation.agentId, activation.token);
    for (const envelope of rest) {
      this.invoke(activation.agentId, envelope.run, envelope.operation).then(
        envelope.resolve,
        envelope.reject,
      );
    }
  }

  private failQueued(activation: Activation, err: unknown): void {
    for (const envelope of activation.queue ?? []) envelope.reject(err);
    activation.queue = null;
  }

  private remove(activation: Activation): void {
    if (this.activations.get(activation.agentId) === activation) {
      this.activations.delete(activation.agentId);
      if (activation.token > 0) this.counters.deactivationsTotal++;
    }
  }

  /** Drops activations idle for longer than the timeout; returns how many. */
  async deactivateIdle(): Promise<number> {
    const cutoffMs = this.clock.monotonicMs() - this.idleTimeoutMs;
    const idle: Activation[] = [];
    for (const activation of this.activations.values()) {
      if (!activation.running && activation.queue === null && activation.lastActiveMs <= cutoffMs)
        idle.push(activation);
    }
    for (const activation of idle) {
      this.remove(activation);
      await this.placement.release(activation.agentId, activation.token);
    }
    return idle.length;
  }

  /** Agent id → fencing token of every activation that has taken one (for lease renewal). */
  heldLeases(): Map<string, number> {
    const held = new Map<string, number>();
    for (const a of this.activations.values()) if (a.token > 0) held.set(a.agentId, a.token);
    return held;
  }

  /**
   * Ends the activation holding `token` because its lease is gone: at once when idle, else after
   * its running op (whose commits the fence rejects anyway); queued ops start a fresh activation.
   * The lease is not released: it is no longer this node's.
   */
  evict(agentId: string, token: number): void {
    const activation = this.activations.get(agentId);
    if (activation === undefined || activation.token !== token) return;
    if (activation.running) {
      activation.deactivating = true;
      activation.leaseLost = true;
      return;
    }
    this.remove(activation);
  }

  /** Whether the agent has an activation here holding a lease. */
  isHeld(agentId: string): boolean {
    const a = this.activations.get(agentId);
    return a !== undefined && a.token > 0 && !a.deactivating;
  }

  isActive(agentId: string): boolean {
    return this.activations.has(agentId);
  }

  /** The mailbox depth of one agent (queued plus running). */
  mailboxDepth(agentId: string): number {
    const a = this.activations.get(agentId);
    return a === undefined ? 0 : (a.queue?.length ?? 0) + (a.running ? 1 : 0);
  }

  stats(): RuntimeStats {
    let mailboxDepthTotal = 0;
    for (const a of this.activations.values())
      mailboxDepthTotal += (a.queue?.length ?? 0) + (a.running ? 1 : 0);
    return { activeCount: this.activations.size, mailboxDepthTotal, ...this.counters };
  }

  /** Stops taking ops, waits for running ones to finish, and releases every activation. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.sweepTimer?.cancel();
    for (;;) {
      const busy = [...this.activations.values()].filter((a) => a.running);
      if (busy.length === 0) break;
      await this.clock.sleepMs(5);
    }
    for (const activation of [...this.activations.values()]) {
      this.remove(activation);
      if (activation.token > 0) await this.placement.release(activation.agentId, activation.token);
    }
  }
}
