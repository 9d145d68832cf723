// Archival and working memory on SQLite: passages with their vectors (float32 blobs) and an FTS5
// index kept by triggers; working memory as JSON values per (agent, key).
import type Database from "better-sqlite3";
import { invalidField, KelpieError, notFound } from "../core/errors.ts";
import { archiveListSql, passageListSql } from "./sql-queries.ts";
import { statementCache } from "./sqlite-writer.ts";
import {
  type ArchiveListQuery,
  type ArchiveRecord,
  type MemoryTierStorage,
  type PassageListQuery,
  type PassageMetaRow,
  type PassageRecord,
  type PassageVectorRow,
  queryWords,
  type WorkingMemoryEntry,
} from "./types.ts";

type Statement = Database.Statement<unknown[], unknown>;

interface PassageRow {
  seq: number;
  doc: string;
  text: string;
}

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

/** An FTS5 query matching any of the words, each quoted so no word is read as syntax. */
function ftsQuery(text: string): string | null {
  const words = queryWords(text);
  return words.length === 0 ? null : words.map((w) => `"${w}"`).join(" OR ");
}

export class SqliteTiers implements MemoryTierStorage {
  private readonly sql: (text: string) => Statement;

  constructor(private readonly db: Database.Database) {
    this.sql = statementCache(db);
  }

  private archiveExists(id: string): boolean {
    return this.sql("SELECT 1 FROM archives WHERE id = ?").get(id) !== undefined;
  }

  async putArchive(archive: ArchiveRecord, create: boolean): Promise<void> {
    const exists = this.archiveExists(archive.id);
    if (create && exists) throw new KelpieError("CONFLICT", `archive ${archive.id} already exists`);
    if (!create && !exists) throw new KelpieError("NOT_FOUND", `Archive ${archive.id} not found`);
    const doc = JSON.stringify(archive);
    if (exists) {
      this.sql("UPDATE archives SET name = ?, doc = ? WHERE id = ?").run(archive.name, doc, archive.id);
    } else {
      this.sql("INSERT INTO archives (id, name, created_at_ms, doc) VALUES (?, ?, ?, ?)").run(
        archive.id,
        archive.name,
        archive.created_at_ms,
        doc,
      );
    }
  }

  async deleteArchive(archiveId: string): Promise<void> {
    const { changes } = this.sql("DELETE FROM archives WHERE id = ?").run(archiveId);
    if (changes === 0) throw new KelpieError("NOT_FOUND", `Archive ${archiveId} not found`);
  }

  async getArchive(id: string): Promise<ArchiveRecord | null> {
    const row = this.sql("SELECT doc FROM archives WHERE id = ?").get(id) as { doc: string } | undefined;
    return row === undefined ? null : (JSON.parse(row.doc) as ArchiveRecord);
  }

  async listArchives(query: ArchiveListQuery): Promise<ArchiveRecord[]> {
    this.checkCursors("archives", query);
    const q = archiveListSql(query);
    return (this.sql(q.text).all(...q.params) as { doc: string }[]).map(
      (r) => JSON.parse(r.doc) as ArchiveRecord,
    );
  }

  private checkCursors(table: string, q: { after?: string | undefined; before?: string | undefined }): void {
    for (const field of ["after", "before"] as const) {
      const id = q[field];
      if (id !== undefined && this.sql(`SELECT 1 FROM ${table} WHERE id = ?`).get(id) === undefined) {
        throw invalidField(["query", field], `no item with id '${id}'`);
      }
    }
  }

  private checkPair(agentId: string, archiveId: string): void {
    if (this.sql("SELECT 1 FROM agents WHERE id = ?").get(agentId) === undefined)
      throw notFound("agent", agentId);
    if (!this.archiveExists(archiveId)) throw new KelpieError("NOT_FOUND", `Archive ${archiveId} not found`);
  }

  async attachArchive(agentId: string, archiveId: string): Promise<void> {
    this.checkPair(agentId, archiveId);
    this.sql(
      `INSERT OR IGNORE INTO agent_archives (agent_id, archive_id, position)
       VALUES (?, ?, (SELECT coalesce(max(position), 0) + 1 FROM agent_archives WHERE agent_id = ?))`,
    ).run(agentId, archiveId, agentId);
  }

  async detachArchive(agentId: string, archiveId: string): Promise<void> {
    this.checkPair(agentId, archiveId);
    this.sql("DELETE FROM agent_archives WHERE agent_id = ? AND archive_id = ?").run(agentId, archiveId);
  }

  async listAgentArchives(agentId: string): Promise<ArchiveRecord[]> {
    return (
      this.sql(
        "SELECT a.doc FROM agent_archives aa JOIN archives a ON a.id = aa.archive_id WHERE aa.agent_id = ? ORDER BY aa.position",
      ).all(agentId) as { doc: string }[]
    ).map((r) => JSON.parse(r.doc) as ArchiveRecord);
  }

  async listArchiveAgentIds(archiveId: string): Promise<string[]> {
    return this.sql(
      "SELECT aa.agent_id FROM agent_archives aa JOIN agents a ON a.id = aa.agent_id WHERE aa.archive_id = ? ORDER BY a.seq",
    )
      .pluck()
      .all(archiveId) as string[];
  }

  private readonly insertMany = (rows: { passage: PassageRecord; vector: Float32Array }[]): number[] =>
    this.db.transaction(() =>
      rows.map(({ passage, vector }) => {
        if (!this.archiveExists(passage.archive_id)) {
          throw new KelpieError("NOT_FOUND", `Archive ${passage.archive_id} not found`);
        }
        const row = this.sql(
          "INSERT INTO passages (id, archive_id, created_at_ms, text, doc, embedding) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
        ).get(
          passage.id,
          passage.archive_id,
          passage.created_at_ms,
          passage.text,
          JSON.stringify(passageDoc(passage)),
          vectorBytes(vector),
        ) as { seq: number };
        return row.seq;
      }),
    )();

  async insertPassages(rows: { passage: PassageRecord; vector: Float32Array }[]): Promise<number[]> {
    return this.insertMany(rows);
  }

  async deletePassage(passageId: string): Promise<{ seq: number; archive_id: string } | null> {
    const row = this.sql("DELETE FROM passages WHERE id = ? RETURNING seq, archive_id").get(passageId) as
      | { seq: number; archive_id: string }
      | undefined;
    return row ?? null;
  }

  async getPassage(id: string): Promise<PassageRecord | null> {
    const row = this.sql("SELECT doc, text FROM passages WHERE id = ?").get(id) as PassageRow | undefined;
    return row === undefined ? null : passageFromRow(row);
  }

  async getPassagesBySeq(seqs: number[]): Promise<Map<number, PassageRecord>> {
    const out = new Map<number, PassageRecord>();
    if (seqs.length === 0) return out;
    const rows = this.sql(
      "SELECT seq, doc, text FROM passages WHERE seq IN (SELECT value FROM json_each(?))",
    ).all(JSON.stringify(seqs)) as PassageRow[];
    for (const row of rows) out.set(row.seq, passageFromRow(row));
    return out;
  }

  async getPassageVectorsBySeq(seqs: number[]): Promise<Map<number, Float32Array>> {
    const out = new Map<number, Float32Array>();
    if (seqs.length === 0) return out;
    const rows = this.sql(
      "SELECT seq, embedding FROM passages WHERE seq IN (SELECT value FROM json_each(?))",
    ).all(JSON.stringify(seqs)) as { seq: number; embedding: Buffer }[];
    for (const row of rows) out.set(row.seq, bytesVector(row.embedding));
    return out;
  }

  async listPassages(archiveIds: string[], query: PassageListQuery): Promise<PassageRecord[]> {
    if (archiveIds.length === 0) return [];
    this.checkCursors("passages", query);
    const q = passageListSql("sqlite", archiveIds, query);
    return (this.sql(q.text).all(...q.params) as PassageRow[]).map(passageFromRow);
  }

  async countPassages(archiveIds: string[]): Promise<number> {
    if (archiveIds.length === 0) return 0;
    const row = this.sql(
      "SELECT count(*) AS n FROM passages WHERE archive_id IN (SELECT value FROM json_each(?))",
    ).get(JSON.stringify(archiveIds)) as { n: number };
    return row.n;
  }

  async scanPassageVectors(archiveId: string, afterSeq: number, limit: number): Promise<PassageVectorRow[]> {
    const rows = this.sql(
      `SELECT seq, id, created_at_ms, json_extract(doc, '$.tags') AS tags, embedding FROM passages
       WHERE archive_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
    ).all(archiveId, afterSeq, limit) as {
      seq: number;
      id: string;
      created_at_ms: number;
      tags: string;
      embedding: Buffer;
    }[];
    return rows.map((r) => ({
      seq: r.seq,
      id: r.id,
      created_at_ms: r.created_at_ms,
      tags: JSON.parse(r.tags) as string[],
      vector: bytesVector(r.embedding),
    }));
  }

  async scanPassageMeta(archiveId: string, afterSeq: number, limit: number): Promise<PassageMetaRow[]> {
    const rows = this.sql(
      `SELECT seq, created_at_ms, json_extract(doc, '$.tags') AS tags FROM passages
       WHERE archive_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
    ).all(archiveId, afterSeq, limit) as { seq: number; created_at_ms: number; tags: string }[];
    return rows.map((r) => ({
      seq: r.seq,
      created_at_ms: r.created_at_ms,
      tags: JSON.parse(r.tags) as string[],
    }));
  }

  async searchPassagesText(archiveIds: string[], query: string, limit: number): Promise<{ seq: number }[]> {
    const match = ftsQuery(query);
    if (match === null || archiveIds.length === 0) return [];
    return this.sql(
      `SELECT passages_fts.rowid AS seq FROM passages_fts JOIN passages p ON p.seq = passages_fts.rowid
       WHERE passages_fts MATCH ? AND p.archive_id IN (SELECT value FROM json_each(?))
       ORDER BY bm25(passages_fts) LIMIT ?`,
    ).all(match, JSON.stringify(archiveIds), limit) as { seq: number }[];
  }

  async archivalChars(): Promise<number> {
    return (this.sql("SELECT coalesce(sum(length(text)), 0) AS n FROM passages").get() as { n: number }).n;
  }

  async getWorking(agentId: string, key: string): Promise<WorkingMemoryEntry | null> {
    const row = this.sql("SELECT * FROM working_memory WHERE agent_id = ? AND key = ?").get(agentId, key) as
      | WorkingRow
      | undefined;
    return row === undefined ? null : workingFromRow(row);
  }

  async listWorking(agentId: string): Promise<WorkingMemoryEntry[]> {
    return (
      this.sql("SELECT * FROM working_memory WHERE agent_id = ? ORDER BY key").all(agentId) as WorkingRow[]
    ).map(workingFromRow);
  }

  async putWorking(entry: WorkingMemoryEntry): Promise<void> {
    try {
      this.sql(
        `INSERT INTO working_memory (agent_id, key, size_bytes, expires_at_ms, updated_at_ms, value)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (agent_id, key) DO UPDATE SET size_bytes = excluded.size_bytes,
           expires_at_ms = excluded.expires_at_ms, updated_at_ms = excluded.updated_at_ms, value = excluded.value`,
      ).run(
        entry.agent_id,
        entry.key,
        entry.size_bytes,
        entry.expires_at_ms,
        entry.updated_at_ms,
        JSON.stringify(entry.value),
      );
    } catch (err) {
      if ((err as { code?: string }).code === "SQLITE_CONSTRAINT_FOREIGNKEY")
        throw notFound("agent", entry.agent_id);
      throw err;
    }
  }

  async deleteWorking(agentId: string, key: string): Promise<boolean> {
    return (
      this.sql("DELETE FROM working_memory WHERE agent_id = ? AND key = ?").run(agentId, key).changes > 0
    );
  }

  async workingBytes(): Promise<number> {
    return (this.sql("SELECT coalesce(sum(size_bytes), 0) AS n FROM working_memory").get() as { n: number })
      .n;
  }
}

interface WorkingRow {
  agent_id: string;
  key: string;
  size_bytes: number;
  expires_at_ms: number | null;
  updated_at_ms: number;
  value: string | unknown;
}

export function workingFromRow(row: WorkingRow): WorkingMemoryEntry {
  return {
    agent_id: row.agent_id,
    key: row.key,
    size_bytes: Number(row.size_bytes),
    expires_at_ms: row.expires_at_ms === null ? null : Number(row.expires_at_ms),
    updated_at_ms: Number(row.updated_at_ms),
    value: typeof row.value === "string" ? JSON.parse(row.value) : row.value,
  };
}
