// Archival and working memory on SQLite: passages with their vectors (float32 blobs) and an FTS5
// index kept by triggers; working memory as JSON values per (agent, key).
import type Database from "better-sqlite3";
import { invalidField } from "../core/errors.ts";
import { archiveListSql, passageListSql } from "./sql-queries.ts";
import { statementCache } from "./sqlite-writer.ts";
import { bytesVector, passageFromRow, type WorkingRow, workingFromRow } from "./tier-codec.ts";
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

/** An FTS5 query matching any of the words, each quoted so no word is read as syntax. */
function ftsQuery(text: string): string | null {
  const words = queryWords(text);
  return words.length === 0 ? null : words.map((w) => `"${w}"`).join(" OR ");
}

export class SqliteTiers implements MemoryTierStorage {
  private readonly sql: (text: string) => Statement;

  constructor(db: Database.Database) {
    this.sql = statementCache(db);
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

  async getPassage(id: string): Promise<PassageRecord | null> {
    const row = this.sql("SELECT doc, text FROM passages WHERE id = ?").get(id) as PassageRow | undefined;
    return row === undefined ? null : passageFromRow(row);
  }

  async passageSeqs(ids: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (ids.length === 0) return out;
    const rows = this.sql("SELECT id, seq FROM passages WHERE id IN (SELECT value FROM json_each(?))").all(
      JSON.stringify(ids),
    ) as { id: string; seq: number }[];
    for (const row of rows) out.set(row.id, row.seq);
    return out;
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
    return row === undefined ? null : workingFromRow(row, "text");
  }

  async listWorking(agentId: string): Promise<WorkingMemoryEntry[]> {
    return (
      this.sql("SELECT * FROM working_memory WHERE agent_id = ? ORDER BY key").all(agentId) as WorkingRow[]
    ).map((row) => workingFromRow(row, "text"));
  }

  async workingBytes(): Promise<number> {
    return (this.sql("SELECT coalesce(sum(size_bytes), 0) AS n FROM working_memory").get() as { n: number })
      .n;
  }
}
