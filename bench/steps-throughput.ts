// Steps per second with 1,000 concurrent agents: every agent has one message in flight at all
// times, on SQLite (synchronous=FULL), with a model that answers in 0 ms. Measured twice: through the
// message service in process (`per_s`: runtime + agent loop + storage), and over HTTP with the load
// from a worker thread (`http_per_s`). Primitives: one-row SQLite commits per second in a loop
// (`limit_per_s`), and the same HTTP load on a plain Fastify route committing one row
// (`http_limit_per_s`; on 2 cores the load generator shares the machine, so this bounds both).
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { SystemClock } from "../src/core/clock.ts";
import { SystemRng } from "../src/core/rng.ts";
import { llmConfigFromEnv } from "../src/llm/registry.ts";
import { createKelpie } from "../src/server.ts";
import { SqliteStorage } from "../src/storage/sqlite.ts";
import { instantLlm } from "./instant-llm.ts";
import { startPlainServer } from "./primitive.ts";
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
  const ids = urls.map((u) => u.split("/").at(-2)!);
  let inProcessDone = 0;
  const deadline = performance.now() + DURATION_MS;
  const t0 = performance.now();
  await Promise.all(
    ids.map(async (id) => {
      let i = 0;
      while (performance.now() < deadline) {
        const r = await kelpie.services.messages.send(id, { input: `m${i++}` }, { streamTokens: false });
        if (r.error) throw r.error;
        inProcessDone++;
      }
    }),
  );
  const inProcessPerS = inProcessDone / ((performance.now() - t0) / 1000);
  const result = await drive(urls);
  await kelpie.close();
  if (result.failed > 0) throw new Error(`${result.failed} requests failed`);

  const plain = await startPlainServer(dir);
  const plainUrl = plain.url;
  const primitive = await drive(urls.map((_, i) => `${plainUrl}/${i}`));
  await plain.close();

  const bare = new Database(join(dir, "bare.db"));
  bare.pragma("journal_mode = WAL");
  bare.pragma("synchronous = FULL");
  bare.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)");
  const bareInsert = bare.prepare("INSERT INTO t (doc) VALUES (?)");
  const bareT0 = performance.now();
  let bareCount = 0;
  while (performance.now() - bareT0 < 2_000) {
    bareInsert.run('{"role":"user","content":"m"}');
    bareCount++;
  }
  const bareLimitPerS = bareCount / ((performance.now() - bareT0) / 1000);
  bare.close();

  const httpPerS = result.done / (result.ms / 1000);
  const httpLimitPerS = primitive.done / (primitive.ms / 1000);
  console.log(`${AGENTS_COUNT} agents, one message each in flight, ${DURATION_MS} ms per phase, 0 ms model`);
  return {
    agents: AGENTS_COUNT,
    per_s: Math.round(inProcessPerS),
    limit_per_s: Math.round(bareLimitPerS),
    ratio: round3(bareLimitPerS / inProcessPerS),
    http_per_s: Math.round(httpPerS),
    http_limit_per_s: Math.round(httpLimitPerS),
    http_ratio: round3(httpLimitPerS / httpPerS),
  };
}
