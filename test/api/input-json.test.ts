// Client JSON that an engine cannot store, or that nests without bound, is refused at the API with
// a 422 naming the field, the same on SQLite and PostgreSQL (PostgreSQL's text and jsonb refuse
// U+0000 and unpaired surrogates, which used to surface as a 500; 200,000-deep metadata did too).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { JSON_DEPTH_MAX } from "../../src/core/constants.ts";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import { SqliteStorage } from "../../src/storage/sqlite.ts";
import type { Storage } from "../../src/storage/types.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { withTestDatabase } from "../support/postgres.ts";

const MODEL = "openai/gpt-4o-mini";

/** `{"a": {"a": ... 1 ...}}`, `levels` objects deep. */
function nested(levels: number): string {
  return `${'{"a":'.repeat(levels)}1${"}".repeat(levels)}`;
}

function inputChecks(open: () => Promise<Storage>): void {
  let t: TestApp;
  beforeEach(async () => {
    t = await testApp(await open());
  });
  afterEach(async () => {
    await t.kelpie.close();
  });

  const expectIssue = (res: { status: number; body: any }, loc: (string | number)[], msg: RegExp) => {
    expect(res.status, JSON.stringify(res.body)).toBe(422);
    expect(res.body.detail[0].loc).toEqual(loc);
    expect(res.body.detail[0].msg).toMatch(msg);
  };

  it("refuses U+0000 and unpaired surrogates in bodies, keys, queries and paths, naming the field", async () => {
    expectIssue(
      await t.req("POST", "/v1/agents/", { name: "a\u0000b", model: MODEL }),
      ["body", "name"],
      /U\+0000/,
    );
    expectIssue(
      await t.req("POST", "/v1/agents/", { name: "ok", model: MODEL, metadata: { x: ["fine", "\ud800"] } }),
      ["body", "metadata", "x", 1],
      /unpaired surrogate \(U\+D800\)/,
    );
    expectIssue(
      await t.req("POST", "/v1/agents/", { name: "ok", model: MODEL, metadata: { "k\u0000": 1 } }),
      ["body", "metadata", "k\u0000"],
      /key contains the character U\+0000/,
    );
    // A lone low surrogate, written as an escape in the raw text.
    expectIssue(
      await t.req("POST", "/v1/agents/", `{"name": "x\\udc00", "model": "${MODEL}"}`),
      ["body", "name"],
      /unpaired surrogate \(U\+DC00\)/,
    );
    expectIssue(await t.req("GET", "/v1/agents/?name=a%00b"), ["query", "name"], /U\+0000/);
    expectIssue(await t.req("GET", "/v1/agents/agent-%00"), ["path", "agent_id"], /U\+0000/);
    const agent = (await t.req("POST", "/v1/agents/", { name: "w", model: MODEL })).body;
    expectIssue(
      await t.req("PUT", `/v1/agents/${agent.id}/working-memory/k`, { value: { v: "\u0000" } }),
      ["body", "value", "v"],
      /U\+0000/,
    );
    // Paired surrogates (an emoji, raw or escaped) and an escaped backslash before "u0000" are fine.
    const ok = await t.req(
      "POST",
      "/v1/agents/",
      `{"name": "\\ud83d\\ude00 😀 \\\\u0000", "model": "${MODEL}"}`,
    );
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect((await t.req("GET", `/v1/agents/${ok.body.id}`)).body.name).toBe("😀 😀 \\u0000");
    expect((await t.req("GET", "/v1/agents/?limit=10")).status).toBe(200);
  });

  it(`refuses JSON nested deeper than ${JSON_DEPTH_MAX} levels, 200,000 deep included, and accepts the limit`, async () => {
    expectIssue(
      await t.req(
        "POST",
        "/v1/agents/",
        `{"name": "d", "model": "${MODEL}", "metadata": ${nested(200_000)}}`,
      ),
      ["body"],
      new RegExp(`deeper than ${JSON_DEPTH_MAX} levels`),
    );
    // The body itself is one level: metadata may nest JSON_DEPTH_MAX - 1 more.
    const atLimit = `{"name": "d", "model": "${MODEL}", "metadata": ${nested(JSON_DEPTH_MAX - 1)}}`;
    const ok = await t.req("POST", "/v1/agents/", atLimit);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expectIssue(
      await t.req(
        "POST",
        "/v1/agents/",
        `{"name": "d", "model": "${MODEL}", "metadata": ${nested(JSON_DEPTH_MAX)}}`,
      ),
      ["body"],
      /deeper than/,
    );
    // Brackets inside strings do not count.
    const brackets = await t.req("POST", "/v1/agents/", { name: "[[[{{{".repeat(100), model: MODEL });
    expect(brackets.status, JSON.stringify(brackets.body)).toBe(200);
  });

  it("applies both checks to an uploaded agent file", async () => {
    const upload = async (text: string) => {
      const form = new FormData();
      form.append("file", new Blob([text]), "agent.af");
      const encoded = new Response(form);
      const res = await t.kelpie.app.inject({
        method: "POST",
        url: "/v1/agents/import",
        payload: Buffer.from(await encoded.arrayBuffer()),
        headers: { "content-type": encoded.headers.get("content-type")! },
      });
      return { status: res.statusCode, body: JSON.parse(res.body) };
    };
    expectIssue(await upload(`{"agents": [], "x": ${nested(200_000)}}`), ["body", "file"], /deeper than/);
    expectIssue(
      await upload('{"agents": [{"name": "a\\u0000"}]}'),
      ["body", "file", "agents", 0, "name"],
      /U\+0000/,
    );
  });
}

describe("on SQLite", () => {
  const dir = mkdtempSync(join(tmpdir(), "kelpie-input-"));
  let n = 0;
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  inputChecks(async () => {
    const s = new SqliteStorage({ path: join(dir, `t${n++}.db`) });
    await s.migrate();
    return s;
  });
});

describe("on PostgreSQL", () => {
  const db = withTestDatabase();
  inputChecks(async () => {
    const s = new PostgresStorage({ url: db.url() });
    await s.migrate();
    return s;
  });
});
