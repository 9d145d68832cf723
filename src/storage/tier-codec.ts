// How archival and working-memory rows are encoded on the SQL engines, and the limit check every
// engine makes inside put_working: shared by the readers, the writers and the reference engine.
import { KelpieError } from "../core/errors.ts";
import type { PassageRecord, WorkingMemoryEntry } from "./types.ts";

/** A float32 vector as the bytes stored (little-endian, as the platforms we run on are). */
export function vectorBytes(vector: Float32Array): Buffer {
  return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength);
}

/** Stored bytes back to a vector (copied: the driver's buffer may be reused). */
export function bytesVector(bytes: Uint8Array): Float32Array {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Float32Array(copy.buffer);
}

export function passageFromRow(row: { doc: string | object; text: string }): PassageRecord {
  const doc = typeof row.doc === "string" ? (JSON.parse(row.doc) as object) : row.doc;
  return { ...(doc as Omit<PassageRecord, "text">), text: row.text };
}

export function passageDoc(passage: PassageRecord): Omit<PassageRecord, "text"> {
  const { text: _text, ...doc } = passage;
  return doc;
}

/** The message put_working fails with when an agent's working memory would pass a limit. */
export function workingLimitError(
  agentId: string,
  otherKeys: number,
  totalBytes: number,
  limits: { keys_max: number; bytes_max: number },
): KelpieError | null {
  if (otherKeys >= limits.keys_max) {
    return new KelpieError(
      "BAD_REQUEST",
      `working memory of agent ${agentId} holds ${otherKeys} keys, the most allowed (${limits.keys_max}); delete some first`,
    );
  }
  if (totalBytes > limits.bytes_max) {
    return new KelpieError(
      "BAD_REQUEST",
      `working memory of agent ${agentId} would hold ${totalBytes} bytes, over its limit of ${limits.bytes_max}; delete some keys first`,
    );
  }
  return null;
}

export interface WorkingRow {
  agent_id: string;
  key: string;
  size_bytes: number;
  expires_at_ms: number | null;
  updated_at_ms: number;
  value: unknown;
}

/**
 * `text`: the value column holds JSON text (SQLite), parsed here. `decoded`: the driver already
 * parsed it (PostgreSQL's jsonb), so a string value is the string itself; parsing it again would
 * turn `"[1, 2]"` into an array and throw on `"abc"`.
 */
export function workingFromRow(row: WorkingRow, value: "text" | "decoded"): WorkingMemoryEntry {
  return {
    agent_id: row.agent_id,
    key: row.key,
    size_bytes: Number(row.size_bytes),
    expires_at_ms: row.expires_at_ms === null ? null : Number(row.expires_at_ms),
    updated_at_ms: Number(row.updated_at_ms),
    value: value === "text" ? JSON.parse(row.value as string) : row.value,
  };
}
