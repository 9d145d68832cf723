// Archival memory through the real HTTP routes, on every storage engine, with the real offline
// embedding model (Universal Sentence Encoder): semantic, full-text and hybrid search, tags and
// dates, deletes, restarts, and archives shared between agents.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import { SqliteStorage } from "../../src/storage/sqlite.ts";
import type { Storage } from "../../src/storage/types.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { withTestDatabase } from "../support/postgres.ts";

const CORPUS = [
  "The quarterly report is due on Friday.",
  "Paris is the capital of France.",
  "The build server runs Debian.",
  "Coffee is served in the lobby at nine.",
  "The meeting moved to room 4B.",
  "Invoices are paid within thirty days.",
  "The bicycle has a flat tyre.",
  "Quantum computers use qubits.",
  "The garden needs watering twice a week.",
  "Alice owns a golden retriever named Max.",
];

const NO_KEYS = { llm: llmConfigFromEnv({}) };

async function newAgent(t: TestApp, name: string): Promise<string> {
  const res = await t.req("POST", "/v1/agents/", { name, model: "openai/gpt-4o-mini" });
  expect(res.status).toBe(200);
  return res.body.id;
}

const search = async (t: TestApp, agentId: string, query: string, extra = "") => {
  const res = await t.req(
    "GET",
    `/v1/agents/${agentId}/archival-memory/search?query=${encodeURIComponent(query)}${extra}`,
  );
  expect(res.status).toBe(200);
  expect(res.body.count).toBe(res.body.results.length);
  return res.body.results as { id: string; content: string; tags: string[]; timestamp: string }[];
};

function engineSuite(name: string, open: () => Promise<Storage>, reopen?: () => Promise<Storage>) {
  describe(`archival memory on ${name}`, () => {
    it("finds passages by meaning, by words, by tags and dates, and forgets deleted ones", async () => {
      const t = await testApp(await open(), NO_KEYS);
      try {
        const agentId = await newAgent(t, "archivist");
        for (const text of CORPUS) {
          const res = await t.req("POST", `/v1/agents/${agentId}/archival-memory`, { text });
          expect(res.status).toBe(200);
          expect(res.body[0]).toMatchObject({ text, tags: [], embedding_config: { embedding_dim: 512 } });
        }
        const tagged = await t.req("POST", `/v1/agents/${agentId}/archival-memory`, {
          text: "Standup is at 10:15 every weekday.",
          tags: ["work", "schedule"],
          created_at: "2024-03-01T09:00:00Z",
        });
        expect(tagged.status).toBe(200);

        // Semantic: no word in common with the passage it should find.
        const pet = await search(t, agentId, "what pet does the user have", "&top_k=3");
        expect(pet[0]!.content).toBe("Alice owns a golden retriever named Max.");
        expect(pet).toHaveLength(3);
        // Full text: a rare word ranks its passage first.
        expect((await search(t, agentId, "qubits"))[0]!.content).toBe("Quantum computers use qubits.");
        // Hybrid: words and meaning agree.
        expect((await search(t, agentId, "capital city of France"))[0]!.content).toBe(
          "Paris is the capital of France.",
        );

        // Tags: any / all, and the filter applies to both halves of the search.
        const work = await search(t, agentId, "meeting", "&tags=work");
        expect(work.map((r) => r.content)).toEqual(["Standup is at 10:15 every weekday."]);
        expect(await search(t, agentId, "meeting", "&tags=work&tags=nope&tag_match_mode=all")).toEqual([]);
        expect(await search(t, agentId, "meeting", "&tags=work&tags=nope&tag_match_mode=any")).toHaveLength(
          1,
        );
        // Dates: only the back-dated passage is before 2025.
        const old = await search(t, agentId, "anything at all", "&end_datetime=2024-12-31");
        expect(old.map((r) => r.content)).toEqual(["Standup is at 10:15 every weekday."]);
        expect(
          (await search(t, agentId, "standup", "&start_datetime=2025-01-01")).some((r) =>
            r.content.includes("Standup"),
          ),
        ).toBe(false);

        // Listing, with the text filter and paging.
        const all = (await t.req("GET", `/v1/agents/${agentId}/archival-memory?limit=100`)).body;
        expect(all).toHaveLength(11);
        const page = (await t.req("GET", `/v1/agents/${agentId}/archival-memory?limit=2&after=${all[1].id}`))
          .body;
        expect(page.map((p: any) => p.id)).toEqual([all[2].id, all[3].id]);
        expect((await t.req("GET", `/v1/agents/${agentId}/archival-memory?search=paris`)).body).toHaveLength(
          1,
        );

        // Delete: gone from the list, the vector index and the full-text index.
        const paris = all.find((p: any) => p.text.startsWith("Paris"));
        expect((await t.req("DELETE", `/v1/agents/${agentId}/archival-memory/${paris.id}`)).status).toBe(200);
        expect((await t.req("DELETE", `/v1/agents/${agentId}/archival-memory/${paris.id}`)).status).toBe(404);
        const after = await search(t, agentId, "Paris capital of France", "&top_k=10");
        expect(after.length).toBeGreaterThan(0);
        expect(after.some((r) => r.content.includes("Paris"))).toBe(false);

        // Bad input: clear 4xx naming the field, nothing stored.
        const long = await t.req("POST", `/v1/agents/${agentId}/archival-memory`, {
          text: "x".repeat(40_000),
        });
        expect(long.status).toBe(422);
        expect(JSON.stringify(long.body)).toContain("text");
        const badDate = await t.req(
          "GET",
          `/v1/agents/${agentId}/archival-memory/search?query=x&start_datetime=yesterday`,
        );
        expect(badDate.status).toBe(422);
        expect((await t.req("GET", `/v1/agents/${agentId}/archival-memory?limit=100`)).body).toHaveLength(10);

        // Deleting the agent deletes the archive it made for itself (no other agent uses it).
        const own = (await t.req("GET", `/v1/archives/?agent_id=${agentId}`)).body;
        expect(own).toHaveLength(1);
        expect((await t.req("DELETE", `/v1/agents/${agentId}`)).status).toBe(200);
        expect((await t.req("GET", `/v1/archives/${own[0].id}`)).status).toBe(404);
      } finally {
        await t.kelpie.close();
      }
    }, 60_000);

    it("shares an archive between agents; detaching hides it; deleting removes its passages", async () => {
      const t = await testApp(await open(), NO_KEYS);
      try {
        const a = await newAgent(t, "a");
        const b = await newAgent(t, "b");
        const archive = await t.req("POST", "/v1/archives/", { name: "team", description: "shared notes" });
        expect(archive.status).toBe(200);
        expect(archive.body).toMatchObject({ name: "team", vector_db_provider: "native" });
        const id = archive.body.id as string;
        expect(id).toMatch(/^archive-/);
        const batch = await t.req("POST", `/v1/archives/${id}/passages/batch`, {
          passages: [
            { text: "The team offsite is in Lisbon in May.", tags: ["travel"] },
            { text: "Deploys happen on Tuesdays.", metadata: { source: "wiki" } },
          ],
        });
        expect(batch.status).toBe(200);
        expect(batch.body).toHaveLength(2);
        const one = await t.req("POST", `/v1/archives/${id}/passages`, {
          text: "The VPN password rotates monthly.",
        });
        expect(one.status).toBe(200);
        for (const agentId of [a, b]) {
          expect((await t.req("PATCH", `/v1/agents/${agentId}/archives/attach/${id}`)).status).toBe(200);
        }
        for (const agentId of [a, b]) {
          expect((await search(t, agentId, "where is the offsite trip"))[0]!.content).toContain("Lisbon");
        }
        const agents = await t.req("GET", `/v1/archives/${id}/agents`);
        expect(agents.body.map((x: any) => x.id)).toEqual([a, b]);
        expect((await t.req("GET", `/v1/archives/?agent_id=${a}`)).body.map((x: any) => x.id)).toEqual([id]);

        const global = await t.req("POST", "/v1/passages/search", {
          query: "deployment day",
          archive_id: id,
          limit: 1,
        });
        expect(global.status).toBe(200);
        expect(global.body[0].passage.text).toBe("Deploys happen on Tuesdays.");
        expect(global.body[0].score).toBeGreaterThan(0);

        expect((await t.req("PATCH", `/v1/agents/${b}/archives/detach/${id}`)).status).toBe(200);
        expect(await search(t, b, "where is the offsite trip")).toEqual([]);
        const patched = await t.req("PATCH", `/v1/archives/${id}`, { name: "team-notes" });
        expect(patched.body.name).toBe("team-notes");

        expect((await t.req("DELETE", `/v1/archives/${id}/passages/${one.body.id}`)).status).toBe(200);
        expect((await search(t, a, "VPN password")).some((r) => r.content.includes("VPN"))).toBe(false);
        expect((await t.req("DELETE", `/v1/archives/${id}`)).status).toBe(200);
        expect((await t.req("GET", `/v1/archives/${id}`)).status).toBe(404);
        expect(await search(t, a, "where is the offsite trip")).toEqual([]);
        expect((await t.req("PATCH", `/v1/agents/${a}/archives/attach/${id}`)).status).toBe(404);
      } finally {
        await t.kelpie.close();
      }
    }, 60_000);

    if (reopen !== undefined) {
      it("keeps passages and working memory across a restart, and searches them again", async () => {
        let t = await testApp(await open(), NO_KEYS);
        const agentId = await newAgent(t, "durable");
        for (const text of CORPUS) await t.req("POST", `/v1/agents/${agentId}/archival-memory`, { text });
        await t.req("PUT", `/v1/agents/${agentId}/working-memory/plan`, { value: { step: 2 } });
        await t.kelpie.close();
        t = await testApp(await reopen(), NO_KEYS);
        try {
          expect((await search(t, agentId, "dog"))[0]!.content).toContain("golden retriever");
          expect((await search(t, agentId, "qubits"))[0]!.content).toContain("Quantum");
          expect((await t.req("GET", `/v1/agents/${agentId}/working-memory/plan`)).body.value).toEqual({
            step: 2,
          });
        } finally {
          await t.kelpie.close();
        }
      }, 60_000);
    }
  });
}

engineSuite("memory", async () => new MemoryStorage());

const dir = mkdtempSync(join(tmpdir(), "kelpie-archival-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let sqliteN = 0;
let sqlitePath = "";
engineSuite(
  "sqlite",
  async () => {
    sqlitePath = join(dir, `db-${++sqliteN}.sqlite`);
    const s = new SqliteStorage({ path: sqlitePath });
    await s.migrate();
    return s;
  },
  async () => {
    const s = new SqliteStorage({ path: sqlitePath });
    await s.migrate();
    return s;
  },
);

describe("postgres", () => {
  const db = withTestDatabase();
  const open = async () => {
    const s = new PostgresStorage({ url: db.url() });
    await s.migrate();
    return s;
  };
  beforeAll(() => {});
  engineSuite("postgres", open, open);
});
