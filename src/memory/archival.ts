// Archival memory: archives of passages, each embedded by its archive's model, found by hybrid
// search — a vector index (exact or HNSW) and the engine's full-text index, fused by weighted
// reciprocal rank that also weighs names and neighbouring passages (fusion.ts). An agent's own
// archive is made the first time it archives something; other archives can be shared by
// attaching them to several agents.
import { assert } from "../core/assert.ts";
import {
  ARCHIVAL_SEARCH_TOP_K_MAX,
  PASSAGE_TAGS_MAX,
  PASSAGE_TEXT_CHARS_MAX,
  PASSAGES_PER_BATCH_MAX,
  TAG_LENGTH_MAX,
} from "../core/constants.ts";
import type { Env } from "../core/env.ts";
import { invalidField, KelpieError, notFound } from "../core/errors.ts";
import { checkMetadata, checkName } from "../core/field-limits.ts";
import { newId } from "../core/ids.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { ArchiveRecord, Fence, Mutation, PassageListQuery, PassageRecord } from "../storage/types.ts";
import { type Embedder, type Embedders, localEmbeddingConfig } from "./embedders.ts";
import { fuse } from "./fusion.ts";
import { IndexStore } from "./index-store.ts";
import {
  HNSW_PASSAGES_MIN,
  type IndexFilter,
  matchesFilter,
  type PassageMeta,
  VectorIndex,
} from "./vector-index.ts";

/** Each half of a hybrid search contributes this many candidates per wanted result. */
const HYBRID_CANDIDATES_PER_RESULT = 4;
const HYBRID_CANDIDATES_MIN = 32;
/** A filter matching at most this many passages of a graph-mode archive is scored exactly. */
const EXACT_FILTER_PASSAGES_MAX = 4_096;
/** Rows read per batch while an archive's index is built from storage. */
const INDEX_LOAD_BATCH = 10_000;
/** A saved HNSW graph is written again once this many inserts and deletes have changed it... */
export const INDEX_SAVE_CHANGES_MAX = 10_000;
/** ...or on the first change this long after its last save (checked on writes: no timers here). */
export const INDEX_SAVE_INTERVAL_MS = 5 * 60_000;

export interface ArchivalOptions {
  /** Where HNSW graphs are saved across restarts (servers with a data directory); none: rebuilt each start. */
  indexDir?: string | undefined;
  /** Passages from which an archive's index is an HNSW graph (tests lower it). */
  hnswMin?: number | undefined;
  /** The agents' mailboxes, where writes to an agent's archives run (servers; bare services lack it). */
  runtime?: Pick<Runtime, "invoke"> | undefined;
}

/** What happened to archive indexes since start (tests and operators read it). */
export interface IndexPersistenceStats {
  /** Indexes built from a full scan of storage. */
  built: number;
  /** Indexes restored from a saved graph. */
  loaded: number;
  /** Saved graphs found stale or damaged, thrown away and rebuilt. */
  discarded: number;
  saved: number;
  saveFailures: number;
}

export interface PassageInput {
  text: string;
  tags?: string[] | null | undefined;
  metadata?: Record<string, unknown> | null | undefined;
  created_at_ms?: number | undefined;
}

export interface ArchivalQuery extends IndexFilter {
  query: string;
  topK: number;
}

export interface ArchivalHit {
  passage: PassageRecord;
  /** Fused rank score (higher is better). */
  score: number;
  vector_score: number | null;
  text_rank: number | null;
}

interface LoadedIndex {
  index: VectorIndex | null;
  /** Seqs inserted or deleted while the index was loading, applied once it has. */
  ready: Promise<void>;
  /** Highest seq the index has seen (what a saved graph's sidecar records). */
  maxSeq: number;
  /** Inserts and deletes since the graph was last saved. */
  changes: number;
  savedAtMs: number;
  /** Storage was scanned through this seq (on a shared database other nodes insert too). */
  scannedSeq: number;
  /** The catch-up scan in progress, if any. */
  catchingUp: Promise<void> | null;
}

export class ArchivalService {
  private readonly indexes = new Map<string, LoadedIndex>();
  private readonly store: IndexStore | null;
  private readonly hnswMin: number;
  private readonly runtime: Pick<Runtime, "invoke"> | undefined;
  readonly indexStats: IndexPersistenceStats = {
    built: 0,
    loaded: 0,
    discarded: 0,
    saved: 0,
    saveFailures: 0,
  };

  constructor(
    private readonly env: Env,
    private readonly embedders: Embedders,
    options: ArchivalOptions = {},
  ) {
    this.store = options.indexDir === undefined ? null : new IndexStore(options.indexDir);
    this.hnswMin = options.hnswMin ?? HNSW_PASSAGES_MIN;
    this.runtime = options.runtime;
    assert(Number.isInteger(this.hnswMin) && this.hnswMin > 0, "hnswMin must be a positive integer");
  }

  private get tiers() {
    return this.env.storage.tiers;
  }

  /**
   * Runs an agent-scoped write with the agent's fence: with `fence` the caller already runs in
   * the agent's mailbox, else the write is queued there.
   */
  inMailbox<T>(agentId: string, fence: Fence | undefined, op: (fence: Fence) => Promise<T>): Promise<T> {
    if (fence !== undefined) return op(fence);
    assert(this.runtime !== undefined, "agent-scoped archival writes need the runtime");
    return this.runtime.invoke(agentId, (ctx) => op(ctx.fence), "archival_write");
  }

  // --- archives ---------------------------------------------------------------------------

  /** A new archive embedded by the given config's model, or the local one when this server lacks it. */
  async createArchive(
    input: {
      name: string;
      description?: string | null | undefined;
      embedding_config?: Record<string, unknown> | null | undefined;
      metadata?: Record<string, unknown> | null | undefined;
      owner_agent_id?: string | null;
    },
    loc: (string | number)[] = ["body"],
  ): Promise<ArchiveRecord> {
    const archive = this.newArchive(input, loc);
    await this.env.storage.commit([{ op: "put_archive", archive, create: true }]);
    return archive;
  }

  private newArchive(
    input: {
      name: string;
      description?: string | null | undefined;
      embedding_config?: Record<string, unknown> | null | undefined;
      metadata?: Record<string, unknown> | null | undefined;
      owner_agent_id?: string | null;
    },
    loc: (string | number)[],
  ): ArchiveRecord {
    checkName(input.name, [...loc, "name"]);
    checkMetadata(input.metadata, [...loc, "metadata"]);
    const now = this.env.clock.nowMs();
    const wanted = input.embedding_config ?? localEmbeddingConfig();
    const archive: ArchiveRecord = {
      id: newId("archive", this.env.rng),
      name: input.name,
      description: input.description ?? null,
      embedding_config: this.embedders.available(wanted) ? wanted : localEmbeddingConfig(),
      metadata: input.metadata ?? {},
      owner_agent_id: input.owner_agent_id ?? null,
      created_at_ms: now,
      updated_at_ms: now,
    };
    return archive;
  }

  async getArchive(id: string): Promise<ArchiveRecord> {
    const archive = await this.tiers.getArchive(id);
    if (archive === null) throw new KelpieError("NOT_FOUND", `Archive ${id} not found`);
    return archive;
  }

  async updateArchive(
    id: string,
    patch: { name?: string | null; description?: string | null },
  ): Promise<ArchiveRecord> {
    checkName(patch.name, ["body", "name"]);
    // Only the patched fields: two PATCHes at once each keep the other's change.
    await this.env.storage.commit([
      {
        op: "patch_archive",
        archive_id: id,
        ...(patch.name != null ? { name: patch.name } : {}),
        ...(patch.description !== undefined ? { description: patch.description } : {}),
        updated_at_ms: this.env.clock.nowMs(),
      },
    ]);
    return this.getArchive(id);
  }

  async deleteArchive(id: string): Promise<void> {
    await this.env.storage.commit([{ op: "delete_archive", archive_id: id }]);
    this.forgetIndexes([id]);
  }

  /** Drops the in-memory and saved indexes of archives that were deleted. */
  forgetIndexes(archiveIds: string[]): void {
    for (const id of archiveIds) {
      this.indexes.delete(id);
      this.store?.remove(id);
    }
  }

  /** The agent's own archive (or its first attached one), or null. */
  async agentArchive(agentId: string): Promise<ArchiveRecord | null> {
    const attached = await this.tiers.listAgentArchives(agentId);
    return attached.find((a) => a.owner_agent_id === agentId) ?? attached[0] ?? null;
  }

  /** The agent's own archive, made and attached in one commit on first use, in its mailbox. */
  async ensureAgentArchive(agentId: string, fence?: Fence): Promise<ArchiveRecord> {
    const found = await this.agentArchive(agentId);
    if (found !== null) return found;
    return this.inMailbox(agentId, fence, async (f) => {
      const again = await this.agentArchive(agentId);
      if (again !== null) return again;
      const agent = await this.env.storage.getAgent(agentId);
      if (agent === null) throw notFound("agent", agentId);
      const archive = this.newArchive(
        { name: `${agent.name} archive`, embedding_config: agent.embedding_config, owner_agent_id: agentId },
        ["body"],
      );
      await this.env.storage.commit(
        [
          { op: "put_archive", archive, create: true },
          { op: "attach_archive", agent_id: agentId, archive_id: archive.id },
        ],
        { fence: f },
      );
      return archive;
    });
  }

  /** Attaches or detaches an archive, in the agent's mailbox. */
  async relation(agentId: string, archiveId: string, action: "attach" | "detach"): Promise<void> {
    await this.inMailbox(agentId, undefined, (fence) =>
      this.env.storage.commit([{ op: `${action}_archive`, agent_id: agentId, archive_id: archiveId }], {
        fence,
      }),
    );
  }

  /** The archives an agent made for itself (deleted with it unless another agent uses them). */
  async ownedArchiveIds(agentId: string): Promise<string[]> {
    return (await this.tiers.listAgentArchives(agentId))
      .filter((a) => a.owner_agent_id === agentId)
      .map((a) => a.id);
  }

  /**
   * After a commit that carried delete_unattached_archives: forgets the indexes of those of the
   * archives that are gone.
   */
  async forgetDeleted(archiveIds: string[]): Promise<void> {
    const gone: string[] = [];
    for (const id of archiveIds) if ((await this.tiers.getArchive(id)) === null) gone.push(id);
    this.forgetIndexes(gone);
  }

  /** Ids of every archive whose passages the agent sees. */
  async agentArchiveIds(agentId: string): Promise<string[]> {
    if ((await this.env.storage.getAgent(agentId)) === null) throw notFound("agent", agentId);
    return (await this.tiers.listAgentArchives(agentId)).map((a) => a.id);
  }

  // --- passages ---------------------------------------------------------------------------

  private checkInput(input: PassageInput, loc: (string | number)[]): void {
    if (typeof input.text !== "string" || input.text.trim() === "") {
      throw invalidField([...loc, "text"], "must be a non-empty string");
    }
    if (input.text.length > PASSAGE_TEXT_CHARS_MAX) {
      throw invalidField(
        [...loc, "text"],
        `is ${input.text.length} characters; a passage holds at most ${PASSAGE_TEXT_CHARS_MAX} (split it into several)`,
      );
    }
    const tags = input.tags ?? [];
    if (tags.length > PASSAGE_TAGS_MAX)
      throw invalidField([...loc, "tags"], `at most ${PASSAGE_TAGS_MAX} tags`);
    for (const [i, tag] of tags.entries()) {
      if (typeof tag !== "string" || tag.length === 0 || tag.length > TAG_LENGTH_MAX) {
        throw invalidField([...loc, "tags", i], `must be a string of 1 to ${TAG_LENGTH_MAX} characters`);
      }
    }
    checkMetadata(input.metadata, [...loc, "metadata"]);
  }

  /** Embeds and stores passages in one archive, in one transaction; indexes them once durable. */
  async insert(
    archiveId: string,
    inputs: PassageInput[],
    loc: (string | number)[] = ["body"],
    commit: (m: Mutation[]) => Promise<void> = (m) => this.env.storage.commit(m),
  ): Promise<PassageRecord[]> {
    if (inputs.length === 0) return [];
    if (inputs.length > PASSAGES_PER_BATCH_MAX) {
      throw invalidField([...loc], `at most ${PASSAGES_PER_BATCH_MAX} passages per request`);
    }
    for (const [i, input] of inputs.entries())
      this.checkInput(input, inputs.length === 1 ? loc : [...loc, i]);
    const archive = await this.getArchive(archiveId);
    const vectors = await this.embedder(archive).embed(inputs.map((i) => i.text));
    const now = this.env.clock.nowMs();
    const rows = inputs.map((input, i) => ({
      passage: {
        id: newId("passage", this.env.rng),
        archive_id: archiveId,
        text: input.text,
        tags: [...new Set(input.tags ?? [])],
        metadata: input.metadata ?? {},
        created_at_ms: input.created_at_ms ?? now,
        updated_at_ms: now,
      },
      vector: vectors[i]!,
    }));
    const dim = rows[0]!.vector.length;
    if (rows.some((r) => r.vector.length !== dim)) {
      throw new KelpieError(
        "LLM_ERROR",
        `embedding model ${this.embedder(archive).handle} returned vectors of mixed sizes`,
      );
    }
    await commit([{ op: "insert_passages", rows }]);
    // Indexed once durable, by the seqs the engine gave them (a passage deleted meanwhile is left out).
    const loaded = this.indexes.get(archiveId);
    if (loaded !== undefined) {
      await loaded.ready;
      const bySeq = await this.tiers.passageSeqs(rows.map((r) => r.passage.id));
      const seqs = [...bySeq.values()];
      const present = rows.filter((r) => bySeq.has(r.passage.id));
      this.indexOf(archiveId, dim).add(
        present.map((r) => ({
          seq: bySeq.get(r.passage.id)!,
          created_at_ms: r.passage.created_at_ms,
          tags: r.passage.tags,
          vector: r.vector,
        })),
      );
      loaded.maxSeq = Math.max(loaded.maxSeq, ...seqs);
      loaded.changes += rows.length;
      this.saveIfDue(archiveId, loaded, false);
    }
    return rows.map((r) => r.passage);
  }

  /**
   * Inserts into the agent's own archive (made on first use): embedded outside the agent's
   * mailbox (it may take a while), committed inside it with the agent's fence.
   */
  async insertForAgent(agentId: string, input: PassageInput, fence?: Fence): Promise<PassageRecord[]> {
    const archive = await this.ensureAgentArchive(agentId, fence);
    return this.insert(archive.id, [input], ["body"], (m) =>
      this.inMailbox(agentId, fence, (f) => this.env.storage.commit(m, { fence: f })),
    );
  }

  /**
   * Deletes a passage; with `agentId`, only one in the archives that agent sees, in its mailbox;
   * with `archiveId`, only one of that archive (else NOT_FOUND).
   */
  async deletePassage(
    passageId: string,
    scope: { agentId?: string; archiveId?: string } = {},
  ): Promise<void> {
    const { agentId, archiveId } = scope;
    const remove = async (fence: Fence | undefined): Promise<{ seq: number; archive_id: string }> => {
      const passage = await this.tiers.getPassage(passageId);
      const seq = (await this.tiers.passageSeqs([passageId])).get(passageId);
      const within =
        passage !== null &&
        (archiveId === undefined || passage.archive_id === archiveId) &&
        (agentId === undefined || (await this.agentArchiveIds(agentId)).includes(passage.archive_id));
      if (passage === null || seq === undefined || !within) {
        throw new KelpieError("NOT_FOUND", `Passage ${passageId} not found`);
      }
      await this.env.storage.commit([{ op: "delete_passage", passage_id: passageId }], { fence });
      return { seq, archive_id: passage.archive_id };
    };
    const gone =
      agentId === undefined ? await remove(undefined) : await this.inMailbox(agentId, undefined, remove);
    const loaded = this.indexes.get(gone.archive_id);
    if (loaded !== undefined) {
      await loaded.ready;
      if (loaded.index?.remove(gone.seq)) {
        loaded.changes += 1;
        this.saveIfDue(gone.archive_id, loaded, false);
      }
    }
  }

  list(archiveIds: string[], query: PassageListQuery): Promise<PassageRecord[]> {
    return this.tiers.listPassages(archiveIds, query);
  }

  // --- search -----------------------------------------------------------------------------

  private embedder(archive: ArchiveRecord): Embedder {
    return this.embedders.forConfig(archive.embedding_config);
  }

  private indexOf(archiveId: string, dimension: number): VectorIndex {
    const loaded = this.indexes.get(archiveId)!;
    loaded.index ??= new VectorIndex(dimension, this.hnswMin);
    return loaded.index;
  }

  /** The archive's vector index, built from storage on first use. */
  private async loadIndex(archiveId: string): Promise<VectorIndex | null> {
    let loaded = this.indexes.get(archiveId);
    if (loaded === undefined) {
      const entry: LoadedIndex = {
        index: null,
        ready: Promise.resolve(),
        maxSeq: 0,
        changes: 0,
        savedAtMs: this.env.clock.monotonicMs(),
        scannedSeq: 0,
        catchingUp: null,
      };
      entry.ready = (async () => {
        if (!(await this.restore(archiveId, entry))) await this.build(archiveId, entry);
        this.saveIfDue(archiveId, entry, true);
      })();
      this.indexes.set(archiveId, entry);
      loaded = entry;
      try {
        await entry.ready;
      } catch (err) {
        this.indexes.delete(archiveId);
        throw err;
      }
    } else {
      await loaded.ready;
      await this.catchUp(archiveId, loaded);
    }
    return loaded.index;
  }

  /**
   * On a database several nodes share, passages inserted through other nodes since the last scan
   * join this node's index before it is searched (one indexed range query, usually empty).
   * Passages deleted elsewhere drop out when their rows are not found.
   */
  private async catchUp(archiveId: string, entry: LoadedIndex): Promise<void> {
    if (this.env.storage.cluster === undefined) return;
    entry.catchingUp ??= (async () => {
      for (;;) {
        const batch = await this.tiers.scanPassageVectors(archiveId, entry.scannedSeq, INDEX_LOAD_BATCH);
        if (batch.length === 0) return;
        const fresh = entry.index === null ? batch : batch.filter((p) => !entry.index!.has(p.seq));
        if (fresh.length > 0) {
          entry.index ??= new VectorIndex(fresh[0]!.vector.length, this.hnswMin);
          entry.index.add(fresh);
          entry.changes += fresh.length;
        }
        entry.scannedSeq = batch.at(-1)!.seq;
        entry.maxSeq = Math.max(entry.maxSeq, entry.scannedSeq);
      }
    })().finally(() => {
      entry.catchingUp = null;
    });
    await entry.catchingUp;
  }

  /** Builds the index from a full scan of the archive's vectors. */
  private async build(archiveId: string, entry: LoadedIndex): Promise<void> {
    entry.index = null;
    entry.maxSeq = 0;
    for (;;) {
      const batch = await this.tiers.scanPassageVectors(archiveId, entry.maxSeq, INDEX_LOAD_BATCH);
      if (batch.length === 0) break;
      entry.index ??= new VectorIndex(batch[0]!.vector.length, this.hnswMin);
      entry.index.add(batch);
      entry.maxSeq = batch.at(-1)!.seq;
    }
    entry.scannedSeq = entry.maxSeq;
    // Never saved: the whole index is unsaved change.
    entry.changes = entry.index?.size ?? 0;
    this.indexStats.built += 1;
  }

  /**
   * Restores the index from its saved graph, catching up with the rows inserted since; false (and
   * the files gone) when there is none or it disagrees with storage in any way: a graph that still
   * holds a deleted passage, or misses one, is rebuilt rather than served.
   */
  private async restore(archiveId: string, entry: LoadedIndex): Promise<boolean> {
    if (this.store === null) return false;
    const saved = this.store.read(archiveId);
    if (saved === null) return false;
    const discard = () => {
      this.store!.remove(archiveId);
      this.indexStats.discarded += 1;
      return false;
    };
    const first = await this.tiers.scanPassageVectors(archiveId, 0, 1);
    if (first.length === 0 || first[0]!.vector.length !== saved.dimension) return discard();
    const metas: PassageMeta[] = [];
    for (let after = 0; after < saved.max_seq; ) {
      const batch = await this.tiers.scanPassageMeta(archiveId, after, INDEX_LOAD_BATCH);
      if (batch.length === 0) break;
      for (const row of batch) if (row.seq <= saved.max_seq) metas.push(row);
      after = batch.at(-1)!.seq;
    }
    if (metas.length !== saved.count) return discard();
    let index: VectorIndex;
    try {
      index = VectorIndex.fromGraph(this.store.graphPath(archiveId), saved.dimension, metas, this.hnswMin);
    } catch {
      return discard();
    }
    let after = saved.max_seq;
    let added = 0;
    for (;;) {
      const batch = await this.tiers.scanPassageVectors(archiveId, after, INDEX_LOAD_BATCH);
      if (batch.length === 0) break;
      try {
        index.add(batch);
      } catch {
        return discard(); // a vector of another size: the archive's model changed
      }
      added += batch.length;
      after = batch.at(-1)!.seq;
    }
    // Last guard: exactly as many passages as storage holds now.
    if (index.size !== (await this.tiers.countPassages([archiveId]))) return discard();
    entry.index = index;
    entry.maxSeq = after;
    entry.scannedSeq = after;
    entry.changes = added;
    this.indexStats.loaded += 1;
    return true;
  }

  /**
   * Saves an HNSW index's graph when it has unsaved changes and `force`, enough of them, or the
   * last save is old. A failed save costs only a rebuild at the next start, so it does not fail
   * the write that triggered it.
   */
  private saveIfDue(archiveId: string, entry: LoadedIndex, force: boolean): void {
    if (this.store === null || entry.index === null || entry.index.mode !== "hnsw" || entry.changes === 0)
      return;
    if (this.indexes.get(archiveId) !== entry) return; // the archive was deleted meanwhile
    const nowMs = this.env.clock.monotonicMs();
    const due =
      force || entry.changes >= INDEX_SAVE_CHANGES_MAX || nowMs - entry.savedAtMs >= INDEX_SAVE_INTERVAL_MS;
    if (!due) return;
    try {
      this.store.save(archiveId, entry.index, entry.maxSeq);
      entry.changes = 0;
      entry.savedAtMs = nowMs;
      this.indexStats.saved += 1;
    } catch {
      this.indexStats.saveFailures += 1;
    }
  }

  /** Saves every HNSW graph with unsaved changes (the server calls this as it stops). */
  async close(): Promise<void> {
    for (const [archiveId, entry] of this.indexes) {
      try {
        await entry.ready;
      } catch {
        continue; // never loaded: nothing to save
      }
      this.saveIfDue(archiveId, entry, true);
    }
  }

  /** Builds every index now (a server may do this at start so first searches are fast). */
  async warm(archiveIds: string[]): Promise<void> {
    for (const id of archiveIds) await this.loadIndex(id);
  }

  /** Cosine scores of a few passages (a rare filter's matches), from their stored vectors. */
  private async scoreExactly(
    query: Float32Array,
    seqs: number[],
    k: number,
  ): Promise<{ seq: number; score: number }[]> {
    const vectors = await this.tiers.getPassageVectorsBySeq(seqs);
    let queryNorm = 0;
    for (let i = 0; i < query.length; i++) queryNorm += query[i]! * query[i]!;
    const hits: { seq: number; score: number }[] = [];
    for (const [seq, v] of vectors) {
      if (v.length !== query.length) continue;
      let dot = 0;
      let norm = 0;
      for (let i = 0; i < v.length; i++) {
        dot += v[i]! * query[i]!;
        norm += v[i]! * v[i]!;
      }
      hits.push({ seq, score: norm === 0 || queryNorm === 0 ? 0 : dot / Math.sqrt(norm * queryNorm) });
    }
    hits.sort((a, b) => b.score - a.score || a.seq - b.seq);
    return hits.slice(0, k);
  }

  /**
   * Hybrid search over some archives: each archive's vector index and the full-text index each
   * propose candidates that pass the filters; fusion.ts orders their union.
   */
  async search(archiveIds: string[], q: ArchivalQuery): Promise<ArchivalHit[]> {
    if (!Number.isInteger(q.topK) || q.topK < 1 || q.topK > ARCHIVAL_SEARCH_TOP_K_MAX) {
      throw invalidField(["query", "top_k"], `must be an integer from 1 to ${ARCHIVAL_SEARCH_TOP_K_MAX}`);
    }
    if (archiveIds.length === 0) return [];
    const archives = await Promise.all(archiveIds.map((id) => this.getArchive(id)));
    const candidates = Math.max(HYBRID_CANDIDATES_MIN, q.topK * HYBRID_CANDIDATES_PER_RESULT);
    const filter: IndexFilter = { tags: q.tags, tagMatch: q.tagMatch, startMs: q.startMs, endMs: q.endMs };

    // Vector half: one query embedding per distinct model, then each archive's index.
    const vectorHits: { seq: number; score: number }[] = [];
    const queryVectors = new Map<string, Promise<Float32Array>>();
    const metas = new Map<number, { created_at_ms: number; tags: string[] } | null>();
    await Promise.all(
      archives.map(async (archive) => {
        const index = await this.loadIndex(archive.id);
        if (index === null || index.size === 0) return;
        const embedder = this.embedder(archive);
        let vector = queryVectors.get(embedder.handle);
        if (vector === undefined) {
          vector = embedder.embed([q.query]).then((v) => v[0]!);
          queryVectors.set(embedder.handle, vector);
        }
        const qv = await vector;
        if (qv.length !== index.dimension) return; // a model changed under an archive: its text half still works
        const answer = index.searchOrMatches(qv, candidates, filter, EXACT_FILTER_PASSAGES_MAX);
        if ("hits" in answer) vectorHits.push(...answer.hits);
        else vectorHits.push(...(await this.scoreExactly(qv, answer.matches, candidates)));
      }),
    );
    vectorHits.sort((a, b) => b.score - a.score || a.seq - b.seq);

    // Text half: the engine's full-text index, filtered like the vectors.
    const textSeqs = (await this.tiers.searchPassagesText(archiveIds, q.query, candidates * 4)).map(
      (r) => r.seq,
    );
    const passages = await this.tiers.getPassagesBySeq([
      ...new Set([...vectorHits.map((h) => h.seq), ...textSeqs]),
    ]);
    for (const [seq, p] of passages) metas.set(seq, { created_at_ms: p.created_at_ms, tags: p.tags });
    const textRanked = textSeqs.filter((seq) => {
      const meta = metas.get(seq);
      return meta != null && matchesFilter(meta, filter);
    });

    const fused = fuse(q.query, vectorHits.slice(0, candidates), textRanked.slice(0, candidates), passages);
    return [...fused.entries()]
      .filter(([seq]) => passages.has(seq))
      .sort((a, b) => b[1].score - a[1].score || a[0] - b[0])
      .slice(0, q.topK)
      .map(([seq, f]) => ({ passage: passages.get(seq)!, ...f }));
  }
}
