// Working-memory limits hold under concurrency: puts sent at once over real HTTP never leave an
// agent with more keys or bytes than allowed, on every engine (the limit is checked by the engine
// in the transaction that writes, inside the agent's mailbox). Before, each put read the entries,
// checked, and wrote in separate calls, so puts in flight together all passed the check.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  WORKING_MEMORY_AGENT_BYTES_MAX,
  WORKING_MEMORY_KEYS_PER_AGENT_MAX,
} from "../../src/core/constants.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import { SqliteStorage } from "../../src/storage/sqlite.ts";
import type { Storage } from "../../src/storage/types.ts";
import { testApp } from "../support/app.ts";
import { withTestDatabase } from "../support/postgres.ts";

const VALUE_CHARS = 60 * 1024;
const PUTS_AT_ONCE = 40;
const PREFILL_CONCURRENCY = 32;

const dir = mkdtempSync(join(tmpdir(), "kelpie-wm-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const db = withTestDatabase();

const engines: [string, () => Promise<Storage>][] = [
  ["memory", async () => new MemoryStorage()],
  [
    "sqlite",
    async () => {
      const s = new SqliteStorage({ path: join(dir, `wm-${Math.random()}.db`) });
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

async function withServer(open: () => Promise<Storage>, body: (url: string) => Promise<void>): Promise<void> {
  const storage = await open();
  const t = await testApp(storage);
  try {
    const url = await t.kelpie.app.listen({ host: "127.0.0.1", port: 0 });
    await body(url);
  } finally {
    await t.kelpie.close();
    await storage.close();
  }
}

async function call(url: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${url}${path}`, {
    method,
    ...(body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

async function liveEntries(url: string, agentId: string): Promise<{ key: string; size_bytes: number }[]> {
  const res = await call(url, "GET", `/v1/agents/${agentId}/working-memory`);
  expect(res.status).toBe(200);
  return res.body;
}

describe.each(engines)("working-memory limits under concurrent puts (%s)", (_name, open) => {
  it("never holds more bytes than allowed, however many puts arrive at once", async () => {
    await withServer(open, async (url) => {
      const agent = (await call(url, "POST", "/v1/agents/", { name: "wm-bytes" })).body;
      const answers = await Promise.all(
        Array.from({ length: PUTS_AT_ONCE }, (_, i) =>
          call(url, "PUT", `/v1/agents/${agent.id}/working-memory/big-${i}`, {
            value: "x".repeat(VALUE_CHARS),
          }),
        ),
      );
      const stored = await liveEntries(url, agent.id);
      const bytes = stored.reduce((n, e) => n + e.size_bytes, 0);
      expect(bytes).toBeLessThanOrEqual(WORKING_MEMORY_AGENT_BYTES_MAX);
      const entryBytes = stored[0]!.size_bytes;
      expect(stored).toHaveLength(Math.floor(WORKING_MEMORY_AGENT_BYTES_MAX / entryBytes));
      // Each put answered for itself: those stored with 200, the rest with a 400 naming the limit.
      expect(answers.filter((a) => a.status === 200)).toHaveLength(stored.length);
      for (const a of answers.filter((a) => a.status !== 200)) {
        expect(a.status).toBe(400);
        expect(a.body.detail).toContain("over its limit");
      }
    });
  }, 60_000);

  it("never holds more keys than allowed, however many puts arrive at once", async () => {
    await withServer(open, async (url) => {
      const agent = (await call(url, "POST", "/v1/agents/", { name: "wm-keys" })).body;
      const room = 4;
      const prefill = WORKING_MEMORY_KEYS_PER_AGENT_MAX - room;
      for (let start = 0; start < prefill; start += PREFILL_CONCURRENCY) {
        const batch = Array.from({ length: Math.min(PREFILL_CONCURRENCY, prefill - start) }, (_, i) =>
          call(url, "PUT", `/v1/agents/${agent.id}/working-memory/k-${start + i}`, { value: 1 }),
        );
        for (const a of await Promise.all(batch)) expect(a.status).toBe(200);
      }
      const answers = await Promise.all(
        Array.from({ length: PUTS_AT_ONCE }, (_, i) =>
          call(url, "PUT", `/v1/agents/${agent.id}/working-memory/late-${i}`, { value: 1 }),
        ),
      );
      expect(answers.filter((a) => a.status === 200)).toHaveLength(room);
      expect(await liveEntries(url, agent.id)).toHaveLength(WORKING_MEMORY_KEYS_PER_AGENT_MAX);
      // Deleting one makes room for exactly one more.
      expect((await call(url, "DELETE", `/v1/agents/${agent.id}/working-memory/k-0`)).status).toBe(200);
      const again = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          call(url, "PUT", `/v1/agents/${agent.id}/working-memory/again-${i}`, { value: 1 }),
        ),
      );
      expect(again.filter((a) => a.status === 200)).toHaveLength(1);
    });
  }, 120_000);
});
