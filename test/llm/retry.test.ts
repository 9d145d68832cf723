// The retry policy on its own, with time under test control: which failures are retried, how
// long it waits (full jitter within the exponential ceiling; retry-after honoured but capped), that
// an abort while waiting cancels, and that a stream is retried only before its first event.
import { describe, expect, it } from "vitest";
import { type Clock, ManualClock, type Timer } from "../../src/core/clock.ts";
import { KelpieError } from "../../src/core/errors.ts";
import { SeededRng } from "../../src/core/rng.ts";
import { LlmCallError, type LlmFailure } from "../../src/llm/errors.ts";
import {
  backoffDelayMs,
  LLM_ATTEMPTS_MAX,
  LLM_BACKOFF_MS_BASE,
  LLM_BACKOFF_MS_MAX,
  LLM_RETRY_AFTER_MS_MAX,
  type RetryOptions,
  retryAfterMs,
  streamWithRetries,
  withRetries,
} from "../../src/llm/retry.ts";
import { rejectionOf } from "./support.ts";

/**
 * A clock whose sleeps end on the next turn of the event loop, whatever their length, and are
 * remembered: backoff costs nothing, yet a stream event that is already due still wins the race
 * against the stream's idle timer.
 */
class InstantClock implements Clock {
  readonly sleepsMs: number[] = [];
  nowMs(): number {
    return 1_700_000_000_000;
  }
  monotonicMs(): number {
    return 0;
  }
  sleepMs(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleepsMs.push(ms);
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const handle = setImmediate(resolve);
      signal?.addEventListener("abort", () => {
        clearImmediate(handle);
        reject(signal.reason);
      });
    });
  }
  setTimer(_ms: number, _fn: () => void): Timer {
    return { cancel: () => {} };
  }
}

function options(clock: Clock, signal = new AbortController().signal): RetryOptions {
  return {
    clock,
    rng: new SeededRng(42),
    attemptsMax: 4,
    backoffMsBase: 100,
    backoffMsMax: 250,
    retryAfterMsMax: 1_000,
    signal,
    provider: "test",
  };
}

const status = (s: number, headers: Partial<Extract<LlmFailure, { kind: "status" }>> = {}): LlmFailure => ({
  kind: "status",
  status: s,
  ...headers,
});
const fail = (failure: LlmFailure) => new LlmCallError("test", failure, "boom");

describe("retry policy", () => {
  it("has sane named defaults", () => {
    expect(LLM_ATTEMPTS_MAX).toBeGreaterThanOrEqual(2);
    expect(LLM_BACKOFF_MS_BASE).toBeLessThanOrEqual(LLM_BACKOFF_MS_MAX);
    expect(LLM_RETRY_AFTER_MS_MAX).toBeGreaterThan(0);
  });

  it("retries 408, 409, 429, 5xx, timeouts and connection errors", async () => {
    const failures: LlmFailure[] = [status(408), status(409), status(429), status(503), { kind: "timeout" }];
    for (const failure of [...failures, { kind: "connection" } as const]) {
      let calls = 0;
      const clock = new InstantClock();
      const value = await withRetries(async () => {
        calls++;
        if (calls === 1) throw fail(failure);
        return "ok";
      }, options(clock));
      expect(value).toBe("ok");
      expect(calls).toBe(2);
    }
  });

  it("does not retry other statuses, protocol errors or our own bugs", async () => {
    for (const err of [
      fail(status(400)),
      fail(status(404)),
      fail({ kind: "protocol" }),
      new TypeError("bug"),
    ]) {
      let calls = 0;
      const thrown = await withRetries(async () => {
        calls++;
        throw err;
      }, options(new InstantClock())).catch((e: unknown) => e);
      expect(thrown).toBe(err);
      expect(calls).toBe(1);
    }
  });

  it("does not retry LLM_NOT_CONFIGURED", async () => {
    let calls = 0;
    const err = new KelpieError("LLM_NOT_CONFIGURED", "set OPENAI_API_KEY");
    await expect(
      withRetries(async () => {
        calls++;
        throw err;
      }, options(new InstantClock())),
    ).rejects.toBe(err);
    expect(calls).toBe(1);
  });

  it("reports the last failure with the attempts made", async () => {
    const clock = new InstantClock();
    const err = await withRetries(async () => {
      throw fail(status(500));
    }, options(clock)).catch((e: unknown) => e as LlmCallError);
    expect(err).toBeInstanceOf(LlmCallError);
    expect(err.code).toBe("LLM_ERROR");
    expect(err.message).toBe("test 500: boom after 4 attempts");
    expect(err.attemptsCount).toBe(4);
    expect(clock.sleepsMs).toHaveLength(3);
  });

  it("waits a full-jitter share of an exponential ceiling", async () => {
    const clock = new InstantClock();
    await withRetries(async () => {
      throw fail(status(502));
    }, options(clock)).catch(() => {});
    const ceilings = [100, 200, 250]; // base 100 doubling, capped at 250
    clock.sleepsMs.forEach((ms, i) => {
      expect(ms).toBeGreaterThanOrEqual(0);
      expect(ms).toBeLessThan(ceilings[i]!);
    });
    // The same seed gives the same waits.
    const again = new InstantClock();
    await withRetries(async () => {
      throw fail(status(502));
    }, options(again)).catch(() => {});
    expect(again.sleepsMs).toEqual(clock.sleepsMs);
  });

  it("honours retry-after-ms, retry-after seconds and dates, capped", () => {
    const base = { rng: new SeededRng(1), backoffMsBase: 100, backoffMsMax: 250, retryAfterMsMax: 1_000 };
    const clock = new InstantClock();
    const opts = { ...base, clock };
    expect(backoffDelayMs(1, status(429, { retryAfterMsHeader: "120" }), opts)).toBe(120);
    expect(backoffDelayMs(1, status(429, { retryAfterHeader: "0.5" }), opts)).toBe(500);
    expect(backoffDelayMs(1, status(429, { retryAfterHeader: "60" }), opts)).toBe(1_000);
    expect(backoffDelayMs(1, status(429, { retryAfterHeader: "0" }), opts)).toBe(0);
    const inTwoSeconds = new Date(clock.nowMs() + 2_000).toUTCString();
    expect(retryAfterMs(status(503, { retryAfterHeader: inTwoSeconds }), clock.nowMs())).toBe(2_000);
    expect(retryAfterMs(status(503, { retryAfterHeader: "soon" }), clock.nowMs())).toBeUndefined();
    expect(retryAfterMs({ kind: "timeout" }, clock.nowMs())).toBeUndefined();
  });

  it("cancels while waiting to retry", async () => {
    const clock = new ManualClock();
    const abort = new AbortController();
    const pending = withRetries(
      async () => {
        throw fail(status(429, { retryAfterHeader: "1" }));
      },
      options(clock, abort.signal),
    );
    await new Promise((resolve) => setImmediate(resolve));
    expect(clock.pendingTimersCount()).toBe(1);
    abort.abort();
    const err = await pending.catch((e: unknown) => e as KelpieError);
    expect(err.code).toBe("CANCELLED");
  });
});

describe("stream retries", () => {
  const streamOptions = (clock: Clock, idleMs = 1_000) => ({
    ...options(clock),
    streamIdleTimeoutMs: idleMs,
  });

  it("retries a stream that fails before its first event", async () => {
    let opened = 0;
    const events: string[] = [];
    for await (const e of streamWithRetries(async function* () {
      opened++;
      if (opened < 3) throw fail(status(500));
      yield "a";
      yield "b";
    }, streamOptions(new InstantClock()))) {
      events.push(e);
    }
    expect(opened).toBe(3);
    expect(events).toEqual(["a", "b"]);
  });

  it("does not retry once an event has been yielded", async () => {
    let opened = 0;
    const events: string[] = [];
    const err = await rejectionOf<LlmCallError>(
      (async () => {
        for await (const e of streamWithRetries(async function* () {
          opened++;
          yield "a";
          throw fail(status(500));
        }, streamOptions(new InstantClock()))) {
          events.push(e);
        }
      })(),
    );
    expect(opened).toBe(1);
    expect(events).toEqual(["a"]);
    expect(err.message).toBe("test 500: boom");
  });

  it("times out a silent stream and aborts it", async () => {
    const clock = new ManualClock();
    let seenSignal: AbortSignal | undefined;
    const stream = streamWithRetries(
      (_attempt, signal) => {
        seenSignal = signal;
        return (async function* () {
          await new Promise((_resolve, reject) =>
            signal.addEventListener("abort", () => reject(signal.reason)),
          );
          yield "never";
        })();
      },
      { ...streamOptions(clock, 500), attemptsMax: 1 },
    );
    const next = stream.next();
    await new Promise((resolve) => setImmediate(resolve));
    clock.advanceMs(500);
    const err = await rejectionOf<LlmCallError>(next);
    expect(err.message).toBe("test timeout: no stream event within 500 ms");
    expect(seenSignal?.aborted).toBe(true);
  });

  it("stops the underlying stream when the consumer stops early", async () => {
    let finished = false;
    for await (const e of streamWithRetries(async function* () {
      try {
        yield 1;
        yield 2;
      } finally {
        finished = true;
      }
    }, streamOptions(new InstantClock()))) {
      expect(e).toBe(1);
      break;
    }
    await new Promise((resolve) => setImmediate(resolve));
    expect(finished).toBe(true);
  });
});
