// The Idempotency-Key request header (as Stripe and the IETF draft use it): a client that retries
// a POST with the same key gets the first attempt's effect once, not twice.
import type { FastifyRequest } from "fastify";
import { invalidField } from "../core/errors.ts";

export const IDEMPOTENCY_KEY_CHARS_MAX = 255;

/** The request's Idempotency-Key, or undefined; a malformed one is a 422 naming the header. */
export function idempotencyKeyOf(req: FastifyRequest): string | undefined {
  const raw = req.headers["idempotency-key"];
  if (raw === undefined) return undefined;
  if (
    typeof raw !== "string" ||
    raw.length === 0 ||
    raw.length > IDEMPOTENCY_KEY_CHARS_MAX ||
    !/^[\x20-\x7e]+$/.test(raw)
  ) {
    throw invalidField(
      ["header", "Idempotency-Key"],
      `must be 1 to ${IDEMPOTENCY_KEY_CHARS_MAX} printable ASCII characters`,
    );
  }
  return raw;
}
