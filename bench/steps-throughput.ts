// Steps per second with 1,000 concurrent agents: every agent has one message request in flight at
// all times, over HTTP, on SQLite, with a model that answers in 0 ms. The load comes from a worker
// thread so the server keeps the main thread. Primitive: the same load on a plain Fastify route that
// commits one SQLite row per request.
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import Fastify from "fastify";
import { SystemClock } from "../src/core/clock.ts";
import { SystemRng } from "../src/core/rng.ts";
import { llmConfigFromEnv } from "../src/llm/registry.ts";
import { createKelpie } from "../src/server.ts";
import { SqliteStorage } from "../src/storage/sqlite.ts";
import { instantLlm } from "./instant-llm.ts";
import { benchDir, round3 } from "./stats.ts";

const AGENTS_COUNT = 1_000;
const DURATION_MS = 10_000;

const LOAD = `
const { parentPort, workerData } = require("node:worker_threads");
const { urls, durationMs } = workerData;
let done = 0, failed = 0;
const deadline = performance.now() + durationMs;
async function loop(url) {
  let i = 0;
  while (performance.now() < deadline) {
    const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "m" + i++ }] }) });
    await res.arrayBuffer();
    if (res.ok) done++; else failed++;
  }
}
const t0 = performance.now();
Promise.all(urls.map(loop)).then(() => parentPort.postMessage({ done, failed, ms: performance.now() - t0 }));
`;

function drive(urls: string[]): Promise<{ done: number; failed: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(LOAD, { eval: true, workerData: { urls, durationMs: DURATION_MS } });
    worker.once("message", resolve);
    worker.once("error", reject);
  });
}

export async function run(): Promise<Record<string, unknown>> {
  const dir = benchDir();
  const storage = new SqliteStorage({ path: join(dir, "kelpie.db"), synchronous: "full" });
  await storage.migrate();
  const kelpie = await createKelpie(
    { clock: new SystemClock(), rng: new SystemRng(), storage },
    { llm: llmConfigFromEnv({ OPENAI_API_KEY: "bench" }), llmProviderOverride: instantLlm },
  );
  const url = await kelpie.app.listen({ host: "127.0.0.1", port: 0 });
  const urls: string[] = [];
  for (let i = 0; i < AGENTS_COUNT; i++) {
    const res = await fetch(`${url}/v1/agents/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "openai/gpt-4o-mini",
        memory_blocks: [{ label: "human", value: `agent ${i}` }],
      }),
    });
    urls.push(`${url}/v1/agents/${((await res.json()) as { id: string }).id}/messages`);
  }
  const result = await drive(urls);
  await kelpie.close();
  if (result.failed > 0) throw new Error(`${result.failed} requests failed`);

  const db = new Database(join(dir, "primitive.db"));
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)");
  const insert = db.prepare("INSERT INTO t (doc) VALUES (?)");
  const plain = Fastify();
  plain.post("/:agent", async (req) => {
    insert.run(JSON.stringify(req.body));
    return { ok: true };
  });
  const plainUrl = await plain.listen({ host: "127.0.0.1", port: 0 });
  const primitive = await drive(urls.map((_, i) => `${plainUrl}/${i}`));
  await plain.close();
  db.close();

  const perS = result.done / (result.ms / 1000);
  const limitPerS = primitive.done / (primitive.ms / 1000);
  console.log(`${AGENTS_COUNT} agents, one request each in flight, ${DURATION_MS} ms, 0 ms model`);
  return {
    agents: AGENTS_COUNT,
    steps: result.done,
    per_s: Math.round(perS),
    limit_per_s: Math.round(limitPerS),
    ratio: round3(limitPerS / perS),
  };
}
