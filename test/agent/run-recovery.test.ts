// Run recovery at activation: the new activation marks the agent's dead runs failed in one commit
// under its own fencing token; runs in flight on this node are left alone; an activation whose
// token is stale (another node holds the agent now) changes nothing; a hook that fails fails the
// activation and releases what it took.
import { describe, expect, it } from "vitest";
import { RUN_INTERRUPTED_ERROR, RunRecovery, wasInterrupted } from "../../src/agent/run-recovery.ts";
import { SystemClock } from "../../src/core/clock.ts";
import { SystemRng } from "../../src/core/rng.ts";
import { LocalPlacement } from "../../src/runtime/placement.ts";
import { Runtime, type TurnContext } from "../../src/runtime/runtime.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { RunRecord } from "../../src/storage/types.ts";
import { storedAgent } from "../support/records.ts";

const AGENT = "agent-00000000-0000-4000-8000-0000000000a1";

const run = (id: string, status: RunRecord["status"]): RunRecord => ({
  id,
  agent_id: AGENT,
  status,
  stop_reason: null,
  background: false,
  metadata: {},
  request_config: null,
  usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, step_count: 1 },
  error: null,
  created_at_ms: 1,
  completed_at_ms: null,
});

async function setup(live: Set<string>) {
  const storage = new MemoryStorage();
  await storage.commit([{ op: "put_agent", agent: storedAgent(AGENT), create: true }]);
  await storage.commit(
    ["run-dead", "run-queued", "run-live", "run-done"].map((id) => ({
      op: "put_run" as const,
      run: run(id, id === "run-queued" ? "created" : id === "run-done" ? "completed" : "running"),
    })),
  );
  const env = { clock: new SystemClock(), rng: new SystemRng(), storage };
  const runtime = new Runtime({ clock: env.clock, storage, placement: new LocalPlacement(storage) });
  const recovery = new RunRecovery(env, runtime, (id) => live.has(id));
  return { storage, runtime, recovery };
}

const status = async (storage: MemoryStorage, id: string) => (await storage.getRun(id))!.status;

describe("run recovery", () => {
  it("marks dead runs failed at activation and leaves live and finished ones", async () => {
    const { storage, runtime, recovery } = await setup(new Set(["run-live"]));
    runtime.onActivate((ctx) => recovery.atActivation(ctx));
    await runtime.invoke(AGENT, async () => {});
    for (const id of ["run-dead", "run-queued"]) {
      const r = (await storage.getRun(id))!;
      expect(r).toMatchObject({ status: "failed", stop_reason: "error", error: RUN_INTERRUPTED_ERROR });
      expect(wasInterrupted(r)).toBe(true);
    }
    expect(await status(storage, "run-live")).toBe("running");
    expect(await status(storage, "run-done")).toBe("completed");
    await runtime.stop();
  });

  it("changes nothing under a stale fencing token", async () => {
    const { storage, recovery } = await setup(new Set());
    const stale = await storage.acquireFence(AGENT);
    await storage.acquireFence(AGENT); // another activation (node) took the agent since
    const ctx: TurnContext = {
      agentId: AGENT,
      fencingToken: stale,
      fence: { agent_id: AGENT, token: stale },
      deactivateAfter: () => {},
    };
    await expect(recovery.atActivation(ctx)).rejects.toMatchObject({ code: "FENCED" });
    expect(await status(storage, "run-dead")).toBe("running");
  });

  it("activates, at start, each agent that has unfinished runs", async () => {
    const { storage, runtime, recovery } = await setup(new Set());
    runtime.onActivate((ctx) => recovery.atActivation(ctx));
    expect(await recovery.atStart()).toBe(1);
    expect((await storage.listUnfinishedRuns(undefined, 10)).map((r) => r.id)).toEqual([]);
    await runtime.stop();
  });

  it("fails the activation when the hook fails, and the next op activates afresh", async () => {
    const { runtime } = await setup(new Set());
    let calls = 0;
    runtime.onActivate(async () => {
      calls++;
      if (calls === 1) throw new Error("hook failed");
    });
    await expect(runtime.invoke(AGENT, async (ctx) => ctx.fencingToken)).rejects.toThrow("hook failed");
    expect(runtime.isActive(AGENT)).toBe(false);
    expect(await runtime.invoke(AGENT, async (ctx) => ctx.fencingToken)).toBe(2);
    expect(runtime.stats()).toMatchObject({ activationsTotal: 1, activeCount: 1 });
    await runtime.stop();
  });
});
