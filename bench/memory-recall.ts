// Memory recall on long real conversations (LoCoMo format): does archival search find the turn
// that answers a question? For each conversation a fresh agent archives every turn through
// Kelpie's own insert path (SQLite, the local embedding model), tagged with its session, speaker
// and turn id and dated by its session; then each question of categories 1–4 goes through the
// archival_memory_search tool itself. Two baselines on the same turns: BM25 alone
// (wink-bm25-text-search) and vector alone (exact cosine, the same embedder's vectors).
//
// npm run bench -- memory-recall [--data FILE]   (default ../shared/data/locomo/locomo-dev.json,
// relative to the project root; a relative --data is taken from where npm was run).
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { SystemClock } from "../src/core/clock.ts";
import { SeededRng } from "../src/core/rng.ts";
import { llmConfigFromEnv } from "../src/llm/registry.ts";
import { type Embedder, Embedders, localEmbeddingConfig } from "../src/memory/embedders.ts";
import { noNetworkFetch } from "../src/net/egress-fetch.ts";
import { createKelpie, type Kelpie } from "../src/server.ts";
import { SqliteStorage } from "../src/storage/sqlite.ts";
import { type Conversation, RANKED_DEPTH, readLocomo, type Scores, score, summarize } from "./locomo.ts";
import { benchDir, nowMs, percentileMs, round3 } from "./stats.ts";

const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const DEFAULT_DATA = "../shared/data/locomo/locomo-dev.json";
const SEED = 0x10c0;

function dataPath(): string {
  const args = process.argv.slice(3);
  const at = args.indexOf("--data");
  if (at < 0) return resolve(PROJECT_ROOT, DEFAULT_DATA);
  const given = args[at + 1];
  if (given === undefined || given === "") throw new Error("--data needs a file path");
  return isAbsolute(given) ? given : resolve(process.env.INIT_CWD ?? process.cwd(), given);
}

type Row = { category: number; scores: Scores };
interface System {
  rows: Row[];
  samplesMs: number[];
}

// --- BM25 baseline: wink-bm25-text-search with its companion text pipeline -------------------

interface WinkEngine {
  defineConfig(config: { fldWeights: Record<string, number> }): void;
  definePrepTasks(tasks: ((x: never) => unknown)[]): void;
  addDoc(doc: Record<string, string>, id: string): void;
  consolidate(): void;
  search(text: string, limit: number): [string, number][];
}
const require = createRequire(import.meta.url);
const winkBm25 = require("wink-bm25-text-search") as () => WinkEngine;
const nlp = require("wink-nlp-utils") as {
  string: Record<"lowerCase" | "tokenize0", (x: never) => unknown>;
  tokens: Record<"removeWords" | "stem", (x: never) => unknown>;
};

function bm25Index(conv: Conversation): WinkEngine {
  const engine = winkBm25();
  engine.defineConfig({ fldWeights: { text: 1 } });
  engine.definePrepTasks([
    nlp.string.lowerCase,
    nlp.string.tokenize0,
    nlp.tokens.removeWords,
    nlp.tokens.stem,
  ]);
  for (const t of conv.turns) engine.addDoc({ text: passageText(t) }, t.diaId);
  engine.consolidate();
  return engine;
}

// --- vector baseline: exact cosine over the vectors Kelpie stored ----------------------------

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

// --- Kelpie ------------------------------------------------------------------------------------

/** What an agent would archive of a turn: who said it, and what. */
function passageText(t: Conversation["turns"][number]): string {
  return `${t.speaker}: ${t.text}`;
}

async function newAgent(kelpie: Kelpie, name: string): Promise<string> {
  const res = await kelpie.app.inject({
    method: "POST",
    url: "/v1/agents/",
    payload: { name, model: "openai/gpt-4o-mini", embedding: "kelpie/universal-sentence-encoder" },
  });
  if (res.statusCode !== 200) throw new Error(`creating an agent: ${res.statusCode} ${res.body}`);
  return (JSON.parse(res.body) as { id: string }).id;
}

/** Archives every turn, a session per batch; returns the dia_id of each stored seq. */
async function archiveTurns(kelpie: Kelpie, agentId: string, conv: Conversation): Promise<number> {
  const archival = kelpie.services.archival;
  const archive = await archival.ensureAgentArchive(agentId);
  const sessions = [...new Set(conv.turns.map((t) => t.session))];
  const t0 = nowMs();
  for (const session of sessions) {
    const turns = conv.turns.filter((t) => t.session === session);
    await archival.insert(
      archive.id,
      turns.map((t, i) => ({
        text: passageText(t),
        tags: [`turn:${t.diaId}`, `session:${t.session}`, `speaker:${t.speaker}`],
        metadata: { dia_id: t.diaId, session: t.session, speaker: t.speaker },
        created_at_ms: t.sessionMs + i * 1_000,
      })),
    );
  }
  return nowMs() - t0;
}

/** The turn ids archival_memory_search returns, through the tool itself. */
async function searchTool(kelpie: Kelpie, agentId: string, query: string): Promise<string[]> {
  const runner = kelpie.services.toolRunners.find("archival_memory_search", undefined);
  if (runner === undefined) throw new Error("archival_memory_search is not registered");
  const ctx = {
    env: kelpie.services.env,
    agentId,
    runId: "bench",
    memory: null as never,
    tool: undefined,
    signal: new AbortController().signal,
    callDepth: 0,
    callChain: [],
  };
  const out = await runner.run("archival_memory_search", { query, top_k: RANKED_DEPTH }, ctx);
  if (!out.ok) throw new Error(`archival_memory_search failed: ${out.value}`);
  if (out.value === "No results found.") return [];
  const results = JSON.parse(out.value) as { tags: string[] }[];
  return results.map((r) => r.tags.find((t) => t.startsWith("turn:"))?.slice(5) ?? "?");
}

async function runConversation(
  kelpie: Kelpie,
  embedder: Embedder,
  conv: Conversation,
  systems: Record<"hybrid" | "bm25" | "vector", System>,
): Promise<number> {
  const agentId = await newAgent(kelpie, `locomo-${conv.id}`);
  const insertMs = await archiveTurns(kelpie, agentId, conv);

  // Vector baseline: the stored vectors, and the queries embedded once by the same model.
  const tiers = kelpie.services.env.storage.tiers;
  const archive = await kelpie.services.archival.ensureAgentArchive(agentId);
  const stored = await tiers.scanPassageVectors(archive.id, 0, conv.turns.length + 1);
  const bySeq = await tiers.getPassagesBySeq(stored.map((s) => s.seq));
  const docs = stored.map((s) => ({ diaId: String(bySeq.get(s.seq)!.metadata.dia_id), vector: s.vector }));
  const queryVectors = await embedder.embed(conv.questions.map((q) => q.question));
  const bm25 = bm25Index(conv);

  for (const [i, q] of conv.questions.entries()) {
    let t = nowMs();
    const hybrid = await searchTool(kelpie, agentId, q.question);
    systems.hybrid.samplesMs.push(nowMs() - t);
    systems.hybrid.rows.push({ category: q.category, scores: score(hybrid, q.evidence) });

    t = nowMs();
    const lexical = bm25.search(q.question, RANKED_DEPTH).map(([id]) => id);
    systems.bm25.samplesMs.push(nowMs() - t);
    systems.bm25.rows.push({ category: q.category, scores: score(lexical, q.evidence) });

    t = nowMs();
    const qv = queryVectors[i]!;
    const semantic = docs
      .map((d) => ({ diaId: d.diaId, s: cosine(qv, d.vector) }))
      .sort((a, b) => b.s - a.s)
      .slice(0, RANKED_DEPTH)
      .map((d) => d.diaId);
    systems.vector.samplesMs.push(nowMs() - t);
    systems.vector.rows.push({ category: q.category, scores: score(semantic, q.evidence) });
  }
  return insertMs;
}

function figures(system: System) {
  return { ...summarize(system.rows), search_p50_ms: percentileMs(system.samplesMs, 50) };
}

/** Runs every conversation through Kelpie and the baselines; the figures of the three systems. */
export async function measure(kelpie: Kelpie, embedder: Embedder, conversations: Conversation[]) {
  const systems = {
    hybrid: { rows: [], samplesMs: [] } as System,
    bm25: { rows: [], samplesMs: [] } as System,
    vector: { rows: [], samplesMs: [] } as System,
  };
  let insertMs = 0;
  for (const conv of conversations) {
    insertMs += await runConversation(kelpie, embedder, conv, systems);
    console.log(
      `${conv.id}: ${conv.turns.length} turns, ${conv.questions.length} questions; running turn_recall_at_10 hybrid ${summarize(systems.hybrid.rows).turn_recall_at_10}, ` +
        `bm25 ${summarize(systems.bm25.rows).turn_recall_at_10}, vector ${summarize(systems.vector.rows).turn_recall_at_10}`,
    );
  }
  const turns = conversations.reduce((n, c) => n + c.turns.length, 0);
  return {
    ...figures(systems.hybrid),
    insert_per_s: round3(turns / (insertMs / 1000)),
    bm25: figures(systems.bm25),
    vector: figures(systems.vector),
  };
}

export async function run(): Promise<Record<string, unknown>> {
  const path = dataPath();
  const { conversations, questionsSkipped } = readLocomo(path);
  const turns = conversations.reduce((n, c) => n + c.turns.length, 0);
  const questions = conversations.reduce((n, c) => n + c.questions.length, 0);
  console.log(`${path}: ${conversations.length} conversations, ${turns} turns, ${questions} questions`);

  const dir = benchDir();
  const storage = new SqliteStorage({ path: join(dir, "kelpie.db"), synchronous: "normal" });
  await storage.migrate();
  // Offline: no provider keys, and nothing may leave the machine.
  const llm = llmConfigFromEnv({});
  const embedders = new Embedders(llm, noNetworkFetch);
  const kelpie = await createKelpie(
    { clock: new SystemClock(), rng: new SeededRng(SEED), storage },
    { llm, embedders },
  );
  const t0 = nowMs();
  try {
    const figures = await measure(kelpie, embedders.forConfig(localEmbeddingConfig()), conversations);
    return {
      data: path,
      conversations: conversations.length,
      turns,
      questions,
      questions_skipped: questionsSkipped,
      ...figures,
      elapsed_s: round3((nowMs() - t0) / 1000),
    };
  } finally {
    await kelpie.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
