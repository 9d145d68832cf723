// Secrets are write-only over the API: a client sends them, and every answer shows SECRET_MASK in
// their place (an empty value stays empty: there is nothing to hide). A write that sends the mask
// back, as a client does when it edits what it read, keeps the stored value; the mask where no value
// is stored is refused, so the mask itself never becomes a secret.
import { invalidField } from "./errors.ts";

export const SECRET_MASK = "****";

/** What a read shows for a secret value. */
export function maskSecret(value: unknown): unknown {
  return typeof value === "string" && value.length > 0 ? SECRET_MASK : value;
}

/** A record of secrets (headers, env values) with every value masked; null and non-objects as they are. */
export function maskSecretValues(record: unknown): unknown {
  if (record === null || typeof record !== "object" || Array.isArray(record)) return record;
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, maskSecret(v)]));
}

/** A written secret: the mask stands for the stored value, which must exist. */
export function unmaskSecret(given: unknown, stored: unknown, loc: (string | number)[]): unknown {
  if (given !== SECRET_MASK) return given;
  if (typeof stored === "string" && stored.length > 0) return stored;
  throw invalidField(
    loc,
    `is '${SECRET_MASK}', the mask shown in place of a stored secret, but none is stored here: send the value itself`,
  );
}

/** A written record of secrets: each masked value stands for the stored value of the same key. */
export function unmaskSecretValues(given: unknown, stored: unknown, loc: (string | number)[]): unknown {
  if (given === null || typeof given !== "object" || Array.isArray(given)) return given;
  const before =
    stored !== null && typeof stored === "object" && !Array.isArray(stored)
      ? (stored as Record<string, unknown>)
      : {};
  return Object.fromEntries(
    Object.entries(given).map(([k, v]) => [k, unmaskSecret(v, before[k], [...loc, k])]),
  );
}
