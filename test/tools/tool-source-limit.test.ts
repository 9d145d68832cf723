// TOOL_SOURCE_CHARS_MAX holds on every path a tool's source arrives by: create, upsert, update,
// POST /v1/tools/run (whose body may be 16 MB) and an .af import. Each refusal is a 422 naming
// the source_code field, and nothing is stored or run. The oversized sources are valid tools, so
// without the bound they would be accepted.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { TOOL_SOURCE_CHARS_MAX } from "../../src/tools/custom/service.ts";
import { type TestApp, testApp } from "../support/app.ts";

let t: TestApp;
beforeEach(async () => {
  t = await testApp(new MemoryStorage());
});
afterEach(async () => {
  await t.kelpie.close();
});

/** A working tool padded with a comment to one character over the bound. */
function oversized(head: string, comment: string): string {
  return head + comment + "x".repeat(TOOL_SOURCE_CHARS_MAX + 1 - head.length - comment.length);
}
const JS_BIG = oversized("function big(a) { return a; }\n", "// ");
const PY_BIG = oversized('def big(a: int) -> int:\n    """Big."""\n    return a\n', "# ");

function expectSourceRefused(res: { status: number; body: any }) {
  expect(res.status, JSON.stringify(res.body).slice(0, 300)).toBe(422);
  const issue = res.body.detail[0];
  expect(issue.loc.at(-1)).toBe("source_code");
  expect(issue.msg).toContain(`at most ${TOOL_SOURCE_CHARS_MAX} characters`);
}

describe("TOOL_SOURCE_CHARS_MAX", () => {
  it("is enforced on create, upsert, update and run, and a source at the bound is accepted", async () => {
    expectSourceRefused(
      await t.req("POST", "/v1/tools/", { source_code: JS_BIG, source_type: "javascript" }),
    );
    expectSourceRefused(await t.req("PUT", "/v1/tools/", { source_code: JS_BIG, source_type: "javascript" }));
    expectSourceRefused(
      await t.req("POST", "/v1/tools/run", {
        source_code: JS_BIG,
        source_type: "javascript",
        args: { a: 1 },
      }),
    );
    const atBound = JS_BIG.slice(0, TOOL_SOURCE_CHARS_MAX);
    const created = await t.req("POST", "/v1/tools/", { source_code: atBound, source_type: "javascript" });
    expect(created.status, JSON.stringify(created.body).slice(0, 300)).toBe(200);
    expectSourceRefused(await t.req("PATCH", `/v1/tools/${created.body.id}`, { source_code: JS_BIG }));
    const after = await t.req("GET", `/v1/tools/${created.body.id}`);
    expect(after.body.source_code).toBe(atBound);
    const ran = await t.req("POST", "/v1/tools/run", {
      source_code: atBound,
      source_type: "javascript",
      args: { a: 7 },
    });
    expect(ran.status, JSON.stringify(ran.body).slice(0, 300)).toBe(200);
    expect(ran.body.func_return).toBe("7");
  });

  it("is enforced on an .af import, before anything is written", async () => {
    const file = {
      agents: [
        {
          id: "agent-0",
          name: "big-tools",
          agent_type: "memgpt_v2_agent",
          system: "You are small.",
          block_ids: [],
          tool_ids: ["tool-1"],
          tool_rules: [],
          llm_config: { model: "gpt-4o-mini", model_endpoint_type: "openai", context_window: 32000 },
          embedding_config: null,
          in_context_message_ids: [],
          messages: [],
        },
      ],
      groups: [],
      blocks: [],
      files: [],
      sources: [],
      tools: [{ id: "tool-1", name: "big", tool_type: "custom", source_type: "python", source_code: PY_BIG }],
      mcp_servers: [],
    };
    const form = new FormData();
    form.append("file", new Blob([JSON.stringify(file)]), "agent.af");
    const encoded = new Response(form);
    const res = await t.kelpie.app.inject({
      method: "POST",
      url: "/v1/agents/import",
      payload: Buffer.from(await encoded.arrayBuffer()),
      headers: { "content-type": encoded.headers.get("content-type")! },
    });
    expectSourceRefused({ status: res.statusCode, body: JSON.parse(res.body) });
    expect((await t.req("GET", "/v1/agents/")).body).toEqual([]);
    expect((await t.req("GET", "/v1/tools/?name=big")).body).toEqual([]);
  });
});
