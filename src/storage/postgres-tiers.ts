// Archival and working memory on PostgreSQL: passages with their vectors (bytea, float32) and a
// generated tsvector with a GIN index for full text; working memory as JSONB per (agent, key).
import type postgres from "postgres";
import { invalidField, KelpieError, notFound } from "../core/errors.ts";
import { archiveListSql, numbered, passageListSql, type SqlQuery } from "./sql-queries.ts";
import { bytesVector, passageDoc, passageFromRow, vectorBytes, workingFromRow } from "./sqlite-tiers.ts";
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

  private async archiveExists(id: string): Promise<boolean> {
    return (await this.sql`SELECT 1 FROM archives WHERE id = ${id}`).length > 0;
  }

  putArchive(archive: ArchiveRecord, create: boolean): Promise<void> {
    return this.guard(async () => {
      const exists = await this.archiveExists(archive.id);
      if (create && exists) throw new KelpieError("CONFLICT", `archive ${archive.id} already exists`);
      if (!create && !exists) throw new KelpieError("NOT_FOUND", `Archive ${archive.id} not found`);
      const doc = this.sql.json(archive as never);
      if (exists) {
        await this.sql`UPDATE archives SET name = ${archive.name}, doc = ${doc} WHERE id = ${archive.id}`;
      } else {
        await this.sql`INSERT INTO archives (id, name, created_at_ms, doc)
                       VALUES (${archive.id}, ${archive.name}, ${archive.created_at_ms}, ${doc})`;
      }
    });
  }

  deleteArchive(archiveId: string): Promise<void> {
    return this.guard(async () => {
      const r = await this.sql`DELETE FROM archives WHERE id = ${archiveId}`;
      if (r.count === 0) throw new KelpieError("NOT_FOUND", `Archive ${archiveId} not found`);
    });
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

  private async checkPair(agentId: string, archiveId: string): Promise<void> {
    if ((await this.sql`SELECT 1 FROM agents WHERE id = ${agentId}`).length === 0)
      throw notFound("agent", agentId);
    if (!(await this.archiveExists(archiveId)))
      throw new KelpieError("NOT_FOUND", `Archive ${archiveId} not found`);
  }

  attachArchive(agentId: string, archiveId: string): Promise<void> {
    return this.guard(async () => {
      await this.checkPair(agentId, archiveId);
      await this.sql`INSERT INTO agent_archives (agent_id, archive_id, position)
                     VALUES (${agentId}, ${archiveId},
                       (SELECT coalesce(max(position), 0) + 1 FROM agent_archives WHERE agent_id = ${agentId}))
                     ON CONFLICT DO NOTHING`;
    });
  }

  detachArchive(agentId: string, archiveId: string): Promise<void> {
    return this.guard(async () => {
      await this.checkPair(agentId, archiveId);
      await this.sql`DELETE FROM agent_archives WHERE agent_id = ${agentId} AND archive_id = ${archiveId}`;
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

  insertPassages(rows: { passage: PassageRecord; vector: Float32Array }[]): Promise<number[]> {
    return this.guard(() =>
      this.sql.begin(async (tx) => {
        const seqs: number[] = [];
        const archives = new Set(rows.map((r) => r.passage.archive_id));
        for (const id of archives) {
          if ((await tx`SELECT 1 FROM archives WHERE id = ${id}`).length === 0) {
            throw new KelpieError("NOT_FOUND", `Archive ${id} not found`);
          }
        }
        for (const { passage, vector } of rows) {
          const [row] = await tx`INSERT INTO passages (id, archive_id, created_at_ms, text, doc, embedding)
            VALUES (${passage.id}, ${passage.archive_id}, ${passage.created_at_ms}, ${passage.text},
                    ${tx.json(passageDoc(passage) as never)}, ${vectorBytes(vector)})
            RETURNING seq`;
          seqs.push(Number(row!.seq));
        }
        return seqs;
      }),
    ) as Promise<number[]>;
  }

  deletePassage(passageId: string): Promise<{ seq: number; archive_id: string } | null> {
    return this.guard(async () => {
      const rows = await this.sql`DELETE FROM passages WHERE id = ${passageId} RETURNING seq, archive_id`;
      return rows.length === 0
        ? null
        : { seq: Number(rows[0]!.seq), archive_id: rows[0]!.archive_id as string };
    });
  }

  getPassage(id: string): Promise<PassageRecord | null> {
    return this.guard(async () => {
      const rows = await this.sql`SELECT doc, text FROM passages WHERE id = ${id}`;
      return rows.length === 0 ? null : passageFromRow(rows[0] as { doc: object; text: string });
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
      return rows.length === 0 ? null : workingFromRow(rows[0] as never);
    });
  }

  listWorking(agentId: string): Promise<WorkingMemoryEntry[]> {
    return this.guard(async () =>
      (await this.sql`SELECT * FROM working_memory WHERE agent_id = ${agentId} ORDER BY key`).map((r) =>
        workingFromRow(r as never),
      ),
    );
  }

  putWorking(entry: WorkingMemoryEntry): Promise<void> {
    return this.guard(async () => {
      try {
        await this
          .sql`INSERT INTO working_memory (agent_id, key, size_bytes, expires_at_ms, updated_at_ms, value)
          VALUES (${entry.agent_id}, ${entry.key}, ${entry.size_bytes}, ${entry.expires_at_ms}, ${entry.updated_at_ms},
                  ${this.sql.json(entry.value as never)})
          ON CONFLICT (agent_id, key) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,
            expires_at_ms = EXCLUDED.expires_at_ms, updated_at_ms = EXCLUDED.updated_at_ms, value = EXCLUDED.value`;
      } catch (err) {
        if ((err as { code?: string }).code === "23503") throw notFound("agent", entry.agent_id);
        throw err;
      }
    });
  }

  deleteWorking(agentId: string, key: string): Promise<boolean> {
    return this.guard(
      async () =>
        (await this.sql`DELETE FROM working_memory WHERE agent_id = ${agentId} AND key = ${key}`).count > 0,
    );
  }

  workingBytes(): Promise<number> {
    return this.guard(async () => {
      const [row] = await this.sql`SELECT coalesce(sum(size_bytes), 0) AS n FROM working_memory`;
      return Number(row!.n);
    });
  }
}
