// The vector index against exact search: HNSW recall on a clustered corpus with known nearest
// neighbours, exact mode below the threshold, filters, and removal.
import { describe, expect, it } from "vitest";
import { HNSW_PASSAGES_MIN, VectorIndex } from "../../src/memory/vector-index.ts";

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Vectors around random cluster centres, as real embeddings are. */
function corpus(n: number, dim: number, clusters: number, seed: number): Float32Array[] {
  const rand = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand());
  const centres = Array.from({ length: clusters }, () => Float32Array.from({ length: dim }, gauss));
  return Array.from({ length: n }, () => {
    const c = centres[Math.floor(rand() * clusters)]!;
    return Float32Array.from(c, (x) => x + 0.6 * gauss());
  });
}

function exactTop(vectors: Float32Array[], q: Float32Array, k: number): number[] {
  const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const qn = norm(q);
  return vectors
    .map((v, i) => ({ seq: i + 1, score: v.reduce((s, x, j) => s + x * q[j]!, 0) / (norm(v) * qn) }))
    .sort((a, b) => b.score - a.score)
    .slice(0, k)
    .map((h) => h.seq);
}

describe("vector index", () => {
  it("HNSW recall@10 is at least 0.95 against exact search on 10,000 passages", () => {
    const dim = 128;
    const vectors = corpus(10_000, dim, 200, 7);
    const index = new VectorIndex(dim);
    index.add(vectors.map((vector, i) => ({ seq: i + 1, created_at_ms: i, tags: [], vector })));
    expect(index.mode).toBe("hnsw");
    const queries = corpus(100, dim, 200, 8);
    let found = 0;
    for (const q of queries) {
      const truth = new Set(exactTop(vectors, q, 10));
      found += index.search(q, 10).filter((h) => truth.has(h.seq)).length;
    }
    const recall = found / (queries.length * 10);
    expect(recall).toBeGreaterThanOrEqual(0.95);
  }, 60_000);

  it("searches small archives exactly, switches to HNSW past the threshold, and filters either way", () => {
    const dim = 16;
    const vectors = corpus(HNSW_PASSAGES_MIN + 10, dim, 20, 3);
    const index = new VectorIndex(dim);
    const items = vectors.map((vector, i) => ({
      seq: i + 1,
      created_at_ms: i,
      tags: i % 10 === 0 ? ["tenth"] : [],
      vector,
    }));
    index.add(items.slice(0, 100));
    expect(index.mode).toBe("exact");
    const q = vectors[42]!;
    expect(index.search(q, 5).map((h) => h.seq)).toEqual(exactTop(vectors.slice(0, 100), q, 5));
    expect(index.search(q, 1)[0]!.score).toBeCloseTo(1, 5);
    for (const h of index.search(q, 5, { tags: ["tenth"] })) expect((h.seq - 1) % 10).toBe(0);
    expect(
      index
        .search(q, 200, { startMs: 10, endMs: 19 })
        .map((h) => h.seq)
        .sort((a, b) => a - b),
    ).toEqual(Array.from({ length: 10 }, (_, i) => i + 11));
    index.remove(43);
    expect(index.search(q, 5).map((h) => h.seq)).not.toContain(43);
    expect(index.size).toBe(99);

    index.add(items.slice(100));
    expect(index.mode).toBe("hnsw");
    expect(index.has(43)).toBe(false);
    const filtered = index.search(vectors[500]!, 20, { tags: ["tenth"] });
    expect(filtered).toHaveLength(20);
    for (const h of filtered) expect((h.seq - 1) % 10).toBe(0);
    index.remove(501);
    expect(index.search(vectors[500]!, 3).map((h) => h.seq)).not.toContain(501);
    // A vector of the wrong size is refused, not silently indexed.
    expect(() =>
      index.add([{ seq: 1_000_000, created_at_ms: 0, tags: [], vector: new Float32Array(3) }]),
    ).toThrow(/dimensions/);
  });
});
