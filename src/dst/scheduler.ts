// The one source of time in a simulation: a priority queue of events ordered by simulated time,
// ties broken by the order they were scheduled. Simulated time moves only when the scheduler pops
// the next event, so a run is a pure function of its seed. Between two events every microtask the
// last one started is allowed to settle (one real macrotask turn: the code under test does no real
// I/O and sets no real timers, so nothing else can be waiting), which keeps the order of events and
// their effects identical from run to run.
import { assert } from "../core/assert.ts";
import type { Clock, Timer } from "../core/clock.ts";

/** A run that schedules more events than this is looping: a bug in the harness or the code. */
export const SIM_EVENTS_MAX = 2_000_000;
/** Events waiting at once; more means something schedules without bound. */
export const SIM_EVENTS_PENDING_MAX = 100_000;
/** The wall clock of every simulated node starts here (2023-11-14T22:13:20Z), skew aside. */
export const SIM_EPOCH_MS = 1_700_000_000_000;

interface SimEvent {
  atMs: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** Resolves after the current macrotask: every microtask queued so far has run by then. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class SimScheduler {
  private heap: SimEvent[] = [];
  private seq = 0;
  private currentMs = 0;
  eventsCount = 0;

  /** Simulated milliseconds since the start of the run. */
  nowMs(): number {
    return this.currentMs;
  }

  pendingCount(): number {
    return this.heap.length;
  }

  schedule(delayMs: number, fn: () => void): Timer {
    assert(Number.isFinite(delayMs), "event delay must be finite");
    const event: SimEvent = {
      atMs: this.currentMs + Math.max(0, Math.round(delayMs)),
      seq: this.seq++,
      fn,
      cancelled: false,
    };
    this.push(event);
    assert(this.heap.length <= SIM_EVENTS_PENDING_MAX, "too many simulated events pending");
    return {
      cancel: () => {
        event.cancelled = true;
      },
    };
  }

  /** A promise resolved `delayMs` of simulated time from now. */
  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.schedule(delayMs, resolve));
  }

  /**
   * Runs events in order until none is left, `untilMs` is passed, or `stop()` says so. Returns
   * whether events remain.
   */
  async run(options: { untilMs?: number; stop?: () => boolean } = {}): Promise<boolean> {
    const untilMs = options.untilMs ?? Number.POSITIVE_INFINITY;
    await settle();
    for (;;) {
      if (options.stop?.()) return this.heap.length > 0;
      const next = this.heap[0];
      if (next === undefined) return false;
      if (next.atMs > untilMs) {
        this.currentMs = untilMs;
        return true;
      }
      this.pop();
      if (next.cancelled) continue;
      assert(next.atMs >= this.currentMs, "simulated time went backwards");
      this.currentMs = next.atMs;
      this.eventsCount++;
      assert(this.eventsCount <= SIM_EVENTS_MAX, `more than ${SIM_EVENTS_MAX} simulated events`);
      next.fn();
      await settle();
    }
  }

  private less(a: SimEvent, b: SimEvent): boolean {
    return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
  }

  private push(event: SimEvent): void {
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  private pop(): SimEvent | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && this.less(heap[left]!, heap[smallest]!)) smallest = left;
      if (right < heap.length && this.less(heap[right]!, heap[smallest]!)) smallest = right;
      if (smallest === i) break;
      [heap[i], heap[smallest]] = [heap[smallest]!, heap[i]!];
      i = smallest;
    }
    return top;
  }
}

/**
 * One simulated node's clock. Monotonic time is the scheduler's; the wall clock adds a per-node
 * offset that skew and jump faults move (a jump may go backwards: wall clocks do). When the node
 * dies its timers are cancelled and new ones never fire, as a killed process's would not.
 */
export class NodeClock implements Clock {
  private readonly timers = new Set<Timer>();
  private dead = false;
  wallOffsetMs = 0;

  constructor(private readonly scheduler: SimScheduler) {}

  nowMs(): number {
    return SIM_EPOCH_MS + this.scheduler.nowMs() + this.wallOffsetMs;
  }

  monotonicMs(): number {
    return this.scheduler.nowMs();
  }

  sleepMs(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = this.setTimer(ms, () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
      const onAbort = () => {
        timer.cancel();
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  setTimer(ms: number, fn: () => void): Timer {
    if (this.dead) return { cancel: () => {} };
    const inner = this.scheduler.schedule(ms, () => {
      this.timers.delete(timer);
      if (!this.dead) fn();
    });
    const timer: Timer = {
      cancel: () => {
        inner.cancel();
        this.timers.delete(timer);
      },
    };
    this.timers.add(timer);
    return timer;
  }

  /** The process is gone: nothing it scheduled will run. */
  kill(): void {
    this.dead = true;
    for (const timer of this.timers) timer.cancel();
    this.timers.clear();
  }
}
