// One archive's vectors, searchable by cosine similarity. Small archives are searched exactly
// (brute force over normalised vectors: exact and, at this size, faster than a graph); from
// HNSW_PASSAGES_MIN on, an HNSW graph (usearch) answers. Tags and creation times stay beside each
// key so filters apply to either path.
import { Index, MetricKind, ScalarKind } from "usearch";
import { assert } from "../core/assert.ts";

/** Below this many passages an archive is searched exactly. */
export const HNSW_PASSAGES_MIN = 4_096;
export const HNSW_CONNECTIVITY = 16;
// Building costs with the add expansion (a graph is rebuilt whenever no saved one can be used),
// searching with the search one: a narrow add and a wide search keep recall@10 above 0.95 at 1M
// passages and build about 3x faster than 128/128 (npm run bench -- archival-search).
export const HNSW_EXPANSION_ADD = 40;
export const HNSW_EXPANSION_SEARCH = 256;
/** A filtered HNSW search widens its candidate list by this factor until enough pass the filter. */
const FILTER_WIDEN_FACTOR = 4;
/**
 * Before a filtered pass asks for more than this share of the graph, the passages the filter lets
 * through are counted (a scan of the metadata, far cheaper than such a pass), so that a filter
 * matching few or none stops once it has them all instead of walking the whole graph.
 */
const FILTER_COUNT_SHARE = 1 / 64;

export interface IndexFilter {
  tags?: string[] | undefined;
  tagMatch?: "any" | "all" | undefined;
  startMs?: number | undefined;
  endMs?: number | undefined;
}

export interface IndexedPassage {
  seq: number;
  created_at_ms: number;
  tags: string[];
  vector: Float32Array;
}

export interface VectorHit {
  seq: number;
  /** Cosine similarity, 1 = same direction. */
  score: number;
}

interface Meta {
  created_at_ms: number;
  tags: string[];
}

function normalised(vector: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < vector.length; i++) sum += vector[i]! * vector[i]!;
  const norm = Math.sqrt(sum);
  const out = new Float32Array(vector.length);
  if (norm === 0) return out;
  for (let i = 0; i < vector.length; i++) out[i] = vector[i]! / norm;
  return out;
}

export function matchesFilter(meta: Meta, filter: IndexFilter | undefined): boolean {
  if (filter === undefined) return true;
  if (filter.startMs !== undefined && meta.created_at_ms < filter.startMs) return false;
  if (filter.endMs !== undefined && meta.created_at_ms > filter.endMs) return false;
  const tags = filter.tags;
  if (tags !== undefined && tags.length > 0) {
    return filter.tagMatch === "all"
      ? tags.every((t) => meta.tags.includes(t))
      : tags.some((t) => meta.tags.includes(t));
  }
  return true;
}

/** A passage's filter metadata, keyed by its seq (what a saved graph needs beside it). */
export interface PassageMeta extends Meta {
  seq: number;
}

function newGraph(dimension: number): Index {
  return new Index({
    dimensions: dimension,
    metric: MetricKind.Cos,
    quantization: ScalarKind.F32,
    connectivity: HNSW_CONNECTIVITY,
    expansion_add: HNSW_EXPANSION_ADD,
    expansion_search: HNSW_EXPANSION_SEARCH,
    multi: false,
  });
}

export class VectorIndex {
  private readonly meta = new Map<number, Meta>();
  // Exact mode: normalised vectors packed row by row, with the seq of each row.
  private rows = new Float32Array(0);
  private rowSeqs: number[] = [];
  private rowOfSeq = new Map<number, number>();
  private hnsw: Index | null = null;

  constructor(
    readonly dimension: number,
    private readonly hnswMin = HNSW_PASSAGES_MIN,
  ) {
    assert(Number.isInteger(dimension) && dimension > 0, "vector dimension must be a positive integer");
  }

  get size(): number {
    return this.meta.size;
  }

  has(seq: number): boolean {
    return this.meta.has(seq);
  }

  get mode(): "exact" | "hnsw" {
    return this.hnsw === null ? "exact" : "hnsw";
  }

  /**
   * An HNSW index whose graph is read from a file written by saveGraph, with the metadata of every
   * passage in it. The file must be whole (usearch's loader does not survive every truncation: the
   * caller checks its checksum first). Throws unless graph and metadata hold exactly the same seqs,
   * so a graph that missed an insert or still holds a deleted passage is never served.
   */
  static fromGraph(
    path: string,
    dimension: number,
    metas: PassageMeta[],
    hnswMin = HNSW_PASSAGES_MIN,
  ): VectorIndex {
    const index = new VectorIndex(dimension, hnswMin);
    const graph = newGraph(dimension);
    graph.load(path);
    if (graph.dimensions() !== dimension) {
      throw new Error(`saved graph has ${graph.dimensions()} dimensions, the archive ${dimension}`);
    }
    for (const m of metas) index.meta.set(m.seq, { created_at_ms: m.created_at_ms, tags: m.tags });
    if (graph.size() !== index.meta.size || index.meta.size !== metas.length) {
      throw new Error(`saved graph holds ${graph.size()} passages, storage ${metas.length}`);
    }
    if (metas.length > 0) {
      const present = graph.contains(BigUint64Array.from(metas, (m) => BigInt(m.seq))) as boolean[];
      if (!present.every(Boolean)) throw new Error("saved graph lacks passages that storage holds");
    }
    index.hnsw = graph;
    return index;
  }

  /** Writes the HNSW graph to a file (only HNSW mode has one); metadata stays with storage. */
  saveGraph(path: string): void {
    assert(this.hnsw !== null, "only an index in HNSW mode has a graph to save");
    assert(this.hnsw.size() === this.meta.size, "graph and metadata must hold the same passages");
    this.hnsw.save(path);
  }

  add(items: IndexedPassage[]): void {
    const fresh = items.filter((item) => !this.meta.has(item.seq));
    for (const item of fresh) {
      if (item.vector.length !== this.dimension) {
        throw new Error(
          `vector of passage ${item.seq} has ${item.vector.length} dimensions, the index ${this.dimension}`,
        );
      }
    }
    for (const item of fresh) this.meta.set(item.seq, { created_at_ms: item.created_at_ms, tags: item.tags });
    if (this.hnsw === null && this.meta.size < this.hnswMin) {
      this.addExact(fresh);
      return;
    }
    if (this.hnsw === null) this.promote();
    this.addHnsw(fresh);
  }

  private addExact(items: IndexedPassage[]): void {
    const start = this.rowSeqs.length;
    const needed = (start + items.length) * this.dimension;
    if (needed > this.rows.length) {
      const grown = new Float32Array(Math.max(needed, this.rows.length * 2));
      grown.set(this.rows);
      this.rows = grown;
    }
    items.forEach((item, i) => {
      this.rows.set(normalised(item.vector), (start + i) * this.dimension);
      this.rowSeqs.push(item.seq);
      this.rowOfSeq.set(item.seq, start + i);
    });
  }

  /** Moves the exact rows into a new HNSW graph, then frees them. */
  private promote(): void {
    this.hnsw = newGraph(this.dimension);
    const n = this.rowSeqs.length;
    if (n > 0) {
      this.hnsw.add(
        BigUint64Array.from(this.rowSeqs, (s) => BigInt(s)),
        this.rows.subarray(0, n * this.dimension),
      );
    }
    this.rows = new Float32Array(0);
    this.rowSeqs = [];
    this.rowOfSeq = new Map();
  }

  private addHnsw(items: IndexedPassage[]): void {
    if (items.length === 0) return;
    const flat = new Float32Array(items.length * this.dimension);
    for (const [i, item] of items.entries()) flat.set(item.vector, i * this.dimension);
    this.hnsw!.add(
      BigUint64Array.from(items, (item) => BigInt(item.seq)),
      flat,
    );
  }

  remove(seq: number): boolean {
    if (!this.meta.delete(seq)) return false;
    if (this.hnsw !== null) {
      this.hnsw.remove(BigInt(seq));
      return true;
    }
    // Exact mode: move the last row into the hole.
    const row = this.rowOfSeq.get(seq)!;
    const last = this.rowSeqs.length - 1;
    if (row !== last) {
      const lastSeq = this.rowSeqs[last]!;
      this.rows.copyWithin(row * this.dimension, last * this.dimension, (last + 1) * this.dimension);
      this.rowSeqs[row] = lastSeq;
      this.rowOfSeq.set(lastSeq, row);
    }
    this.rowSeqs.pop();
    this.rowOfSeq.delete(seq);
    return true;
  }

  /** The k passages most similar to the query that pass the filter, best first. */
  search(query: Float32Array, k: number, filter?: IndexFilter): VectorHit[] {
    assert(query.length === this.dimension, "query vector dimension must match the index");
    if (k <= 0 || this.meta.size === 0) return [];
    return this.hnsw === null ? this.searchExact(query, k, filter) : this.searchHnsw(query, k, filter);
  }

  private searchExact(query: Float32Array, k: number, filter: IndexFilter | undefined): VectorHit[] {
    const q = normalised(query);
    const d = this.dimension;
    const hits: VectorHit[] = [];
    for (let row = 0; row < this.rowSeqs.length; row++) {
      const seq = this.rowSeqs[row]!;
      if (filter !== undefined && !matchesFilter(this.meta.get(seq)!, filter)) continue;
      let dot = 0;
      const base = row * d;
      for (let i = 0; i < d; i++) dot += this.rows[base + i]! * q[i]!;
      hits.push({ seq, score: dot });
    }
    hits.sort((a, b) => b.score - a.score || a.seq - b.seq);
    return hits.slice(0, k);
  }

  private searchHnsw(query: Float32Array, k: number, filter: IndexFilter | undefined): VectorHit[] {
    const filtered =
      filter !== undefined &&
      (filter.tags?.length || filter.startMs !== undefined || filter.endMs !== undefined);
    // A graph search costs the same for any k up to its expansion (the candidate list it keeps
    // anyway), so a filtered one takes at least that many candidates from its first pass.
    let want = Math.min(
      this.meta.size,
      filtered ? Math.max(k * FILTER_WIDEN_FACTOR, HNSW_EXPANSION_SEARCH) : k,
    );
    let matching = Number.POSITIVE_INFINITY;
    for (;;) {
      if (filtered && matching === Number.POSITIVE_INFINITY && want > this.meta.size * FILTER_COUNT_SHARE) {
        matching = this.countMatching(filter);
        if (matching === 0) return [];
      }
      const found = this.hnsw!.search(query, want, 0);
      const hits: VectorHit[] = [];
      for (let i = 0; i < found.keys.length; i++) {
        const seq = Number(found.keys[i]!);
        const meta = this.meta.get(seq);
        if (meta === undefined || (filtered && !matchesFilter(meta, filter))) continue;
        hits.push({ seq, score: 1 - found.distances[i]! });
        if (hits.length === k) return hits;
      }
      // Fewer than k passed: widen until every match was found or the whole index was asked for.
      if (want >= this.meta.size || hits.length >= matching) return hits;
      want = Math.min(this.meta.size, want * FILTER_WIDEN_FACTOR);
    }
  }

  /**
   * Like `search`, but when a filter matches at most `exactMax` passages of a graph-mode index and
   * the graph's first pass finds fewer than k of them, answers with those passages' seqs instead:
   * the caller scores them exactly (their vectors live in storage), rather than walking most of
   * the graph to find a handful of matches.
   */
  searchOrMatches(
    query: Float32Array,
    k: number,
    filter: IndexFilter | undefined,
    exactMax: number,
  ): { hits: VectorHit[] } | { matches: number[] } {
    const filtered =
      filter !== undefined &&
      (filter.tags?.length || filter.startMs !== undefined || filter.endMs !== undefined);
    if (this.hnsw === null || !filtered || k <= 0 || this.meta.size === 0)
      return { hits: this.search(query, k, filter) };
    const want = Math.min(this.meta.size, Math.max(k * FILTER_WIDEN_FACTOR, HNSW_EXPANSION_SEARCH));
    const found = this.hnsw.search(query, want, 0);
    const hits: VectorHit[] = [];
    for (let i = 0; i < found.keys.length && hits.length < k; i++) {
      const seq = Number(found.keys[i]!);
      const meta = this.meta.get(seq);
      if (meta !== undefined && matchesFilter(meta, filter))
        hits.push({ seq, score: 1 - found.distances[i]! });
    }
    if (hits.length === k || want >= this.meta.size) return { hits };
    const matches: number[] = [];
    for (const [seq, meta] of this.meta) {
      if (!matchesFilter(meta, filter)) continue;
      matches.push(seq);
      if (matches.length > exactMax) return { hits: this.search(query, k, filter) };
    }
    return { matches };
  }

  private countMatching(filter: IndexFilter | undefined): number {
    let count = 0;
    for (const meta of this.meta.values()) if (matchesFilter(meta, filter)) count++;
    return count;
  }
}
