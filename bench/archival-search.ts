// Archival search: VectorIndex.search (top 10, no filter) p50/p99 and recall@10 at 100k and 1M
// passages of synthetic 384-d embeddings, against a bare usearch query on the same graph
// (`limit_ms`). Per size also: build time, single-insert throughput after the build, RSS per 100k
// passages, and a search filtered to a tag 10% of passages carry. Once, at 20k passages: the whole
// hybrid search (vector index + FTS5, fused) through ArchivalService on SQLite, with a hashed
// bag-of-words embedder so the model's own cost (~15 ms a query) doesn't hide ours.
//
// Data: real embeddings are clustered and lie near a low-dimensional manifold, so each passage is a
// point of a topic cluster in a LATENT_DIM-d space (TOPICS_COUNT topics), mapped linearly into DIM
// dimensions, plus isotropic noise, normalised. Same-topic passages sit at cosine ≈ 0.6, others ≈ 0.
// Queries come from the same distribution and are not in the set. Everything is seeded.
//
// BENCH_ARCHIVAL_N_MAX caps the largest size (default 1,000,000).
import { rmSync } from "node:fs";
import { join } from "node:path";
import { exactSearch, Index, MetricKind } from "usearch";
import { SystemClock } from "../src/core/clock.ts";
import { SeededRng } from "../src/core/rng.ts";
import { ArchivalService } from "../src/memory/archival.ts";
import type { Embedder, Embedders } from "../src/memory/embedders.ts";
import { type IndexedPassage, VectorIndex } from "../src/memory/vector-index.ts";
import { SqliteStorage } from "../src/storage/sqlite.ts";
import { benchDir, nowMs, percentileMs, round3 } from "./stats.ts";

const DIM = 384;
const SIZES = [100_000, 1_000_000];
const TOPICS_COUNT = 2_000;
const LATENT_DIM = 32;
/** Spread of a topic's passages around its centre, relative to the centre's norm. */
const TOPIC_SPREAD = 0.75;
/** Norm of the isotropic noise added to each (unit-scale) embedding before normalising. */
const NOISE = 0.25;
const SEED = 0x6b656c70;
const TOP_K = 10;
const QUERIES_COUNT = 1_000;
const WARMUP_COUNT = 100;
/** Queries whose results are checked against an exact search. */
const TRUTH_QUERIES_COUNT = 200;
const INSERTS_COUNT = 2_000;
const BUILD_BATCH = 100_000;
const TAG = "tenth";
const TAG_EVERY = 10;
const HYBRID_PASSAGES = 20_000;
const HYBRID_BATCH = 1_000;
const HYBRID_QUERIES_COUNT = 300;
const HYBRID_TOPICS_COUNT = 200;
const VOCABULARY_SIZE = 4_000;

/** mulberry32: a small seeded generator, uniform in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Standard normal draws (Box–Muller) from a uniform generator. */
function gaussian(uniform: () => number): () => number {
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u = 1 - uniform();
    const v = uniform();
    const m = Math.sqrt(-2 * Math.log(u));
    spare = m * Math.sin(2 * Math.PI * v);
    return m * Math.cos(2 * Math.PI * v);
  };
}

/** Clustered, low-intrinsic-dimension unit vectors (see the header). */
class SyntheticEmbeddings {
  /** DIM × LATENT_DIM, column by column. */
  private readonly map = new Float32Array(DIM * LATENT_DIM);
  private readonly topics = new Float32Array(TOPICS_COUNT * LATENT_DIM);

  constructor(seed: number) {
    const gauss = gaussian(mulberry32(seed));
    for (let i = 0; i < this.map.length; i++) this.map[i] = gauss() / Math.sqrt(DIM);
    for (let i = 0; i < this.topics.length; i++) this.topics[i] = gauss() / Math.sqrt(LATENT_DIM);
  }

  /** `count` vectors, row by row, from a stream of their own. */
  draw(count: number, seed: number): Float32Array {
    const uniform = mulberry32(seed);
    const gauss = gaussian(uniform);
    const out = new Float32Array(count * DIM);
    const z = new Float32Array(LATENT_DIM);
    const row = new Float64Array(DIM);
    // Uniform noise of variance NOISE² / DIM per dimension: norm ≈ NOISE.
    const noiseWidth = (NOISE * Math.sqrt(12)) / Math.sqrt(DIM);
    for (let p = 0; p < count; p++) {
      const topic = Math.floor(uniform() * TOPICS_COUNT) * LATENT_DIM;
      for (let j = 0; j < LATENT_DIM; j++) {
        z[j] = this.topics[topic + j]! + (TOPIC_SPREAD * gauss()) / Math.sqrt(LATENT_DIM);
      }
      for (let i = 0; i < DIM; i++) row[i] = noiseWidth * (uniform() - 0.5);
      for (let j = 0; j < LATENT_DIM; j++) {
        const zj = z[j]!;
        const column = j * DIM;
        for (let i = 0; i < DIM; i++) row[i]! += this.map[column + i]! * zj;
      }
      let sum = 0;
      for (let i = 0; i < DIM; i++) sum += row[i]! * row[i]!;
      const scale = 1 / Math.sqrt(sum);
      const base = p * DIM;
      for (let i = 0; i < DIM; i++) out[base + i] = row[i]! * scale;
    }
    return out;
  }
}

function settledRssBytes(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run with --expose-gc (npm run bench does)");
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().rss;
}

/** Lets finalizers of collected native objects (usearch indexes) run. */
async function collect(): Promise<void> {
  settledRssBytes();
  await new Promise((resolve) => setImmediate(resolve));
  settledRssBytes();
}

/** The usearch graph inside a VectorIndex in HNSW mode: the bare primitive its search wraps. */
function graphOf(index: VectorIndex): Index {
  const graph = (index as unknown as { hnsw: unknown }).hnsw;
  if (!(graph instanceof Index))
    throw new Error("VectorIndex keeps its usearch graph elsewhere: update the bench");
  return graph;
}

const seqOf = (row: number) => row + 1;
const tagsOf = (row: number) => (row % TAG_EVERY === 0 ? [TAG] : []);

function passage(vectors: Float32Array, row: number, seq = seqOf(row)): IndexedPassage {
  return {
    seq,
    created_at_ms: 1_700_000_000_000 + row * 1_000,
    tags: tagsOf(row),
    vector: vectors.subarray(row * DIM, (row + 1) * DIM),
  };
}

/** Exact top-k seqs per query (ground truth), optionally among the given rows only. */
function exactTopSeqs(vectors: Float32Array, rows: number[] | null, count: number, queries: Float32Array) {
  // usearch's exactSearch reads from the start of each array's buffer: pass buffers of their own.
  const dataset = rows === null ? vectors.slice(0, count * DIM) : new Float32Array(rows.length * DIM);
  if (rows !== null) {
    rows.forEach((row, i) => {
      dataset.set(vectors.subarray(row * DIM, (row + 1) * DIM), i * DIM);
    });
  }
  const found = exactSearch(dataset, queries.slice(), DIM, TOP_K, MetricKind.Cos, 0) as unknown as {
    keys: BigUint64Array;
  };
  const out: Set<number>[] = [];
  for (let q = 0; q < queries.length / DIM; q++) {
    const keys = found.keys.subarray(q * TOP_K, (q + 1) * TOP_K);
    out.push(new Set(Array.from(keys, (k) => seqOf(rows === null ? Number(k) : rows[Number(k)]!))));
  }
  return out;
}

function recall(found: number[][], truth: Set<number>[]): number {
  let hits = 0;
  found.forEach((seqs, q) => {
    for (const seq of seqs) if (truth[q]!.has(seq)) hits++;
  });
  return round3(hits / (truth.length * TOP_K));
}

interface SizeFigures {
  n: number;
  p50_ms: number;
  p99_ms: number;
  recall_at_10: number;
  limit_ms: number;
  ratio: number;
  build_s: number;
  insert_per_s: number;
  rss_bytes_per_100k: number;
  filtered_p50_ms: number;
  filtered_recall_at_10: number;
}

async function measureSize(
  n: number,
  vectors: Float32Array,
  extraRow: number,
  queries: Float32Array,
): Promise<SizeFigures> {
  const query = (q: number) => queries.subarray(q * DIM, (q + 1) * DIM);
  const truthQueries = queries.subarray(0, TRUTH_QUERIES_COUNT * DIM);
  const truth = exactTopSeqs(vectors, null, n, truthQueries);
  const taggedRows = Array.from({ length: Math.ceil(n / TAG_EVERY) }, (_, i) => i * TAG_EVERY);
  const filteredTruth = exactTopSeqs(vectors, taggedRows, n, truthQueries);

  await collect();
  const rssBefore = settledRssBytes();
  const t0 = nowMs();
  const index = new VectorIndex(DIM);
  for (let start = 0; start < n; start += BUILD_BATCH) {
    const batch: IndexedPassage[] = [];
    for (let row = start; row < Math.min(n, start + BUILD_BATCH); row++) batch.push(passage(vectors, row));
    index.add(batch);
  }
  const buildMs = nowMs() - t0;
  const rssAfter = settledRssBytes();
  if (index.mode !== "hnsw" || index.size !== n)
    throw new Error(`index holds ${index.size} in ${index.mode}`);
  const graph = graphOf(index);

  // Ours and the bare graph query take turns, each going first on every other query, so drift in
  // machine load and the cache warmed by the first one fall evenly on both. Warm-up (i < 0) runs
  // the last queries; results of the first TRUTH_QUERIES_COUNT are checked.
  const oursMs: number[] = [];
  const limitMs: number[] = [];
  const found: number[][] = [];
  for (let i = -WARMUP_COUNT; i < QUERIES_COUNT; i++) {
    const q = query((i + QUERIES_COUNT) % QUERIES_COUNT);
    for (const ourTurn of i % 2 === 0 ? [true, false] : [false, true]) {
      const t = nowMs();
      if (ourTurn) {
        const hits = index.search(q, TOP_K);
        if (i >= 0) oursMs.push(nowMs() - t);
        if (i >= 0 && i < TRUTH_QUERIES_COUNT) found.push(hits.map((h) => h.seq));
      } else {
        graph.search(q, TOP_K, 0);
        if (i >= 0) limitMs.push(nowMs() - t);
      }
    }
  }

  const filter = { tags: [TAG] };
  const filteredMs: number[] = [];
  const filteredFound: number[][] = [];
  for (let i = -WARMUP_COUNT; i < QUERIES_COUNT; i++) {
    const t = nowMs();
    const hits = index.search(query((i + QUERIES_COUNT) % QUERIES_COUNT), TOP_K, filter);
    if (i >= 0) filteredMs.push(nowMs() - t);
    if (i >= 0 && i < TRUTH_QUERIES_COUNT) filteredFound.push(hits.map((h) => h.seq));
  }

  const t1 = nowMs();
  for (let i = 0; i < INSERTS_COUNT; i++) index.add([passage(vectors, extraRow + i, n + i + 1)]);
  const insertMs = nowMs() - t1;

  const p50 = percentileMs(oursMs, 50);
  const limit = percentileMs(limitMs, 50);
  return {
    n,
    p50_ms: p50,
    p99_ms: percentileMs(oursMs, 99),
    recall_at_10: recall(found, truth),
    limit_ms: limit,
    ratio: round3(p50 / limit),
    build_s: round3(buildMs / 1000),
    insert_per_s: Math.round(INSERTS_COUNT / (insertMs / 1000)),
    rss_bytes_per_100k: Math.round(((rssAfter - rssBefore) / n) * 100_000),
    filtered_p50_ms: percentileMs(filteredMs, 50),
    filtered_recall_at_10: recall(filteredFound, filteredTruth),
  };
}

// --- the hybrid path -------------------------------------------------------------------------

/** Feature hashing of words into DIM signed buckets: texts sharing words point the same way. */
class HashedWordsEmbedder implements Embedder {
  readonly handle = "bench/hashed-words";

  async embed(texts: string[]): Promise<Float32Array[]> {
    return texts.map((text) => {
      const v = new Float32Array(DIM);
      for (const word of text.toLowerCase().split(/\W+/)) {
        if (word === "") continue;
        let h = 0x811c9dc5;
        for (let i = 0; i < word.length; i++) h = Math.imul(h ^ word.charCodeAt(i), 0x01000193) >>> 0;
        v[h % DIM]! += h & 0x80000000 ? -1 : 1;
      }
      return v;
    });
  }
}

function vocabulary(uniform: () => number): string[] {
  const syllables = "ka lo mi ne ru sa te vo zi po da fe gu hi ja".split(" ");
  const words = new Set<string>();
  while (words.size < VOCABULARY_SIZE) {
    let word = "";
    const length = 2 + Math.floor(uniform() * 3);
    for (let i = 0; i < length; i++) word += syllables[Math.floor(uniform() * syllables.length)];
    words.add(word);
  }
  return [...words];
}

async function measureHybrid(): Promise<{ hybrid_p50_ms: number; hybrid_p99_ms: number }> {
  const dir = benchDir();
  const storage = new SqliteStorage({ path: join(dir, "kelpie.db"), synchronous: "normal" });
  try {
    await storage.migrate();
    const embedder = new HashedWordsEmbedder();
    const embedders = { available: () => true, forConfig: () => embedder } as unknown as Embedders;
    const archival = new ArchivalService(
      { clock: new SystemClock(), rng: new SeededRng(SEED), storage },
      embedders,
    );
    const archive = await archival.createArchive({
      name: "bench",
      embedding_config: { handle: embedder.handle, embedding_model: "hashed-words", embedding_dim: DIM },
    });

    // Each topic favours 30 words; a text is mostly its topic's words, some from anywhere.
    const uniform = mulberry32(SEED + 2);
    const words = vocabulary(uniform);
    const pick = <T>(list: T[]): T => list[Math.floor(uniform() * list.length)]!;
    const topics = Array.from({ length: HYBRID_TOPICS_COUNT }, () =>
      Array.from({ length: 30 }, () => pick(words)),
    );
    const text = (length: number, topical: number) => {
      const topic = pick(topics);
      return Array.from({ length }, (_, i) => (i < topical ? pick(topic) : pick(words))).join(" ");
    };
    for (let start = 0; start < HYBRID_PASSAGES; start += HYBRID_BATCH) {
      const inputs = Array.from({ length: HYBRID_BATCH }, (_, i) => ({
        text: `${text(12, 8)}.`,
        tags: tagsOf(start + i),
      }));
      await archival.insert(archive.id, inputs);
    }
    await archival.warm([archive.id]);

    const samplesMs: number[] = [];
    for (let i = 0; i < WARMUP_COUNT + HYBRID_QUERIES_COUNT; i++) {
      const query = text(3, 2);
      const t = nowMs();
      const hits = await archival.search([archive.id], { query, topK: TOP_K });
      if (i >= WARMUP_COUNT) samplesMs.push(nowMs() - t);
      if (hits.length === 0) throw new Error(`hybrid search for "${query}" found nothing`);
    }
    return { hybrid_p50_ms: percentileMs(samplesMs, 50), hybrid_p99_ms: percentileMs(samplesMs, 99) };
  } finally {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<Record<string, unknown>> {
  const nMax = Number(process.env.BENCH_ARCHIVAL_N_MAX ?? SIZES.at(-1));
  if (!Number.isInteger(nMax) || nMax < 1) throw new Error("BENCH_ARCHIVAL_N_MAX must be a positive integer");
  const sizes = [...new Set(SIZES.map((n) => Math.min(n, nMax)))];
  const largest = sizes.at(-1)!;

  const t0 = nowMs();
  const source = new SyntheticEmbeddings(SEED);
  // Rows [0, largest) are the passages; the INSERTS_COUNT after them are inserted one by one.
  const vectors = source.draw(largest + INSERTS_COUNT, SEED + 1);
  const queries = source.draw(QUERIES_COUNT, SEED + 3);
  console.log(
    `${largest + INSERTS_COUNT} vectors of ${DIM} dimensions around ${TOPICS_COUNT} topics drawn in ${round3((nowMs() - t0) / 1000)} s`,
  );

  const bySize: SizeFigures[] = [];
  for (const n of sizes) {
    const f = await measureSize(n, vectors, largest, queries);
    bySize.push(f);
    console.log(
      `n=${n}: search p50 ${f.p50_ms} ms, p99 ${f.p99_ms} ms (bare usearch ${f.limit_ms} ms, ratio ${f.ratio}), recall@10 ${f.recall_at_10}; ` +
        `filtered to a 10% tag p50 ${f.filtered_p50_ms} ms, recall@10 ${f.filtered_recall_at_10}; ` +
        `build ${f.build_s} s, ${f.insert_per_s} single inserts/s, ${(f.rss_bytes_per_100k / 2 ** 20).toFixed(1)} MiB RSS per 100k`,
    );
    await collect();
  }
  const hybrid = await measureHybrid();
  console.log(
    `hybrid search (vector + FTS5, SQLite) over ${HYBRID_PASSAGES} passages: p50 ${hybrid.hybrid_p50_ms} ms, p99 ${hybrid.hybrid_p99_ms} ms`,
  );
  if (largest < SIZES.at(-1)!) console.log(`capped at ${largest} passages by BENCH_ARCHIVAL_N_MAX`);

  const top = bySize.at(-1)!;
  const at100k = bySize.find((f) => f.n === 100_000);
  return {
    ...top,
    ...(at100k !== undefined && at100k !== top ? { n100k: at100k } : {}),
    ...hybrid,
  };
}
