// Runs the storage suite against memory, SQLite and PostgreSQL, plus engine-specific checks:
// SQLite durability across reopen, PostgreSQL fencing and token races under concurrency.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import { SqliteStorage } from "../../src/storage/sqlite.ts";
import type { Storage } from "../../src/storage/types.ts";
import { withTestDatabase } from "../support/postgres.ts";
import { storedAgent } from "../support/records.ts";
import { storageSuite } from "./storage.suite.ts";

describe("memory engine", () => {
  storageSuite(async () => new MemoryStorage());
});

describe("sqlite engine", () => {
  const dir = mkdtempSync(join(tmpdir(), "kelpie-sqlite-"));
  const opened: Storage[] = [];
  let n = 0;
  afterAll(async () => {
    for (const s of opened) await s.close();
    rmSync(dir, { recursive: true, force: true });
  });
  storageSuite(async () => {
    const s = new SqliteStorage({ path: join(dir, `t${n++}.db`) });
    await s.migrate();
    opened.push(s);
    return s;
  });

  it("keeps committed data across close and reopen, and migrates idempotently", async () => {
    const path = join(dir, "durable.db");
    const a = new SqliteStorage({ path });
    await a.migrate();
    await a.commit([
      {
        op: "put_block",
        block: {
          id: "block-1",
          label: "l",
          value: "kept",
          limit: 10,
          description: null,
          read_only: false,
          metadata: {},
          is_template: false,
          template_name: null,
          hidden: null,
          tags: [],
          project_id: null,
          version: 1,
          created_at_ms: 1,
          updated_at_ms: 1,
        },
        create: true,
      },
    ]);
    await a.close();
    const b = new SqliteStorage({ path });
    await b.migrate();
    await b.migrate();
    expect((await b.getBlock("block-1"))!.value).toBe("kept");
    await b.close();
  });
});

describe("postgres engine", () => {
  const db = withTestDatabase();
  const opened: PostgresStorage[] = [];
  let shared: PostgresStorage;
  beforeAll(async () => {
    shared = new PostgresStorage({ url: db.url() });
    await shared.migrate();
    opened.push(shared);
  });
  afterAll(async () => {
    for (const s of opened) await s.close();
  });
  storageSuite(async () => {
    // Each test starts from empty tables in the throwaway database.
    const sql = postgres(db.url(), { max: 1, onnotice: () => {} });
    await sql.unsafe(
      "TRUNCATE agents, agent_tags, blocks, tools, agent_blocks, agent_tools, messages, runs, steps, agent_fences, mcp_servers, api_keys, audit_log, conversations, outbox, idempotent_responses, archives, agent_archives, passages, working_memory RESTART IDENTITY CASCADE",
    );
    await sql.end();
    return shared;
  });

  it("migrates safely when two nodes start at once", async () => {
    const a = new PostgresStorage({ url: db.url() });
    const b = new PostgresStorage({ url: db.url() });
    opened.push(a, b);
    await Promise.all([a.migrate(), b.migrate()]);
  });

  it("hands out distinct increasing tokens and rejects every stale commit under concurrency", async () => {
    const agentId = "agent-00000000-0000-4000-8000-00000000c0c0";
    await shared.commit([
      {
        op: "put_agent",
        create: true,
        agent: storedAgent(agentId, "race"),
      },
    ]);
    const tokens = await Promise.all(Array.from({ length: 20 }, () => shared.acquireFence(agentId)));
    expect(new Set(tokens).size).toBe(20);
    expect(Math.max(...tokens)).toBe(20);
    const current = await shared.currentFence(agentId);
    const agent = (await shared.getAgent(agentId))!;
    const { block_ids: _b, tool_ids: _t, ...stored } = agent;
    const attempts = Array.from({ length: 40 }, (_, i) => {
      const token = i % 2 === 0 ? current : 1 + (i % (current - 1));
      return shared
        .commit([{ op: "put_agent", agent: { ...stored, name: `w${i}` }, create: false }], {
          fence: { agent_id: agentId, token },
        })
        .then(
          () => ({ token, ok: true }),
          (e) => ({ token, ok: false, code: e.code }),
        );
    });
    const results = await Promise.all(attempts);
    for (const r of results) {
      if (r.token === current) expect(r.ok).toBe(true);
      else expect(r).toMatchObject({ ok: false, code: "FENCED" });
    }
    const name = (await shared.getAgent(agentId))!.name;
    const winners = results.flatMap((r, i) => (r.ok ? [`w${i}`] : []));
    expect(winners).toContain(name);
  });
});
