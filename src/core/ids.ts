// Ids in Letta's shape: `<prefix>-<uuid v4>`.
import { createHash } from "node:crypto";
import { invalidField } from "./errors.ts";
import type { Rng } from "./rng.ts";

export const ID_PREFIXES = [
  "agent",
  "block",
  "tool",
  "message",
  "run",
  "step",
  "mcp_server",
  "audit",
  "archive",
  "passage",
  "conv",
  "outbox",
] as const;
export type IdPrefix = (typeof ID_PREFIXES)[number];

const UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const ID_REGEXES = new Map<IdPrefix, RegExp>(
  ID_PREFIXES.map((p) => [p, new RegExp(`^${p}-${UUID_PATTERN}$`)]),
);

export function newId(prefix: IdPrefix, rng: Rng): string {
  return `${prefix}-${rng.uuid()}`;
}

/**
 * A stable id named by a key (an Idempotency-Key, scoped by the caller): the same key always
 * names the same id, so a retry finds what the first attempt committed. A UUID v8 of SHA-256.
 */
export function idFromKey(prefix: IdPrefix, key: string): string {
  const hex = createHash("sha256").update(key).digest("hex");
  const variant = ((Number.parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${prefix}-${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

export function isId(prefix: IdPrefix, value: unknown): value is string {
  return typeof value === "string" && ID_REGEXES.get(prefix)!.test(value);
}

/** Checks an id taken from a request; a malformed id is a 422 naming the field. */
export function requireId(prefix: IdPrefix, value: unknown, loc: (string | number)[]): string {
  if (!isId(prefix, value)) throw invalidField(loc, `must be a ${prefix} id like '${prefix}-<uuid>'`);
  return value;
}
