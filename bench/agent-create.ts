// Agent create throughput through the HTTP API on SQLite, 16 requests in flight.
// Primitive: a plain Fastify route that commits one SQLite row, driven the same way.
import { join } from "node:path";
import { SystemClock } from "../src/core/clock.ts";
import { SystemRng } from "../src/core/rng.ts";
import { createKelpie } from "../src/server.ts";
import { SqliteStorage } from "../src/storage/sqlite.ts";
import { startPlainServer } from "./primitive.ts";
import { benchDir, nowMs, round3 } from "./stats.ts";

const CREATES_COUNT = 2_000;
const IN_FLIGHT = 16;

async function drive(url: string, body: string): Promise<number> {
  let next = 0;
  const t0 = nowMs();
  const worker = async () => {
    while (next < CREATES_COUNT) {
      next++;
      const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
      if (!res.ok) throw new Error(`create failed: ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return CREATES_COUNT / ((nowMs() - t0) / 1000);
}

export async function run(): Promise<Record<string, unknown>> {
  const dir = benchDir();
  const storage = new SqliteStorage({ path: join(dir, "kelpie.db") });
  await storage.migrate();
  const kelpie = await createKelpie({ clock: new SystemClock(), rng: new SystemRng(), storage });
  const url = await kelpie.app.listen({ host: "127.0.0.1", port: 0 });
  const body = JSON.stringify({
    name: "bench",
    memory_blocks: [
      { label: "persona", value: "I am a benchmark agent." },
      { label: "human", value: "The user is a benchmark." },
    ],
  });
  const perS = await drive(`${url}/v1/agents/`, body);
  await kelpie.close();

  const plain = await startPlainServer(dir);
  const plainUrl = plain.url;
  const limitPerS = await drive(`${plainUrl}/`, body);
  await plain.close();
  return {
    n: CREATES_COUNT,
    per_s: Math.round(perS),
    limit_per_s: Math.round(limitPerS),
    ratio: round3(limitPerS / perS),
  };
}
