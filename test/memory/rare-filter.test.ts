// A filter that matches few passages of a large (graph-mode) archive is scored exactly from the
// stored vectors instead of walking the graph: every match is found, in the right order.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.ts";
import { SeededRng } from "../../src/core/rng.ts";
import { ArchivalService } from "../../src/memory/archival.ts";
import { VectorIndex } from "../../src/memory/vector-index.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import { SqliteStorage } from "../../src/storage/sqlite.ts";
import type { Storage } from "../../src/storage/types.ts";
import { FAKE_EMBEDDING_DIM, FakeEmbedders, fakeVector } from "../support/fake-embedders.ts";
import { withTestDatabase } from "../support/postgres.ts";

const db = withTestDatabase();
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe("rare filters on graph-mode archives", () => {
  it("the index hands back a rare filter's matches, and a common filter's graph hits", () => {
    const index = new VectorIndex(FAKE_EMBEDDING_DIM, 64);
    index.add(
      Array.from({ length: 2_000 }, (_, i) => ({
        seq: i + 1,
        created_at_ms: i,
        tags: i % 200 === 0 ? ["rare"] : i % 2 === 0 ? ["even"] : [],
        vector: fakeVector(i),
      })),
    );
    expect(index.mode).toBe("hnsw");
    const rare = index.searchOrMatches(fakeVector(7), 20, { tags: ["rare"] }, 100);
    expect("matches" in rare && rare.matches.sort((a, b) => a - b)).toEqual(
      Array.from({ length: 10 }, (_, i) => i * 200 + 1),
    );
    const common = index.searchOrMatches(fakeVector(8), 5, { tags: ["even"] }, 100);
    expect("hits" in common && common.hits).toHaveLength(5);
    const none = index.searchOrMatches(fakeVector(8), 5, { tags: ["nobody"] }, 100);
    expect("matches" in none && none.matches).toEqual([]);
  });

  const engines: [string, () => Promise<Storage>][] = [
    ["memory", async () => new MemoryStorage()],
    [
      "sqlite",
      async () => {
        const dir = mkdtempSync(join(tmpdir(), "kelpie-rare-"));
        dirs.push(dir);
        const s = new SqliteStorage({ path: join(dir, "k.db") });
        await s.migrate();
        return s;
      },
    ],
    [
      "postgres",
      async () => {
        const s = new PostgresStorage({ url: db.url() });
        await s.migrate();
        return s;
      },
    ],
  ];
  for (const [name, open] of engines) {
    it(`archival search finds every passage with a rare tag, best first (${name})`, async () => {
      const storage = await open();
      try {
        const env = { clock: new ManualClock(), rng: new SeededRng(3), storage };
        const archival = new ArchivalService(env, new FakeEmbedders(), { hnswMin: 64 });
        const archive = await archival.createArchive({ name: "big" });
        await archival.insert(
          archive.id,
          Array.from({ length: 1_000 }, (_, i) => ({ text: `p-${i}`, tags: i % 100 === 0 ? ["rare"] : [] })),
        );
        const hits = await archival.search([archive.id], { query: "p-300", topK: 20, tags: ["rare"] });
        expect(hits.map((h) => h.passage.text).sort()).toEqual(
          ["p-0", "p-100", "p-200", "p-300", "p-400", "p-500", "p-600", "p-700", "p-800", "p-900"].sort(),
        );
        // The vector half scored every match exactly: the query's own passage at cosine 1.
        const best = [...hits].sort((a, b) => (b.vector_score ?? -1) - (a.vector_score ?? -1))[0]!;
        expect(best.passage.text).toBe("p-300");
        expect(best.vector_score).toBeCloseTo(1, 5);
        expect(hits.every((h) => h.vector_score !== null)).toBe(true);
      } finally {
        await storage.close();
      }
    });
  }
});
