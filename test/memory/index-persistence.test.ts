// Saved HNSW graphs across restarts, on SQLite in a temp directory: a clean restart loads the graph
// (no rebuild) and answers as before; rows inserted after the save are caught up; a passage deleted
// after the save without a clean close forces a rebuild; damaged files are rebuilt, never served.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.ts";
import type { Env } from "../../src/core/env.ts";
import { SeededRng } from "../../src/core/rng.ts";
import { ArchivalService, INDEX_SAVE_INTERVAL_MS } from "../../src/memory/archival.ts";
import { openStorage } from "../../src/storage/open.ts";
import { FAKE_EMBEDDING_DIM, FakeEmbedders } from "../support/fake-embedders.ts";

const HNSW_MIN = 64;
const PASSAGES = 300;
const BATCH = 100;

let dir: string;
let clock: ManualClock;
let starts = 0;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "kelpie-index-"));
  clock = new ManualClock();
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

interface Server {
  archival: ArchivalService;
  close(clean: boolean): Promise<void>;
}

async function start(): Promise<Server> {
  const storage = await openStorage({ engine: "sqlite", dataDir: dir });
  starts += 1;
  const env: Env = { clock, rng: new SeededRng(starts), storage };
  const archival = new ArchivalService(env, new FakeEmbedders(), {
    indexDir: join(dir, "index"),
    hnswMin: HNSW_MIN,
  });
  return {
    archival,
    // Unclean: the process dies; only what is already on disk survives.
    async close(clean: boolean) {
      if (clean) await archival.close();
      await storage.close();
    },
  };
}

async function fill(archival: ArchivalService, archiveId: string, from: number, to: number): Promise<void> {
  for (let start = from; start < to; start += BATCH) {
    const inputs = [];
    for (let n = start; n < Math.min(to, start + BATCH); n++)
      inputs.push({ text: `p-${n} note number ${n}` });
    await archival.insert(archiveId, inputs);
  }
}

const QUERIES = ["p-3", "p-77", "p-150", "p-299", "p-1000"];

async function answers(archival: ArchivalService, archiveId: string) {
  const out = [];
  for (const query of QUERIES) {
    const hits = await archival.search([archiveId], { query, topK: 5 });
    out.push(hits.map((h) => ({ id: h.passage.id, score: h.score, vector: h.vector_score })));
  }
  return out;
}

/**
 * Whether a rebuilt graph finds, for each query "p-N", the passage "p-N" among its best three: the
 * passage is an exact vector and word match, but an approximate graph built by threaded inserts
 * may rank a neighbour above it, so the order of two near-ties is not pinned down.
 */
async function findsEachPassage(archival: ArchivalService, archiveId: string): Promise<string[]> {
  const missed: string[] = [];
  // The last query matches no passage exactly.
  for (const query of QUERIES.slice(0, -1)) {
    const hits = await archival.search([archiveId], { query, topK: 3 });
    if (!hits.some((h) => h.passage.text.startsWith(`${query} `))) missed.push(query);
  }
  return missed;
}

async function seeded(): Promise<{ archiveId: string; before: Awaited<ReturnType<typeof answers>> }> {
  const server = await start();
  const archive = await server.archival.createArchive({ name: "notes" });
  await fill(server.archival, archive.id, 0, PASSAGES);
  const before = await answers(server.archival, archive.id);
  // The first search built the index in HNSW mode and saved it.
  expect(server.archival.indexStats).toMatchObject({ built: 1, loaded: 0, saved: 1 });
  await server.close(true);
  return { archiveId: archive.id, before };
}

describe("saved HNSW graphs", () => {
  it("loads the saved graph on restart instead of rebuilding, with the same answers", async () => {
    const { archiveId, before } = await seeded();
    expect(readdirSync(join(dir, "index")).sort()).toEqual([
      `${archiveId}.usearch`,
      `${archiveId}.usearch.json`,
    ]);
    const sidecar = JSON.parse(readFileSync(join(dir, "index", `${archiveId}.usearch.json`), "utf8"));
    expect(sidecar).toMatchObject({ count: PASSAGES, dimension: FAKE_EMBEDDING_DIM, format: 1 });

    const server = await start();
    expect(await answers(server.archival, archiveId)).toEqual(before);
    expect(server.archival.indexStats).toMatchObject({ built: 0, loaded: 1, discarded: 0 });
    await server.close(true);
  });

  it("catches up with passages inserted after the save", async () => {
    const { archiveId } = await seeded();
    let server = await start();
    await server.archival.search([archiveId], { query: "p-1", topK: 1 });
    await fill(server.archival, archiveId, PASSAGES, PASSAGES + 10);
    await server.close(false); // the few inserts are not due for a save
    expect(server.archival.indexStats.saved).toBe(0);

    server = await start();
    const hits = await server.archival.search([archiveId], { query: `p-${PASSAGES + 5}`, topK: 3 });
    expect(hits[0]!.passage.text).toBe(`p-${PASSAGES + 5} note number ${PASSAGES + 5}`);
    expect(hits[0]!.vector_score).toBeCloseTo(1, 5);
    expect(server.archival.indexStats).toMatchObject({ built: 0, loaded: 1, discarded: 0 });
    await server.close(true);
  });

  it("rebuilds when a passage was deleted after the save and the server died", async () => {
    const { archiveId } = await seeded();
    let server = await start();
    const [victim] = await server.archival.search([archiveId], { query: "p-77", topK: 1 });
    expect(victim!.passage.text).toBe("p-77 note number 77");
    await server.archival.deletePassage(victim!.passage.id);
    // And one insert, so the passage count alone matches the saved graph's.
    await fill(server.archival, archiveId, PASSAGES, PASSAGES + 1);
    await server.close(false);

    server = await start();
    const hits = await server.archival.search([archiveId], { query: "p-77", topK: 10 });
    expect(hits.map((h) => h.passage.id)).not.toContain(victim!.passage.id);
    expect(server.archival.indexStats).toMatchObject({ built: 1, loaded: 0, discarded: 1, saved: 1 });
    await server.close(true);
  });

  it("rebuilds from storage when the graph file is truncated or the sidecar is garbage", async () => {
    const { archiveId } = await seeded();
    const graph = join(dir, "index", `${archiveId}.usearch`);
    const bytes = readFileSync(graph);
    // usearch aborts the whole process on this one if it ever reads it.
    writeFileSync(graph, bytes.subarray(0, bytes.length - 10));
    let server = await start();
    expect(await findsEachPassage(server.archival, archiveId)).toEqual([]);
    expect(server.archival.indexStats).toMatchObject({ built: 1, loaded: 0 });
    await server.close(true);

    writeFileSync(join(dir, "index", `${archiveId}.usearch.json`), "{not json");
    server = await start();
    expect(await findsEachPassage(server.archival, archiveId)).toEqual([]);
    expect(server.archival.indexStats).toMatchObject({ built: 1, loaded: 0 });
    await server.close(true);

    // The rebuilt graph was saved again and loads.
    server = await start();
    expect(await findsEachPassage(server.archival, archiveId)).toEqual([]);
    expect(server.archival.indexStats).toMatchObject({ built: 0, loaded: 1 });
    await server.close(true);
  });

  it("saves again on the first write after the interval, and deletes the files with the archive", async () => {
    const { archiveId } = await seeded();
    const server = await start();
    await server.archival.search([archiveId], { query: "p-1", topK: 1 });
    await fill(server.archival, archiveId, PASSAGES, PASSAGES + 1);
    expect(server.archival.indexStats.saved).toBe(0);
    clock.advanceMs(INDEX_SAVE_INTERVAL_MS);
    await fill(server.archival, archiveId, PASSAGES + 1, PASSAGES + 2);
    expect(server.archival.indexStats.saved).toBe(1);
    const sidecar = JSON.parse(readFileSync(join(dir, "index", `${archiveId}.usearch.json`), "utf8"));
    expect(sidecar.count).toBe(PASSAGES + 2);

    await server.archival.deleteArchive(archiveId);
    expect(existsSync(join(dir, "index", `${archiveId}.usearch`))).toBe(false);
    expect(existsSync(join(dir, "index", `${archiveId}.usearch.json`))).toBe(false);
    await server.close(true);
    expect(readdirSync(join(dir, "index"))).toEqual([]);
  });

  it("keeps small archives (exact mode) off disk", async () => {
    const server = await start();
    const archive = await server.archival.createArchive({ name: "small" });
    await fill(server.archival, archive.id, 0, HNSW_MIN - 1);
    await server.archival.search([archive.id], { query: "p-3", topK: 1 });
    await server.close(true);
    expect(readdirSync(join(dir, "index"))).toEqual([]);
  });
});
