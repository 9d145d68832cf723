// Retries for LLM calls, on our clock and our randomness (the SDKs' own retries are switched off):
// only failures another attempt can fix are retried, with full-jitter exponential backoff or the
// server's retry-after hint (capped), and a stream only until its first event has been yielded.
import { assert } from "../core/assert.ts";
import type { Clock } from "../core/clock.ts";
import type { Rng } from "../core/rng.ts";
import { cancelledError, isRetryableFailure, LlmCallError, type LlmFailure } from "./errors.ts";
import { type ChatEvent, LLM_SPEC, type LlmProvider } from "./types.ts";

export const LLM_ATTEMPTS_MAX = 3;
export const LLM_BACKOFF_MS_BASE = 500;
export const LLM_BACKOFF_MS_MAX = 8_000;
/** One HTTP request, until its response headers arrive (enforced by the SDK client). */
export const LLM_CALL_TIMEOUT_MS = 120_000;
/** A server asking us to wait longer than this is waited on for this long, then tried again. */
export const LLM_RETRY_AFTER_MS_MAX = 30_000;
/** Longest silence between two events of a stream before it counts as timed out. */
export const LLM_STREAM_IDLE_TIMEOUT_MS = 120_000;

assert(LLM_ATTEMPTS_MAX >= 1, "at least one attempt");
assert(LLM_BACKOFF_MS_BASE <= LLM_BACKOFF_MS_MAX, "backoff base must not exceed its maximum");

export interface RetryPolicy {
  attemptsMax: number;
  backoffMsBase: number;
  backoffMsMax: number;
  retryAfterMsMax: number;
}

export const LLM_RETRY_POLICY: RetryPolicy = {
  attemptsMax: LLM_ATTEMPTS_MAX,
  backoffMsBase: LLM_BACKOFF_MS_BASE,
  backoffMsMax: LLM_BACKOFF_MS_MAX,
  retryAfterMsMax: LLM_RETRY_AFTER_MS_MAX,
};

export interface RetryNotice {
  /** Attempts made so far (1 after the first failure). */
  attempt: number;
  delayMs: number;
  error: LlmCallError;
}

export interface RetryOptions {
  clock: Clock;
  rng: Rng;
  attemptsMax: number;
  backoffMsBase: number;
  backoffMsMax: number;
  retryAfterMsMax?: number;
  signal: AbortSignal;
  /** Names the caller in CANCELLED errors ("openai call cancelled"). */
  provider?: string;
  onRetry?: (notice: RetryNotice) => void;
}

export interface StreamRetryOptions extends RetryOptions {
  streamIdleTimeoutMs: number;
}

/** The wait a server asked for, in ms, from `retry-after-ms` or `retry-after` (seconds or a date). */
export function retryAfterMs(failure: LlmFailure, nowMs: number): number | undefined {
  if (failure.kind !== "status") return undefined;
  if (failure.retryAfterMsHeader !== undefined) {
    const ms = Number(failure.retryAfterMsHeader);
    if (Number.isFinite(ms) && ms >= 0) return ms;
  }
  if (failure.retryAfterHeader !== undefined) {
    const seconds = Number(failure.retryAfterHeader);
    if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
    const atMs = Date.parse(failure.retryAfterHeader);
    if (!Number.isNaN(atMs)) return Math.max(0, atMs - nowMs);
  }
  return undefined;
}

/** How long to wait after `attempt` failed attempts: the server's hint (capped), else full jitter. */
export function backoffDelayMs(
  attempt: number,
  failure: LlmFailure,
  options: Pick<RetryOptions, "backoffMsBase" | "backoffMsMax" | "retryAfterMsMax" | "rng" | "clock">,
): number {
  assert(attempt >= 1, "backoff follows a failed attempt");
  const hintedMs = retryAfterMs(failure, options.clock.nowMs());
  if (hintedMs !== undefined) return Math.min(hintedMs, options.retryAfterMsMax ?? LLM_RETRY_AFTER_MS_MAX);
  const ceilingMs = Math.min(options.backoffMsMax, options.backoffMsBase * 2 ** (attempt - 1));
  return Math.floor(options.rng.next() * ceilingMs);
}

/** Decides after a failed attempt: throws the final error, or waits and returns to try again. */
async function afterFailure(err: unknown, attempt: number, options: RetryOptions): Promise<void> {
  const provider = options.provider ?? "llm";
  if (options.signal.aborted) throw cancelledError(provider);
  if (!(err instanceof LlmCallError) || !isRetryableFailure(err.failure)) throw err;
  if (attempt >= options.attemptsMax) {
    throw new LlmCallError(err.provider, err.failure, err.detail, { cause: err, attemptsCount: attempt });
  }
  const delayMs = backoffDelayMs(attempt, err.failure, options);
  options.onRetry?.({ attempt, delayMs, error: err });
  try {
    await options.clock.sleepMs(delayMs, options.signal);
  } catch (sleepErr) {
    if (options.signal.aborted) throw cancelledError(provider);
    throw sleepErr;
  }
}

export async function withRetries<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  assert(options.attemptsMax >= 1, "attemptsMax must be at least 1");
  for (let attempt = 1; ; attempt++) {
    if (options.signal.aborted) throw cancelledError(options.provider ?? "llm");
    try {
      return await fn(attempt);
    } catch (err) {
      await afterFailure(err, attempt, options);
    }
  }
}

const IDLE = Symbol("idle");

/** The iterator's next result, or a timeout error once the stream has been silent too long. */
async function nextWithin<T>(
  iterator: AsyncIterator<T>,
  options: StreamRetryOptions,
  attemptAbort: AbortController,
): Promise<IteratorResult<T>> {
  const idleAbort = new AbortController();
  const idle = new Promise<typeof IDLE>((resolve) => {
    options.clock.sleepMs(options.streamIdleTimeoutMs, idleAbort.signal).then(
      () => resolve(IDLE),
      () => {}, // cancelled because the event came first
    );
  });
  try {
    const result = await Promise.race([iterator.next(), idle]);
    if (result !== IDLE) return result;
    attemptAbort.abort();
    const detail = `no stream event within ${options.streamIdleTimeoutMs} ms`;
    throw new LlmCallError(options.provider ?? "llm", { kind: "timeout" }, detail);
  } finally {
    idleAbort.abort();
  }
}

function closeQuietly<T>(iterator: AsyncIterator<T>): void {
  // Not awaited: a stream that ignores its abort signal must not hang the caller.
  iterator.return?.().catch(() => {});
}

/**
 * Opens a stream and retries opening it while nothing has been yielded yet. Once the first event
 * has gone to the caller a failure is final: replaying would duplicate what the caller has seen.
 */
export async function* streamWithRetries<T>(
  open: (attempt: number, signal: AbortSignal) => AsyncIterable<T>,
  options: StreamRetryOptions,
): AsyncGenerator<T, void, undefined> {
  assert(options.attemptsMax >= 1, "attemptsMax must be at least 1");
  for (let attempt = 1; ; attempt++) {
    if (options.signal.aborted) throw cancelledError(options.provider ?? "llm");
    const attemptAbort = new AbortController();
    const iterator = open(attempt, AbortSignal.any([options.signal, attemptAbort.signal]))[
      Symbol.asyncIterator
    ]();
    let first: IteratorResult<T>;
    try {
      first = await nextWithin(iterator, options, attemptAbort);
    } catch (err) {
      attemptAbort.abort();
      closeQuietly(iterator);
      await afterFailure(err, attempt, options);
      continue;
    }
    try {
      if (first.done) return;
      yield first.value;
      for (;;) {
        const next = await nextWithin(iterator, options, attemptAbort);
        if (next.done) return;
        yield next.value;
      }
    } finally {
      closeQuietly(iterator);
      attemptAbort.abort();
    }
  }
}

export interface RetryingProviderDeps {
  clock: Clock;
  /** Jitter source; pass a fork for this concern (`env.rng.fork("llm")`). */
  rng: Rng;
  policy?: Partial<RetryPolicy>;
  streamIdleTimeoutMs?: number;
  onRetry?: (notice: RetryNotice) => void;
}

/** The same provider, with every call retried by `policy` on the injected clock. */
export function retryingProvider(inner: LlmProvider, deps: RetryingProviderDeps): LlmProvider {
  const policy = { ...LLM_RETRY_POLICY, ...deps.policy };
  const optionsFor = (signal: AbortSignal): StreamRetryOptions => ({
    ...policy,
    clock: deps.clock,
    rng: deps.rng,
    signal,
    provider: inner.name,
    streamIdleTimeoutMs: deps.streamIdleTimeoutMs ?? LLM_STREAM_IDLE_TIMEOUT_MS,
    ...(deps.onRetry === undefined ? {} : { onRetry: deps.onRetry }),
  });
  return {
    spec: LLM_SPEC,
    name: inner.name,
    complete: (req, signal) => withRetries(() => inner.complete(req, signal), optionsFor(signal)),
    stream: (req, signal): AsyncIterable<ChatEvent> =>
      streamWithRetries((_attempt, attemptSignal) => inner.stream(req, attemptSignal), optionsFor(signal)),
  };
}
