// Conversations: several histories with one agent. Each keeps its own in-context messages (the
// model sees only its own), shares the agent's memory, and "default" is the agent's own history.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";

let fake: FakeLlm;
let t: TestApp;
const seen: ScriptRequest[] = [];

beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(async () => {
  fake.reset();
  seen.length = 0;
  fake.script((req) => {
    seen.push(req);
    const last = [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
    return { text: `echo: ${last}` };
  });
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
  });
});
afterEach(async () => {
  await t.kelpie.close();
});

const userTexts = (req: ScriptRequest) => req.messages.filter((m) => m.role === "user").map((m) => m.text);

describe("conversations", () => {
  it("keep separate histories with one agent, and list their own messages", async () => {
    const agent = (
      await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", agent_type: "letta_v1_agent" })
    ).body;
    const a = await t.req("POST", `/v1/conversations/?agent_id=${agent.id}`, { summary: "first" });
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({ agent_id: agent.id, summary: "first", in_context_message_ids: [] });
    expect(a.body.id).toMatch(/^conv-/);
    const b = (await t.req("POST", `/v1/conversations/?agent_id=${agent.id}`, {})).body;

    const send = (id: string, text: string, extra: object = {}) =>
      t.req("POST", `/v1/conversations/${id}/messages`, {
        messages: [{ role: "user", content: text }],
        streaming: false,
        ...extra,
      });
    expect((await send(a.body.id, "alpha one")).status).toBe(200);
    const r = await send(b.id, "beta one");
    expect(r.body.messages.map((m: any) => m.content)).toContain("echo: beta one");
    await send(a.body.id, "alpha two");
    // The model saw only its own conversation's history each time.
    expect(userTexts(seen.at(-1)!)).toEqual(["alpha one", "alpha two"]);
    expect(userTexts(seen[1]!)).toEqual(["beta one"]);
    // The default conversation is the agent's own history, untouched by the others.
    await send("default", "gamma", { agent_id: agent.id });
    expect(userTexts(seen.at(-1)!)).toEqual(["gamma"]);
    expect((await t.req("GET", `/v1/agents/${agent.id}`)).body.message_ids.length).toBe(2);

    const listed = (await t.req("GET", `/v1/conversations/${a.body.id}/messages?order=asc`)).body;
    expect(listed.filter((m: any) => m.message_type === "user_message").map((m: any) => m.content)).toEqual([
      "alpha one",
      "alpha two",
    ]);
    const newestFirst = (await t.req("GET", `/v1/conversations/${a.body.id}/messages?limit=1`)).body;
    expect(newestFirst[0]).toMatchObject({ message_type: "assistant_message", content: "echo: alpha two" });
    expect((await t.req("GET", `/v1/conversations/${a.body.id}`)).body.in_context_message_ids).toHaveLength(
      4,
    );

    const all = (await t.req("GET", `/v1/conversations/?agent_id=${agent.id}`)).body;
    expect(all.map((c: any) => c.id)).toEqual([b.id, a.body.id]);
    expect(
      (await t.req("GET", `/v1/conversations/?agent_id=${agent.id}&summary_search=FIR`)).body,
    ).toHaveLength(1);
    const patched = await t.req("PATCH", `/v1/conversations/${b.id}`, { summary: "renamed" });
    expect(patched.body.summary).toBe("renamed");
    expect((await t.req("DELETE", `/v1/conversations/${b.id}`)).status).toBe(200);
    expect((await t.req("GET", `/v1/conversations/${b.id}`)).status).toBe(404);
  });

  it("streams by default, in Letta's SSE shapes", async () => {
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini" })).body;
    const c = (await t.req("POST", `/v1/conversations/?agent_id=${agent.id}`, {})).body;
    const res = await t.kelpie.app.inject({
      method: "POST",
      url: `/v1/conversations/${c.id}/messages`,
      payload: { messages: [{ role: "user", content: "streamed" }] },
    });
    expect(res.headers["content-type"]).toContain("text/event-stream");
    expect(res.body).toContain('"message_type":"stop_reason"');
    expect(res.body).toContain("data: [DONE]");
  });

  it("rejects what it cannot do with clear errors", async () => {
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini" })).body;
    expect((await t.req("POST", "/v1/conversations/", {})).status).toBe(422);
    expect(
      (await t.req("POST", "/v1/conversations/?agent_id=agent-00000000-0000-4000-8000-000000000000", {}))
        .status,
    ).toBe(404);
    const isolated = await t.req("POST", `/v1/conversations/?agent_id=${agent.id}`, {
      isolated_block_labels: ["human"],
    });
    expect(isolated.status).toBe(422);
    expect(JSON.stringify(isolated.body)).toContain("isolated_block_labels");
    const noAgent = await t.req("POST", "/v1/conversations/default/messages", {
      messages: [{ role: "user", content: "x" }],
      streaming: false,
    });
    expect(noAgent.status).toBe(422);
    expect(
      (await t.req("GET", "/v1/conversations/conv-00000000-0000-4000-8000-000000000000/messages")).status,
    ).toBe(404);
  });
});
