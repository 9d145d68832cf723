// Archival and working memory in process memory: the reference semantics for the SQL engines,
// used by tests and the simulator. Full text is a word-overlap score (any word matches).
import { invalidField, KelpieError, notFound } from "../core/errors.ts";
import { paginate } from "./memory.ts";
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

interface Row<T> {
  seq: number;
  value: T;
}

const clone = <T>(value: T): T => structuredClone(value);

export class MemoryTiers implements MemoryTierStorage {
  private seq = 0;
  private readonly archives = new Map<string, Row<ArchiveRecord>>();
  private readonly agentArchives = new Map<string, string[]>();
  private readonly passages = new Map<string, Row<PassageRecord> & { vector: Float32Array }>();
  private readonly passagesBySeq = new Map<number, string>();
  private readonly working = new Map<string, Map<string, WorkingMemoryEntry>>();

  /** `agentSeq` answers an agent's seq (for ordering) or undefined when it does not exist. */
  constructor(private readonly agentSeq: (agentId: string) => number | undefined) {}

  /** The engine calls this when an agent is deleted: its attachments and working memory go. */
  forgetAgent(agentId: string): void {
    this.agentArchives.delete(agentId);
    this.working.delete(agentId);
  }

  private archiveOrThrow(id: string): Row<ArchiveRecord> {
    const row = this.archives.get(id);
    if (row === undefined) throw new KelpieError("NOT_FOUND", `Archive ${id} not found`);
    return row;
  }

  async putArchive(archive: ArchiveRecord, create: boolean): Promise<void> {
    const existing = this.archives.get(archive.id);
    if (create && existing) throw new KelpieError("CONFLICT", `archive ${archive.id} already exists`);
    if (!create && !existing) throw new KelpieError("NOT_FOUND", `Archive ${archive.id} not found`);
    this.archives.set(archive.id, { seq: existing?.seq ?? ++this.seq, value: clone(archive) });
  }

  async deleteArchive(archiveId: string): Promise<void> {
    this.archiveOrThrow(archiveId);
    this.archives.delete(archiveId);
    for (const [agentId, ids] of this.agentArchives) {
      this.agentArchives.set(
        agentId,
        ids.filter((id) => id !== archiveId),
      );
    }
    for (const [id, row] of this.passages) {
      if (row.value.archive_id === archiveId) {
        this.passages.delete(id);
        this.passagesBySeq.delete(row.seq);
      }
    }
  }

  async getArchive(id: string): Promise<ArchiveRecord | null> {
    const row = this.archives.get(id);
    return row === undefined ? null : clone(row.value);
  }

  async listArchives(query: ArchiveListQuery): Promise<ArchiveRecord[]> {
    const attached =
      query.agent_id === undefined ? undefined : new Set(this.agentArchives.get(query.agent_id));
    const rows = [...this.archives.values()].filter(
      (r) =>
        (query.name === undefined || r.value.name === query.name) &&
        (attached === undefined || attached.has(r.value.id)),
    );
    return paginate(rows, query, this.archives).map(clone);
  }

  private checkPair(agentId: string, archiveId: string): void {
    if (this.agentSeq(agentId) === undefined) throw notFound("agent", agentId);
    this.archiveOrThrow(archiveId);
  }

  async attachArchive(agentId: string, archiveId: string): Promise<void> {
    this.checkPair(agentId, archiveId);
    const ids = this.agentArchives.get(agentId) ?? [];
    if (!ids.includes(archiveId)) this.agentArchives.set(agentId, [...ids, archiveId]);
  }

  async detachArchive(agentId: string, archiveId: string): Promise<void> {
    this.checkPair(agentId, archiveId);
    const ids = this.agentArchives.get(agentId) ?? [];
    this.agentArchives.set(
      agentId,
      ids.filter((id) => id !== archiveId),
    );
  }

  async listAgentArchives(agentId: string): Promise<ArchiveRecord[]> {
    return (this.agentArchives.get(agentId) ?? []).flatMap((id) => {
      const row = this.archives.get(id);
      return row === undefined ? [] : [clone(row.value)];
    });
  }

  async listArchiveAgentIds(archiveId: string): Promise<string[]> {
    const ids: string[] = [];
    for (const [agentId, archiveIds] of this.agentArchives) {
      if (archiveIds.includes(archiveId) && this.agentSeq(agentId) !== undefined) ids.push(agentId);
    }
    return ids.sort((a, b) => this.agentSeq(a)! - this.agentSeq(b)!);
  }

  async insertPassages(rows: { passage: PassageRecord; vector: Float32Array }[]): Promise<number[]> {
    // Check everything first: the batch is all or nothing.
    const ids = new Set<string>();
    for (const { passage } of rows) {
      this.archiveOrThrow(passage.archive_id);
      if (this.passages.has(passage.id) || ids.has(passage.id)) {
        throw new KelpieError("CONFLICT", `passage ${passage.id} already exists`);
      }
      ids.add(passage.id);
    }
    return rows.map(({ passage, vector }) => {
      const seq = ++this.seq;
      this.passages.set(passage.id, { seq, value: clone(passage), vector: new Float32Array(vector) });
      this.passagesBySeq.set(seq, passage.id);
      return seq;
    });
  }

  async deletePassage(passageId: string): Promise<{ seq: number; archive_id: string } | null> {
    const row = this.passages.get(passageId);
    if (row === undefined) return null;
    this.passages.delete(passageId);
    this.passagesBySeq.delete(row.seq);
    return { seq: row.seq, archive_id: row.value.archive_id };
  }

  async getPassage(id: string): Promise<PassageRecord | null> {
    const row = this.passages.get(id);
    return row === undefined ? null : clone(row.value);
  }

  async getPassagesBySeq(seqs: number[]): Promise<Map<number, PassageRecord>> {
    const out = new Map<number, PassageRecord>();
    for (const seq of seqs) {
      const id = this.passagesBySeq.get(seq);
      const row = id === undefined ? undefined : this.passages.get(id);
      if (row !== undefined) out.set(seq, clone(row.value));
    }
    return out;
  }

  async getPassageVectorsBySeq(seqs: number[]): Promise<Map<number, Float32Array>> {
    const out = new Map<number, Float32Array>();
    for (const seq of seqs) {
      const id = this.passagesBySeq.get(seq);
      const row = id === undefined ? undefined : this.passages.get(id);
      if (row !== undefined) out.set(seq, new Float32Array(row.vector));
    }
    return out;
  }

  private passagesOf(archiveIds: string[]): (Row<PassageRecord> & { vector: Float32Array })[] {
    const wanted = new Set(archiveIds);
    return [...this.passages.values()].filter((r) => wanted.has(r.value.archive_id));
  }

  async listPassages(archiveIds: string[], query: PassageListQuery): Promise<PassageRecord[]> {
    for (const field of ["after", "before"] as const) {
      const id = query[field];
      if (id !== undefined && !this.passages.has(id))
        throw invalidField(["query", field], `no item with id '${id}'`);
    }
    const search = query.search?.toLowerCase();
    const rows = this.passagesOf(archiveIds).filter(
      (r) => search === undefined || r.value.text.toLowerCase().includes(search),
    );
    return paginate(rows, query, this.passages).map(clone);
  }

  async countPassages(archiveIds: string[]): Promise<number> {
    return this.passagesOf(archiveIds).length;
  }

  async scanPassageVectors(archiveId: string, afterSeq: number, limit: number): Promise<PassageVectorRow[]> {
    return this.passagesOf([archiveId])
      .filter((r) => r.seq > afterSeq)
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit)
      .map((r) => ({
        seq: r.seq,
        id: r.value.id,
        created_at_ms: r.value.created_at_ms,
        tags: [...r.value.tags],
        vector: new Float32Array(r.vector),
      }));
  }

  async scanPassageMeta(archiveId: string, afterSeq: number, limit: number): Promise<PassageMetaRow[]> {
    return this.passagesOf([archiveId])
      .filter((r) => r.seq > afterSeq)
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit)
      .map((r) => ({ seq: r.seq, created_at_ms: r.value.created_at_ms, tags: [...r.value.tags] }));
  }

  async searchPassagesText(archiveIds: string[], query: string, limit: number): Promise<{ seq: number }[]> {
    const words = queryWords(query);
    if (words.length === 0) return [];
    const scored: { seq: number; score: number }[] = [];
    for (const row of this.passagesOf(archiveIds)) {
      const own = new Set(queryWords(row.value.text));
      const score = words.filter((w) => own.has(w)).length;
      if (score > 0) scored.push({ seq: row.seq, score });
    }
    scored.sort((a, b) => b.score - a.score || a.seq - b.seq);
    return scored.slice(0, limit).map(({ seq }) => ({ seq }));
  }

  async archivalChars(): Promise<number> {
    let n = 0;
    for (const row of this.passages.values()) n += row.value.text.length;
    return n;
  }

  async getWorking(agentId: string, key: string): Promise<WorkingMemoryEntry | null> {
    const entry = this.working.get(agentId)?.get(key);
    return entry === undefined ? null : clone(entry);
  }

  async listWorking(agentId: string): Promise<WorkingMemoryEntry[]> {
    return [...(this.working.get(agentId)?.values() ?? [])]
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .map(clone);
  }

  async putWorking(entry: WorkingMemoryEntry): Promise<void> {
    if (this.agentSeq(entry.agent_id) === undefined) throw notFound("agent", entry.agent_id);
    let entries = this.working.get(entry.agent_id);
    if (entries === undefined) {
      entries = new Map();
      this.working.set(entry.agent_id, entries);
    }
    entries.set(entry.key, clone(entry));
  }

  async deleteWorking(agentId: string, key: string): Promise<boolean> {
    return this.working.get(agentId)?.delete(key) ?? false;
  }

  async workingBytes(): Promise<number> {
    let n = 0;
    for (const entries of this.working.values()) for (const e of entries.values()) n += e.size_bytes;
    return n;
  }
}
