// Cold activation: the first operation on an agent that is not resident. The runtime loads it from
// SQLite (agent row, its blocks and tools) and takes a fencing token (a committed write).
// Primitive: the same reads and one fence commit done with bare better-sqlite3 statements.
import { join } from "node:path";
import Database from "better-sqlite3";
import { AgentService } from "../src/agent/agents.ts";
import { HandleModelResolver } from "../src/agent/models.ts";
import { SystemClock } from "../src/core/clock.ts";
import { SystemRng } from "../src/core/rng.ts";
import { llmConfigFromEnv } from "../src/llm/registry.ts";
import { LocalPlacement } from "../src/runtime/placement.ts";
import { Runtime } from "../src/runtime/runtime.ts";
import { SqliteStorage } from "../src/storage/sqlite.ts";
import { seedAgents } from "./fixtures.ts";
import { benchDir, nowMs, percentileMs, round3 } from "./stats.ts";

const AGENTS_COUNT = 5_000;

export async function run(): Promise<Record<string, unknown>> {
  const path = join(benchDir(), "kelpie.db");
  const seeding = new SqliteStorage({ path });
  await seeding.migrate();
  const ids = await seedAgents(seeding, AGENTS_COUNT);
  await seeding.close();

  // A fresh process-level view of the database: nothing resident.
  const storage = new SqliteStorage({ path });
  await storage.migrate();
  const clock = new SystemClock();
  const env = { clock, rng: new SystemRng(), storage };
  const runtime = new Runtime({ clock, storage, placement: new LocalPlacement(storage) });
  const agents = new AgentService(env, runtime, new HandleModelResolver(llmConfigFromEnv({})));
  const samplesMs: number[] = [];
  for (const id of ids) {
    const t0 = nowMs();
    await runtime.invoke(id, () => agents.view(id));
    samplesMs.push(nowMs() - t0);
  }
  await runtime.stop();
  await storage.close();

  // The primitive: read the agent row, its block rows, and commit one fence increment.
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  const readAgent = db.prepare("SELECT * FROM agents WHERE id = ?");
  const readBlocks = db.prepare(
    "SELECT b.* FROM agent_blocks ab JOIN blocks b ON b.id = ab.block_id WHERE ab.agent_id = ? ORDER BY ab.position",
  );
  const bump = db.prepare(
    "INSERT INTO agent_fences (agent_id, token) VALUES (?, 1) ON CONFLICT(agent_id) DO UPDATE SET token = token + 1",
  );
  const primitiveMs: number[] = [];
  for (const id of ids) {
    const t0 = nowMs();
    readAgent.get(id);
    readBlocks.all(id);
    bump.run(id);
    primitiveMs.push(nowMs() - t0);
  }
  db.close();

  const p50 = percentileMs(samplesMs, 50);
  const limit = percentileMs(primitiveMs, 50);
  console.log(`cold activation over ${ids.length} agents on SQLite (synchronous=FULL)`);
  return {
    n: ids.length,
    p50_ms: p50,
    p99_ms: percentileMs(samplesMs, 99),
    limit_ms: limit,
    ratio: round3(p50 / limit),
  };
}
