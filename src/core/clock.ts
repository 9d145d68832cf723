// Time reaches runtime, agent, memory and cluster code only through a Clock, so the simulator
// can replace it. The system clock lives here and nowhere else.
import { AssertionError } from "./assert.ts";

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Wall-clock milliseconds since the epoch (for timestamps the user sees). */
  nowMs(): number;
  /** Monotonic milliseconds (for durations and timeouts); never goes backwards. */
  monotonicMs(): number;
  sleepMs(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls `fn` after `ms`; the returned timer does not keep the process alive. */
  setTimer(ms: number, fn: () => void): Timer;
}

export class SystemClock implements Clock {
  private monotonicLastMs = 0;

  nowMs(): number {
    return Date.now();
  }

  monotonicMs(): number {
    const now = performance.now();
    if (now < this.monotonicLastMs) throw new AssertionError("monotonic clock went backwards");
    this.monotonicLastMs = now;
    return now;
  }

  sleepMs(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        clearTimeout(handle);
        reject(signal!.reason);
      };
      const handle = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  setTimer(ms: number, fn: () => void): Timer {
    const handle = setTimeout(fn, ms);
    handle.unref();
    return { cancel: () => clearTimeout(handle) };
  }
}

interface PendingTimer {
  atMs: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** A clock that moves only when told: for tests and deterministic simulation. */
export class ManualClock implements Clock {
  private currentMs: number;
  private timers: PendingTimer[] = [];
  private seq = 0;

  constructor(startMs = 1_700_000_000_000) {
    this.currentMs = startMs;
  }

  nowMs(): number {
    return this.currentMs;
  }

  monotonicMs(): number {
    return this.currentMs;
  }

  sleepMs(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = this.setTimer(ms, resolve);
      signal?.addEventListener(
        "abort",
        () => {
          timer.cancel();
          reject(signal.reason);
        },
        { once: true },
      );
    });
  }

  setTimer(ms: number, fn: () => void): Timer {
    const timer: PendingTimer = {
      atMs: this.currentMs + Math.max(0, ms),
      seq: this.seq++,
      fn,
      cancelled: false,
    };
    this.timers.push(timer);
    return { cancel: () => (timer.cancelled = true) };
  }

  /** Advances time, firing due timers in (time, creation) order. */
  advanceMs(ms: number): void {
    const targetMs = this.currentMs + ms;
    for (;;) {
      this.timers = this.timers.filter((t) => !t.cancelled);
      this.timers.sort((a, b) => a.atMs - b.atMs || a.seq - b.seq);
      const next = this.timers[0];
      if (next === undefined || next.atMs > targetMs) break;
      this.timers.shift();
      this.currentMs = next.atMs;
      next.fn();
    }
    this.currentMs = targetMs;
  }

  pendingTimersCount(): number {
    return this.timers.filter((t) => !t.cancelled).length;
  }
}
