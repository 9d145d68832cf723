// Archival and working memory in process memory: the reference semantics for the SQL engines,
// used by tests and the simulator. Full text is a word-overlap score (any word matches).
// The tables live inside the engine's tables (memory.ts) and change only through its commit's row
// executor, on a copy of them that is swapped in when the whole commit succeeds.
import { invalidField } from "../core/errors.ts";
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

type PassageRow = Row<PassageRecord> & { vector: Float32Array };

/** The tier tables. Maps are replaced, never changed in place, once a commit swapped them in. */
export interface TierTables {
  seq: number;
  archives: Map<string, Row<ArchiveRecord>>;
  agentArchives: Map<string, string[]>;
  passages: Map<string, PassageRow>;
  passagesBySeq: Map<number, string>;
  working: Map<string, Map<string, WorkingMemoryEntry>>;
}

export function emptyTierTables(): TierTables {
  return {
    seq: 0,
    archives: new Map(),
    agentArchives: new Map(),
    passages: new Map(),
    passagesBySeq: new Map(),
    working: new Map(),
  };
}

/** A copy to stage a commit on (the per-agent working maps are copied when written). */
export function copyTierTables(t: TierTables): TierTables {
  return {
    seq: t.seq,
    archives: new Map(t.archives),
    agentArchives: new Map(t.agentArchives),
    passages: new Map(t.passages),
    passagesBySeq: new Map(t.passagesBySeq),
    working: new Map(t.working),
  };
}

const clone = <T>(value: T): T => structuredClone(value);

export class MemoryTiers implements MemoryTierStorage {
  /**
   * `tables` answers the engine's committed tier tables; `agentSeq` an agent's seq (for ordering)
   * or undefined when it does not exist.
   */
  constructor(
    private readonly tables: () => TierTables,
    private readonly agentSeq: (agentId: string) => number | undefined,
  ) {}

  private get t(): TierTables {
    return this.tables();
  }

  async getArchive(id: string): Promise<ArchiveRecord | null> {
    const row = this.t.archives.get(id);
    return row === undefined ? null : clone(row.value);
  }

  async listArchives(query: ArchiveListQuery): Promise<ArchiveRecord[]> {
    const t = this.t;
    const attached = query.agent_id === undefined ? undefined : new Set(t.agentArchives.get(query.agent_id));
    const rows = [...t.archives.values()].filter(
      (r) =>
        (query.name === undefined || r.value.name === query.name) &&
        (attached === undefined || attached.has(r.value.id)),
    );
    return paginate(rows, query, t.archives).map(clone);
  }

  async listAgentArchives(agentId: string): Promise<ArchiveRecord[]> {
    const t = this.t;
    return (t.agentArchives.get(agentId) ?? []).flatMap((id) => {
      const row = t.archives.get(id);
      return row === undefined ? [] : [clone(row.value)];
    });
  }

  async listArchiveAgentIds(archiveId: string): Promise<string[]> {
    const ids: string[] = [];
    for (const [agentId, archiveIds] of this.t.agentArchives) {
      if (archiveIds.includes(archiveId) && this.agentSeq(agentId) !== undefined) ids.push(agentId);
    }
    return ids.sort((a, b) => this.agentSeq(a)! - this.agentSeq(b)!);
  }

  async getPassage(id: string): Promise<PassageRecord | null> {
    const row = this.t.passages.get(id);
    return row === undefined ? null : clone(row.value);
  }

  async passageSeqs(ids: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const id of ids) {
      const row = this.t.passages.get(id);
      if (row !== undefined) out.set(id, row.seq);
    }
    return out;
  }

  async getPassagesBySeq(seqs: number[]): Promise<Map<number, PassageRecord>> {
    const out = new Map<number, PassageRecord>();
    for (const seq of seqs) {
      const row = this.rowBySeq(seq);
      if (row !== undefined) out.set(seq, clone(row.value));
    }
    return out;
  }

  private rowBySeq(seq: number): PassageRow | undefined {
    const id = this.t.passagesBySeq.get(seq);
    return id === undefined ? undefined : this.t.passages.get(id);
  }

  async getPassageVectorsBySeq(seqs: number[]): Promise<Map<number, Float32Array>> {
    const out = new Map<number, Float32Array>();
    for (const seq of seqs) {
      const row = this.rowBySeq(seq);
      if (row !== undefined) out.set(seq, new Float32Array(row.vector));
    }
    return out;
  }

  private passagesOf(archiveIds: string[]): PassageRow[] {
    const wanted = new Set(archiveIds);
    return [...this.t.passages.values()].filter((r) => wanted.has(r.value.archive_id));
  }

  async listPassages(archiveIds: string[], query: PassageListQuery): Promise<PassageRecord[]> {
    const t = this.t;
    for (const field of ["after", "before"] as const) {
      const id = query[field];
      if (id !== undefined && !t.passages.has(id))
        throw invalidField(["query", field], `no item with id '${id}'`);
    }
    const search = query.search?.toLowerCase();
    const rows = this.passagesOf(archiveIds).filter(
      (r) => search === undefined || r.value.text.toLowerCase().includes(search),
    );
    return paginate(rows, query, t.passages).map(clone);
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
    for (const row of this.t.passages.values()) n += row.value.text.length;
    return n;
  }

  async getWorking(agentId: string, key: string): Promise<WorkingMemoryEntry | null> {
    const entry = this.t.working.get(agentId)?.get(key);
    return entry === undefined ? null : clone(entry);
  }

  async listWorking(agentId: string): Promise<WorkingMemoryEntry[]> {
    return [...(this.t.working.get(agentId)?.values() ?? [])]
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .map(clone);
  }

  async workingBytes(): Promise<number> {
    let n = 0;
    for (const entries of this.t.working.values()) for (const e of entries.values()) n += e.size_bytes;
    return n;
  }
}
