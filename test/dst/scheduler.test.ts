// The simulation's scheduler and node clocks: events run in time order (ties in scheduling order),
// simulated time moves only between events, promise chains settle before the next event, and a
// killed node's timers never fire.
import { describe, expect, it } from "vitest";
import { NodeClock, SIM_EPOCH_MS, SimScheduler } from "../../src/dst/scheduler.ts";

describe("SimScheduler", () => {
  it("runs events by time, ties in the order they were scheduled, and settles promises between them", async () => {
    const scheduler = new SimScheduler();
    const seen: string[] = [];
    scheduler.schedule(20, () => seen.push(`b@${scheduler.nowMs()}`));
    scheduler.schedule(10, () => {
      seen.push(`a@${scheduler.nowMs()}`);
      void Promise.resolve()
        .then(() => Promise.resolve())
        .then(() => seen.push(`a-chain@${scheduler.nowMs()}`));
    });
    scheduler.schedule(20, () => seen.push(`c@${scheduler.nowMs()}`));
    const cancelled = scheduler.schedule(15, () => seen.push("cancelled"));
    cancelled.cancel();
    expect(await scheduler.run()).toBe(false);
    expect(seen).toEqual(["a@10", "a-chain@10", "b@20", "c@20"]);
    expect(scheduler.nowMs()).toBe(20);
  });

  it("stops at a time bound and leaves later events queued", async () => {
    const scheduler = new SimScheduler();
    const seen: number[] = [];
    for (const at of [5, 50, 500]) scheduler.schedule(at, () => seen.push(at));
    expect(await scheduler.run({ untilMs: 100 })).toBe(true);
    expect(seen).toEqual([5, 50]);
    expect(scheduler.nowMs()).toBe(100);
  });
});

describe("NodeClock", () => {
  it("keeps monotonic time on the scheduler, moves only its wall clock, and dies with its node", async () => {
    const scheduler = new SimScheduler();
    const clock = new NodeClock(scheduler);
    const fired: string[] = [];
    clock.setTimer(10, () => fired.push("first"));
    clock.setTimer(30, () => fired.push("after death"));
    void clock.sleepMs(20).then(() => fired.push("slept"));
    scheduler.schedule(25, () => clock.kill());
    clock.wallOffsetMs = -3_600_000;
    await scheduler.run();
    expect(fired).toEqual(["first", "slept"]);
    expect(clock.monotonicMs()).toBe(scheduler.nowMs());
    expect(clock.nowMs()).toBe(SIM_EPOCH_MS + scheduler.nowMs() - 3_600_000);
    clock.setTimer(1, () => fired.push("never"));
    await scheduler.run();
    expect(fired).toHaveLength(2);
  });
});
