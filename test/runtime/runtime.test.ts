// The actor runtime: activation from storage, one op at a time per agent, agents in parallel,
// bounded mailboxes, idle deactivation, fencing.
import { describe, expect, it } from "vitest";
import { ManualClock, SystemClock } from "../../src/core/clock.ts";
import { KelpieError } from "../../src/core/errors.ts";
import { LocalPlacement } from "../../src/runtime/placement.ts";
import { Runtime } from "../../src/runtime/runtime.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { storedAgent } from "../support/records.ts";

async function setup(
  count: number,
  options: { clock?: ManualClock | SystemClock; mailboxDepthMax?: number } = {},
) {
  const storage = new MemoryStorage();
  const ids = Array.from(
    { length: count },
    (_, i) => `agent-00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
  );
  await storage.commit(ids.map((id) => ({ op: "put_agent" as const, agent: storedAgent(id), create: true })));
  const clock = options.clock ?? new SystemClock();
  const runtime = new Runtime({
    clock,
    storage,
    placement: new LocalPlacement(storage),
    idleTimeoutMs: 1_000,
    ...(options.mailboxDepthMax ? { mailboxDepthMax: options.mailboxDepthMax } : {}),
  });
  return { storage, runtime, ids, clock };
}

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("runtime", () => {
  it("runs 200 agents concurrently while ops on one agent never overlap", async () => {
    const { runtime, ids } = await setup(200);
    const gate = deferred();
    const running = new Map<string, number>();
    let overlapSeen = false;
    let concurrentMax = 0;
    let concurrentNow = 0;
    const op = (id: string) => async () => {
      const n = (running.get(id) ?? 0) + 1;
      running.set(id, n);
      if (n > 1) overlapSeen = true;
      concurrentNow++;
      concurrentMax = Math.max(concurrentMax, concurrentNow);
      await gate.promise; // an external promise: blocks only this agent
      concurrentNow--;
      running.set(id, running.get(id)! - 1);
      return id;
    };
    // Three ops per agent: 600 ops in all.
    const results = ids.flatMap((id) => [1, 2, 3].map(() => runtime.invoke(id, op(id))));
    // Let every agent reach its first op, then check all 200 are inside an op at once.
    for (let i = 0; i < 50 && concurrentNow < 200; i++) await new Promise((r) => setImmediate(r));
    expect(concurrentNow).toBe(200);
    gate.resolve();
    const done = await Promise.all(results);
    expect(done).toHaveLength(600);
    expect(overlapSeen).toBe(false);
    expect(concurrentMax).toBe(200);
    expect(runtime.stats().activationsTotal).toBe(200);
  });

  it("one slow agent does not block another", async () => {
    const { runtime, ids } = await setup(2);
    const never = deferred();
    void runtime.invoke(ids[0]!, () => never.promise);
    await expect(runtime.invoke(ids[1]!, async () => "fast")).resolves.toBe("fast");
    expect(runtime.mailboxDepth(ids[0]!)).toBe(1);
    never.resolve();
  });

  it("keeps per-agent order", async () => {
    const { runtime, ids } = await setup(1);
    const seen: number[] = [];
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        runtime.invoke(ids[0]!, async () => {
          await new Promise((r) => setImmediate(r));
          seen.push(i);
        }),
      ),
    );
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it("rejects unknown agents with AGENT_NOT_FOUND and keeps no activation", async () => {
    const { runtime } = await setup(0);
    const err = await runtime
      .invoke("agent-00000000-0000-4000-8000-999999999999", async () => 1)
      .catch((e) => e);
    expect(err).toBeInstanceOf(KelpieError);
    expect(err.code).toBe("AGENT_NOT_FOUND");
    expect(runtime.stats().activeCount).toBe(0);
  });

  it("a full mailbox is a MAILBOX_FULL error, not unbounded memory", async () => {
    const { runtime, ids } = await setup(1, { mailboxDepthMax: 3 });
    const gate = deferred();
    const accepted = [1, 2, 3].map(() => runtime.invoke(ids[0]!, () => gate.promise));
    const err = await runtime.invoke(ids[0]!, async () => 0).catch((e) => e);
    expect(err.code).toBe("MAILBOX_FULL");
    expect(err.status).toBe(429);
    gate.resolve();
    await Promise.all(accepted);
    await expect(runtime.invoke(ids[0]!, async () => "ok")).resolves.toBe("ok");
  });

  it("deactivates idle agents on the clock and reactivates with a newer fencing token", async () => {
    const clock = new ManualClock();
    const { runtime, ids, storage } = await setup(1, { clock });
    runtime.start();
    const first = await runtime.invoke(ids[0]!, async (ctx) => ctx.fencingToken);
    expect(runtime.isActive(ids[0]!)).toBe(true);
    clock.advanceMs(500);
    await new Promise((r) => setImmediate(r));
    expect(runtime.isActive(ids[0]!)).toBe(true);
    clock.advanceMs(2_000);
    await new Promise((r) => setImmediate(r));
    expect(runtime.isActive(ids[0]!)).toBe(false);
    expect(runtime.stats().deactivationsTotal).toBe(1);
    const second = await runtime.invoke(ids[0]!, async (ctx) => ctx.fencingToken);
    expect(second).toBeGreaterThan(first);
    expect(await storage.currentFence(ids[0]!)).toBe(second);
    await runtime.stop();
  });

  it("a commit fenced by a newer token fails and ends the activation", async () => {
    const { runtime, ids, storage } = await setup(1);
    const id = ids[0]!;
    await runtime.invoke(id, async () => {});
    await storage.acquireFence(id); // another owner took over
    const err = await runtime
      .invoke(id, (ctx) =>
        storage.commit([{ op: "put_agent", agent: storedAgent(id), create: false }], { fence: ctx.fence }),
      )
      .catch((e) => e);
    expect(err.code).toBe("FENCED");
    expect(runtime.isActive(id)).toBe(false);
    // The next op activates afresh with the newest token and commits.
    await runtime.invoke(id, (ctx) =>
      storage.commit([{ op: "put_agent", agent: storedAgent(id), create: false }], { fence: ctx.fence }),
    );
  });
});
