// Archival and working memory on PostgreSQL: passages with their vectors (bytea, float32) and a
// generated tsvector with a GIN index for full text; working memory as JSONB per (agent, key).
import type postgres from "postgres";
import { invalidField } from "../core/errors.ts";
import { archiveListSql, numbered, passageListSql, type SqlQuery } from "./sql-queries.ts";
import { bytesVector, passageFromRow, workingFromRow } from "./tier-codec.ts";
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

type Guard = <T>(fn: () => Promise<T>) => Promise<T>;

export class PostgresTiers implements MemoryTierStorage {
  constructor(
    private readonly sql: postgres.Sql,
    private readonly guard: Guard,
  ) {}

  private async query<T>(q: SqlQuery): Promise<T[]> {
    return (await this.sql.unsafe(
      numbered(q.text),
      q.params as postgres.ParameterOrJSON<never>[],
    )) as unknown as T[];
  }

  getArchive(id: string): Promise<ArchiveRecord | null> {
    return this.guard(async () => {
      const rows = await this.sql`SELECT doc FROM archives WHERE id = ${id}`;
      return rows.length === 0 ? null : (rows[0]!.doc as ArchiveRecord);
    });
  }

  private async checkCursors(table: string, q: { after?: string | undefined; before?: string | undefined }) {
    for (const field of ["after", "before"] as const) {
      const id = q[field];
      if (
        id !== undefined &&
        (await this.sql.unsafe(`SELECT 1 FROM ${table} WHERE id = $1`, [id])).length === 0
      ) {
        throw invalidField(["query", field], `no item with id '${id}'`);
      }
    }
  }

  listArchives(query: ArchiveListQuery): Promise<ArchiveRecord[]> {
    return this.guard(async () => {
      await this.checkCursors("archives", query);
      return (await this.query<{ doc: ArchiveRecord }>(archiveListSql(query))).map((r) => r.doc);
    });
  }

  listAgentArchives(agentId: string): Promise<ArchiveRecord[]> {
    return this.guard(async () =>
      (
        await this.sql`SELECT a.doc FROM agent_archives aa JOIN archives a ON a.id = aa.archive_id
                       WHERE aa.agent_id = ${agentId} ORDER BY aa.position`
      ).map((r) => r.doc as ArchiveRecord),
    );
  }

  listArchiveAgentIds(archiveId: string): Promise<string[]> {
    return this.guard(async () =>
      (
        await this.sql`SELECT aa.agent_id FROM agent_archives aa JOIN agents a ON a.id = aa.agent_id
                       WHERE aa.archive_id = ${archiveId} ORDER BY a.seq`
      ).map((r) => r.agent_id as string),
    );
  }

  getPassage(id: string): Promise<PassageRecord | null> {
    return this.guard(async () => {
      const rows = await this.sql`SELECT doc, text FROM passages WHERE id = ${id}`;
      return rows.length === 0 ? null : passageFromRow(rows[0] as { doc: object; text: string });
    });
  }

  passageSeqs(ids: string[]): Promise<Map<string, number>> {
    return this.guard(async () => {
      const out = new Map<string, number>();
      if (ids.length === 0) return out;
      const rows = await this.sql`SELECT id, seq FROM passages WHERE id = ANY(${ids}::text[])`;
      for (const row of rows) out.set(row.id as string, Number(row.seq));
      return out;
    });
  }

  getPassagesBySeq(seqs: number[]): Promise<Map<number, PassageRecord>> {
    return this.guard(async () => {
      const out = new Map<number, PassageRecord>();
      if (seqs.length === 0) return out;
      const rows = await this.sql`SELECT seq, doc, text FROM passages WHERE seq = ANY(${seqs}::bigint[])`;
      for (const row of rows) out.set(Number(row.seq), passageFromRow(row as { doc: object; text: string }));
      return out;
    });
  }

  getPassageVectorsBySeq(seqs: number[]): Promise<Map<number, Float32Array>> {
    return this.guard(async () => {
      const out = new Map<number, Float32Array>();
      if (seqs.length === 0) return out;
      const rows = await this.sql`SELECT seq, embedding FROM passages WHERE seq = ANY(${seqs}::bigint[])`;
      for (const row of rows) out.set(Number(row.seq), bytesVector(row.embedding as Uint8Array));
      return out;
    });
  }

  listPassages(archiveIds: string[], query: PassageListQuery): Promise<PassageRecord[]> {
    if (archiveIds.length === 0) return Promise.resolve([]);
    return this.guard(async () => {
      await this.checkCursors("passages", query);
      return (
        await this.query<{ doc: object; text: string }>(passageListSql("postgres", archiveIds, query))
      ).map(passageFromRow);
    });
  }

  countPassages(archiveIds: string[]): Promise<number> {
    if (archiveIds.length === 0) return Promise.resolve(0);
    return this.guard(async () => {
      const [row] = await this
        .sql`SELECT count(*) AS n FROM passages WHERE archive_id = ANY(${archiveIds}::text[])`;
      return Number(row!.n);
    });
  }

  scanPassageVectors(archiveId: string, afterSeq: number, limit: number): Promise<PassageVectorRow[]> {
    return this.guard(async () => {
      const rows = await this.sql`SELECT seq, id, created_at_ms, doc->'tags' AS tags, embedding FROM passages
                                  WHERE archive_id = ${archiveId} AND seq > ${afterSeq} ORDER BY seq LIMIT ${limit}`;
      return rows.map((r) => ({
        seq: Number(r.seq),
        id: r.id as string,
        created_at_ms: Number(r.created_at_ms),
        tags: r.tags as string[],
        vector: bytesVector(r.embedding as Uint8Array),
      }));
    });
  }

  scanPassageMeta(archiveId: string, afterSeq: number, limit: number): Promise<PassageMetaRow[]> {
    return this.guard(async () => {
      const rows = await this.sql`SELECT seq, created_at_ms, doc->'tags' AS tags FROM passages
                                  WHERE archive_id = ${archiveId} AND seq > ${afterSeq} ORDER BY seq LIMIT ${limit}`;
      return rows.map((r) => ({
        seq: Number(r.seq),
        created_at_ms: Number(r.created_at_ms),
        tags: r.tags as string[],
      }));
    });
  }

  searchPassagesText(archiveIds: string[], query: string, limit: number): Promise<{ seq: number }[]> {
    const words = queryWords(query);
    if (words.length === 0 || archiveIds.length === 0) return Promise.resolve([]);
    // Each word is a quoted lexeme, joined by OR; to_tsquery stems them as the index did.
    const tsquery = words.map((w) => `'${w}'`).join(" | ");
    return this.guard(async () =>
      (
        await this.sql`SELECT seq FROM passages, to_tsquery('english', ${tsquery}) q
                       WHERE archive_id = ANY(${archiveIds}::text[]) AND tsv @@ q
                       ORDER BY ts_rank(tsv, q) DESC, seq LIMIT ${limit}`
      ).map((r) => ({ seq: Number(r.seq) })),
    );
  }

  archivalChars(): Promise<number> {
    return this.guard(async () => {
      const [row] = await this.sql`SELECT coalesce(sum(length(text)), 0) AS n FROM passages`;
      return Number(row!.n);
    });
  }

  getWorking(agentId: string, key: string): Promise<WorkingMemoryEntry | null> {
    return this.guard(async () => {
      const rows = await this.sql`SELECT * FROM working_memory WHERE agent_id = ${agentId} AND key = ${key}`;
      return rows.length === 0 ? null : workingFromRow(rows[0] as never, "decoded");
    });
  }

  listWorking(agentId: string): Promise<WorkingMemoryEntry[]> {
    return this.guard(async () =>
      (await this.sql`SELECT * FROM working_memory WHERE agent_id = ${agentId} ORDER BY key`).map((r) =>
        workingFromRow(r as never, "decoded"),
      ),
    );
  }

  workingBytes(): Promise<number> {
    return this.guard(async () => {
      const [row] = await this.sql`SELECT coalesce(sum(size_bytes), 0) AS n FROM working_memory`;
      return Number(row!.n);
    });
  }
}
