// Memory per idle resident agent: activate 100,000 agents (each runs one op and stays resident),
// then divide the growth of the resident set (after GC) by the count.
import { join } from "node:path";
import { SystemClock } from "../src/core/clock.ts";
import { LocalPlacement } from "../src/runtime/placement.ts";
import { Runtime } from "../src/runtime/runtime.ts";
import { SqliteStorage } from "../src/storage/sqlite.ts";
import { seedAgents } from "./fixtures.ts";
import { benchDir } from "./stats.ts";

const AGENTS_COUNT = 100_000;
const IDLE_TIMEOUT_MS = 3_600_000; // nobody is deactivated during the measurement

function settledRssBytes(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run with --expose-gc (npm run bench does)");
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().rss;
}

export async function run(): Promise<Record<string, unknown>> {
  const storage = new SqliteStorage({ path: join(benchDir(), "kelpie.db") });
  await storage.migrate();
  const ids = await seedAgents(storage, AGENTS_COUNT);
  const runtime = new Runtime({
    clock: new SystemClock(),
    storage,
    placement: new LocalPlacement(storage),
    idleTimeoutMs: IDLE_TIMEOUT_MS,
  });
  // Warm the code paths and SQLite's page cache on a few agents first.
  for (const id of ids.slice(0, 100)) await runtime.invoke(id, async () => {});
  await runtime.stop();
  const warm = new Runtime({
    clock: new SystemClock(),
    storage,
    placement: new LocalPlacement(storage),
    idleTimeoutMs: IDLE_TIMEOUT_MS,
  });
  const beforeBytes = settledRssBytes();
  const heapBefore = process.memoryUsage().heapUsed;
  for (const id of ids) await warm.invoke(id, async () => {});
  const afterBytes = settledRssBytes();
  const heapAfter = process.memoryUsage().heapUsed;
  const resident = warm.stats().activeCount;
  if (resident !== AGENTS_COUNT)
    throw new Error(`expected ${AGENTS_COUNT} resident agents, have ${resident}`);
  console.log(`${resident} idle resident agents; heap grew ${heapAfter - heapBefore} bytes`);
  return {
    n: resident,
    bytes_per_agent: Math.round((afterBytes - beforeBytes) / resident),
    heap_bytes_per_agent: Math.round((heapAfter - heapBefore) / resident),
  };
}
