// Runs a dead turn left `created` or `running` (its process was killed, or its node lost the
// agent's lease) would stay so forever: nothing else ever finishes them. The agent's next
// activation marks them failed, under its own fencing token, so only the lease holder does it and
// a turn still alive elsewhere is fenced out. A starting node activates the agents that have such
// runs, so a single node's runs read as failed as soon as it is back.
import { RUNS_RECOVERED_AT_START_MAX, RUNS_RECOVERED_PER_ACTIVATION_MAX } from "../core/constants.ts";
import type { Env } from "../core/env.ts";
import type { Runtime, TurnContext } from "../runtime/runtime.ts";
import type { Mutation, RunRecord } from "../storage/types.ts";

/** The error of a run its server stopped running; a retry with its Idempotency-Key resumes it. */
export const RUN_INTERRUPTED_ERROR =
  "interrupted: the server running this run stopped (a crash, a kill or a lost lease) before it finished; " +
  "resend the request with the same Idempotency-Key to resume it";

export function interruptedRun(run: RunRecord, nowMs: number): RunRecord {
  return {
    ...run,
    status: "failed",
    stop_reason: "error",
    error: RUN_INTERRUPTED_ERROR,
    completed_at_ms: nowMs,
  };
}

/** Whether a run failed only because its server stopped (so it may be resumed). */
export function wasInterrupted(run: RunRecord): boolean {
  return run.status === "failed" && run.error === RUN_INTERRUPTED_ERROR;
}

export class RunRecovery {
  constructor(
    private readonly env: Env,
    private readonly runtime: Runtime,
    /** Whether a turn of this run is in flight on this node (those are not dead). */
    private readonly isLive: (runId: string) => boolean,
  ) {}

  /** The activation hook: marks the agent's dead runs failed, in one fenced commit. */
  async atActivation(ctx: TurnContext): Promise<void> {
    const { storage, clock } = this.env;
    const unfinished = await storage.listUnfinishedRuns(ctx.agentId, RUNS_RECOVERED_PER_ACTIVATION_MAX);
    const dead = unfinished.filter((run) => !this.isLive(run.id));
    if (dead.length === 0) return;
    const nowMs = clock.nowMs();
    await storage.commit(
      dead.map((run): Mutation => ({ op: "put_run", run: interruptedRun(run, nowMs) })),
      { fence: ctx.fence },
    );
  }

  /**
   * At start: activates, one at a time, each agent with unfinished runs (its activation marks them
   * failed). An agent another live node holds is left to that node. Returns how many were activated.
   */
  async atStart(): Promise<number> {
    const runs = await this.env.storage.listUnfinishedRuns(undefined, RUNS_RECOVERED_AT_START_MAX);
    let activated = 0;
    for (const agentId of new Set(runs.map((r) => r.agent_id))) {
      const ok = await this.runtime.invoke(agentId, async () => true, "recover_runs").catch(() => false);
      if (ok) activated++;
    }
    return activated;
  }
}
