// The turn gate on its own: one turn per agent in arrival order, a bounded queue whose overflow is
// AGENT_BUSY with a Retry-After from how long turns take, cancellation out of the queue, and entry
// without queueing for a turn its agent's holder waits on (along its chain, or across chains).
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.ts";
import { isKelpieError, KelpieError } from "../../src/core/errors.ts";
import { TurnGate, type TurnPass } from "../../src/runtime/turn-gate.ts";

const A = "agent-a";
const B = "agent-b";

function admission(
  agentId: string,
  runId: string,
  chain: string[] = [],
  signal = new AbortController().signal,
) {
  return { agentId, runId, chain, signal };
}

/** Whether a promise has settled, after pending callbacks ran. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  await new Promise((r) => setImmediate(r));
  return done;
}

describe("turn gate", () => {
  it("lets one turn per agent in, the rest in arrival order, and other agents at once", async () => {
    const gate = new TurnGate(new ManualClock(), 8);
    const first = await gate.admit(admission(A, "run-1"));
    const second = gate.admit(admission(A, "run-2"));
    const third = gate.admit(admission(A, "run-3"));
    const other = gate.admit(admission(B, "run-b"));
    expect(await settled(other)).toBe(true);
    expect(await settled(second)).toBe(false);
    expect(gate.queued(A)).toBe(2);
    first.release();
    first.release(); // twice is harmless
    expect(await settled(second)).toBe(true);
    expect(await settled(third)).toBe(false);
    (await second).release();
    (await third).release();
    (await other).release();
    expect(gate.stats()).toMatchObject({ agentsHeld: 0, turnsQueued: 0 });
  });

  it("refuses a turn past the bound at once with AGENT_BUSY and a Retry-After from the turns' mean length", async () => {
    const clock = new ManualClock();
    const gate = new TurnGate(clock, 1);
    for (let i = 0; i < 20; i++) {
      const pass = await gate.admit(admission(A, `run-${i}`));
      clock.advanceMs(10_000);
      pass.release();
    }
    const held = await gate.admit(admission(A, "run-held"));
    void gate.admit(admission(A, "run-queued"));
    let refused: unknown;
    try {
      void gate.admit(admission(A, "run-over"));
    } catch (err) {
      refused = err;
    }
    expect(isKelpieError(refused)).toBe(true);
    const busy = refused as KelpieError;
    expect(busy.code).toBe("AGENT_BUSY");
    expect(busy.status).toBe(429);
    // Two turns ahead of it at about 10 s each.
    expect(busy.retryAfterS).toBeGreaterThanOrEqual(19);
    expect(busy.retryAfterS).toBeLessThanOrEqual(20);
    expect(busy.message).toContain("1 more are queued (max 1)");
    expect(gate.stats().agentBusyTotal).toBe(1);
    held.release();
  });

  it("drops a cancelled turn from the queue", async () => {
    const gate = new TurnGate(new ManualClock(), 4);
    const held = await gate.admit(admission(A, "run-1"));
    const cancel = new AbortController();
    const dropped = gate.admit(admission(A, "run-2", [], cancel.signal));
    const next = gate.admit(admission(A, "run-3"));
    cancel.abort(new KelpieError("CANCELLED", "run-2 was cancelled"));
    await expect(dropped).rejects.toMatchObject({ code: "CANCELLED" });
    expect(gate.queued(A)).toBe(1);
    held.release();
    expect(await settled(next)).toBe(true);
  });

  it("lets a call back into a suspended caller in along its chain (A asks B, B asks A)", async () => {
    const gate = new TurnGate(new ManualClock(), 4);
    const a1 = await gate.admit(admission(A, "run-a1"));
    const b1 = await gate.admit(admission(B, "run-b1", ["run-a1"]));
    const back = gate.admit(admission(A, "run-a2", ["run-a1", "run-b1"]));
    expect(await settled(back)).toBe(true);
    const pass: TurnPass = await back;
    expect(pass.reentrant).toBe(true);
    pass.release(); // holds nothing
    const stranger = gate.admit(admission(A, "run-x"));
    expect(await settled(stranger)).toBe(false);
    b1.release();
    a1.release();
    expect(await settled(stranger)).toBe(true);
  });

  it("closes a wait cycle across chains: A's turn asks B while B's turn asks A", async () => {
    const gate = new TurnGate(new ManualClock(), 4);
    const a1 = await gate.admit(admission(A, "run-a1"));
    const b1 = await gate.admit(admission(B, "run-b1"));
    // A's call waits behind B's turn...
    const aCallsB = gate.admit(admission(B, "run-b2", ["run-a1"]));
    expect(await settled(aCallsB)).toBe(false);
    // ...so B's call into A would wait on itself: it enters A, inside A's suspended turn.
    const bCallsA = gate.admit(admission(A, "run-a2", ["run-b1"]));
    expect(await settled(bCallsA)).toBe(true);
    expect((await bCallsA).reentrant).toBe(true);
    b1.release();
    expect(await settled(aCallsB)).toBe(true);
    (await aCallsB).release();
    a1.release();
    expect(gate.stats()).toMatchObject({ agentsHeld: 0, turnsQueued: 0, turnsReentrantTotal: 1 });
  });

  it("does not let a turn in whose chain no holder waits on", async () => {
    const gate = new TurnGate(new ManualClock(), 4);
    const a1 = await gate.admit(admission(A, "run-a1"));
    // An async send from B's earlier turn: nothing waits on it.
    const late = gate.admit(admission(A, "run-a2", []));
    expect(await settled(late)).toBe(false);
    a1.release();
    expect(await settled(late)).toBe(true);
  });
});
