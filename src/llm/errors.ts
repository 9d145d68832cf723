// How an LLM call failed, as data: adapters turn their SDK's errors into an LlmCallError, and the
// retry policy (retry.ts) decides from `failure` alone whether another attempt can help.
import { KelpieError } from "../core/errors.ts";
import { egressRefusalIn } from "../net/egress.ts";

export type LlmFailure =
  | {
      kind: "status";
      status: number;
      /** Raw `retry-after-ms` / `retry-after` header values, parsed by the retry policy. */
      retryAfterMsHeader?: string;
      retryAfterHeader?: string;
    }
  | { kind: "timeout" }
  | { kind: "connection" }
  /** The provider answered with something we could not read (no choices, a broken stream). */
  | { kind: "protocol" };

/** 408, 409, 429 and 5xx may succeed on another attempt; other statuses will not. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

export function isRetryableFailure(failure: LlmFailure): boolean {
  switch (failure.kind) {
    case "status":
      return isRetryableStatus(failure.status);
    case "timeout":
    case "connection":
      return true;
    case "protocol":
      return false;
  }
}

function failureLabel(failure: LlmFailure): string {
  return failure.kind === "status" ? String(failure.status) : failure.kind;
}

/** An LLM call failed: code LLM_ERROR, message "<provider> <status|timeout|...>: <detail>". */
export class LlmCallError extends KelpieError {
  override name = "LlmCallError";
  readonly provider: string;
  readonly failure: LlmFailure;
  readonly detail: string;
  readonly attemptsCount: number;

  constructor(
    provider: string,
    failure: LlmFailure,
    detail: string,
    options?: { cause?: unknown; attemptsCount?: number },
  ) {
    const attemptsCount = options?.attemptsCount ?? 1;
    const suffix = attemptsCount > 1 ? ` after ${attemptsCount} attempts` : "";
    super("LLM_ERROR", `${provider} ${failureLabel(failure)}: ${detail}${suffix}`, { cause: options?.cause });
    this.provider = provider;
    this.failure = failure;
    this.detail = detail;
    this.attemptsCount = attemptsCount;
  }
}

export function cancelledError(provider: string): KelpieError {
  return new KelpieError("CANCELLED", `${provider} call cancelled`);
}

/** What an adapter knows about one SDK error; `undefined` for errors that are not the SDK's. */
export type SdkFailureOf = (err: unknown) => { failure: LlmFailure; detail: string } | undefined;

/**
 * Turns whatever an SDK call threw into our error: CANCELLED when the caller aborted, an
 * LlmCallError for the SDK's own errors, and anything else (our bugs) unchanged.
 */
export function toLlmError(
  provider: string,
  err: unknown,
  signal: AbortSignal,
  failureOf: SdkFailureOf,
): unknown {
  if (signal.aborted) return cancelledError(provider);
  if (err instanceof KelpieError) return err;
  // The SDK wraps what its fetch threw as a connection error; a refused endpoint is not one (no retry).
  const refusal = egressRefusalIn(err);
  if (refusal !== undefined) return refusal;
  const known = failureOf(err);
  if (known === undefined) return err;
  return new LlmCallError(provider, known.failure, known.detail, { cause: err });
}

/**
 * undici reports a connection dropped mid-body as `TypeError: terminated` (and a failed connect as
 * `TypeError: fetch failed`); the SDKs let these through unwrapped while a stream is being read.
 */
export function isFetchTransportError(err: unknown): boolean {
  return err instanceof TypeError && (err.message === "terminated" || err.message === "fetch failed");
}

/** Header values the retry policy reads, from a fetch `Headers` (or nothing). */
export function retryHeadersOf(headers: Headers | undefined): {
  retryAfterMsHeader?: string;
  retryAfterHeader?: string;
} {
  const out: { retryAfterMsHeader?: string; retryAfterHeader?: string } = {};
  const ms = headers?.get("retry-after-ms");
  const seconds = headers?.get("retry-after");
  if (ms) out.retryAfterMsHeader = ms;
  if (seconds) out.retryAfterHeader = seconds;
  return out;
}
