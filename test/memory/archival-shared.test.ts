// Two nodes on one PostgreSQL database: a passage inserted through one node is found by the other
// node's vector index (which had already loaded the archive), and a passage deleted elsewhere is
// never returned.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { FakeEmbedders } from "../support/fake-embedders.ts";
import { withTestDatabase } from "../support/postgres.ts";

describe("archival memory on a database two nodes share", () => {
  const db = withTestDatabase();
  let a: TestApp;
  let b: TestApp;
  beforeAll(async () => {
    const open = async () => {
      const s = new PostgresStorage({ url: db.url() });
      await s.migrate();
      return s;
    };
    a = await testApp(await open(), { embedders: new FakeEmbedders() });
    b = await testApp(await open(), { embedders: new FakeEmbedders() });
  });
  afterAll(async () => {
    await a.kelpie.close();
    await b.kelpie.close();
  });

  it("catches up with inserts and deletes made through the other node", async () => {
    const agentId = (await a.req("POST", "/v1/agents/", { name: "shared", model: "openai/gpt-4o-mini" })).body
      .id;
    const insert = async (t: TestApp, text: string) =>
      (await t.req("POST", `/v1/agents/${agentId}/archival-memory`, { text })).body[0].id as string;
    await insert(a, "p-1 first");
    const archiveId = (await b.kelpie.services.archival.agentArchive(agentId))!.id;
    const searchB = (n: number) =>
      b.kelpie.services.archival.search([archiveId], { query: `p-${n}`, topK: 3 });
    // B loads the index now, with one passage.
    expect((await searchB(1))[0]!.passage.text).toBe("p-1 first");
    const second = await insert(a, "p-2 second");
    const hits = await searchB(2);
    // Found by its vector (an exact match), not only by its words: B's index has it.
    const found = hits.find((h) => h.passage.text === "p-2 second");
    expect(found?.vector_score).toBeGreaterThan(0.99);
    expect(
      await b.kelpie.services.archival.search([archiveId], { query: "unrelated words", topK: 5 }),
    ).toHaveLength(2);
    expect((await a.req("DELETE", `/v1/agents/${agentId}/archival-memory/${second}`)).status).toBe(200);
    expect((await searchB(2)).map((h) => h.passage.text)).toEqual(["p-1 first"]);
  });
});
