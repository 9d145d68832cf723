// Server overhead per agent step: one message request over HTTP to Kelpie on SQLite
// (synchronous=FULL: the step's commit is on disk before the answer), with a model that answers
// in 0 ms, so the whole round trip is our overhead. Primitive: a plain Fastify route doing one
// SQLite commit of the same size, driven the same way.
import { join } from "node:path";
import { SystemClock } from "../src/core/clock.ts";
import { SystemRng } from "../src/core/rng.ts";
import { llmConfigFromEnv } from "../src/llm/registry.ts";
import { createKelpie, type KelpieOptions } from "../src/server.ts";
import { SqliteStorage } from "../src/storage/sqlite.ts";
import { instantLlm } from "./instant-llm.ts";
import { startPlainServer } from "./primitive.ts";
import { benchDir, nowMs, percentileMs, round3 } from "./stats.ts";

export const WARMUP_COUNT = 200;
export const STEPS_COUNT = 2_000;

async function timeRequests(url: string, body: () => string): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < WARMUP_COUNT + STEPS_COUNT; i++) {
    const t0 = nowMs();
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: body(),
    });
    if (!res.ok) throw new Error(`request failed: ${res.status} ${await res.text()}`);
    await res.arrayBuffer();
    if (i >= WARMUP_COUNT) samples.push(nowMs() - t0);
  }
  return samples;
}

/** One Kelpie built with `options`, ready to time one-step message requests one at a time. */
export interface Stepper {
  /** Sends one message (a fresh agent every 20 keeps the history short); returns its time in ms. */
  step(): Promise<number>;
  close(): Promise<void>;
}

export async function startStepper(
  dir: string,
  options: KelpieOptions = {},
  headers: Record<string, string> = {},
): Promise<Stepper> {
  const storage = new SqliteStorage({ path: join(dir, `kelpie-${Math.random().toString(36).slice(2)}.db`) });
  await storage.migrate();
  const kelpie = await createKelpie(
    { clock: new SystemClock(), rng: new SystemRng(), storage },
    { llm: llmConfigFromEnv({ OPENAI_API_KEY: "bench" }), llmProviderOverride: instantLlm, ...options },
  );
  const url = await kelpie.app.listen({ host: "127.0.0.1", port: 0 });
  const post = (path: string, body: unknown) =>
    fetch(`${url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
  let agentId = "";
  let sent = 0;
  return {
    async step() {
      if (sent % 20 === 0) {
        const res = await post("/v1/agents/", {
          model: "openai/gpt-4o-mini",
          memory_blocks: [
            { label: "persona", value: "I am a benchmark agent." },
            { label: "human", value: "The user is a benchmark." },
          ],
        });
        agentId = ((await res.json()) as { id: string }).id;
      }
      const t0 = nowMs();
      const res = await post(`/v1/agents/${agentId}/messages`, {
        messages: [{ role: "user", content: `message ${sent++}` }],
      });
      if (!res.ok) throw new Error(`message failed: ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
      return nowMs() - t0;
    },
    close: () => kelpie.close(),
  };
}

/** Times one-step message requests against a Kelpie built with `options`; returns the samples. */
export async function measureSteps(
  dir: string,
  options: KelpieOptions = {},
  headers: Record<string, string> = {},
): Promise<number[]> {
  const stepper = await startStepper(dir, options, headers);
  const samples: number[] = [];
  for (let i = 0; i < WARMUP_COUNT + STEPS_COUNT; i++) {
    const ms = await stepper.step();
    if (i >= WARMUP_COUNT) samples.push(ms);
  }
  await stepper.close();
  return samples;
}

export async function run(): Promise<Record<string, unknown>> {
  const dir = benchDir();
  const samples = await measureSteps(dir);
  const plain = await startPlainServer(dir);
  const plainUrl = plain.url;
  const primitive = await timeRequests(plainUrl, () =>
    JSON.stringify({ messages: [{ role: "user", content: "x" }] }),
  );
  await plain.close();

  const p50 = percentileMs(samples, 50);
  const limit = percentileMs(primitive, 50);
  console.log(`${samples.length} one-step message requests over HTTP, SQLite synchronous=FULL, 0 ms model`);
  return {
    n: samples.length,
    p50_ms: p50,
    p99_ms: percentileMs(samples, 99),
    limit_ms: limit,
    limit_p99_ms: percentileMs(primitive, 99),
    ratio: round3(p50 / limit),
  };
}
