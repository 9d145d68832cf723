// Memory tools end to end through the fake LLM over HTTP: archival insert and search, working
// memory, and hybrid conversation search; plus the working-memory API's limits and expiry.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../src/core/clock.ts";
import { SeededRng } from "../../src/core/rng.ts";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { WorkingMemoryService } from "../../src/memory/working-memory.ts";
import { LocalPlacement } from "../../src/runtime/placement.ts";
import { Runtime } from "../../src/runtime/runtime.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import {
  CONVERSATION_SEARCH_LIMIT_DEFAULT,
  CONVERSATION_SEARCH_RESULT_CHARS_MAX,
} from "../../src/tools/memory-tier-tools.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { storedAgent } from "../support/records.ts";

let fake: FakeLlm;
let t: TestApp;

beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(async () => {
  fake.reset();
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
  });
});
afterEach(async () => {
  await t.kelpie.close();
});

const lastUser = (req: ScriptRequest) =>
  [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
const answeredTool = (req: ScriptRequest) => req.messages.at(-1)?.role === "tool";

/** "<tool> <json args>" from the user becomes that tool call; its result ends the turn. */
function toolScript(req: ScriptRequest) {
  if (answeredTool(req)) return { toolCalls: [{ name: "send_message", args: { message: "done" } }] };
  const text = lastUser(req);
  const space = text.indexOf(" ");
  return { toolCalls: [{ name: text.slice(0, space), args: JSON.parse(text.slice(space + 1)) }] };
}

async function call(
  agentId: string,
  tool: string,
  args: object,
): Promise<{ status: string; tool_return: string }> {
  const res = await t.req("POST", `/v1/agents/${agentId}/messages`, {
    messages: [{ role: "user", content: `${tool} ${JSON.stringify(args)}` }],
  });
  expect(res.status).toBe(200);
  const ret = res.body.messages.find((m: any) => m.message_type === "tool_return_message");
  expect(ret).toBeDefined();
  return ret;
}

describe("memory tools through the model", () => {
  it("archival_memory_insert and archival_memory_search, with tags", async () => {
    fake.script(toolScript);
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini" })).body;
    const insert = await call(agent.id, "archival_memory_insert", {
      content: "The launch code is 4242.",
      tags: ["ops"],
    });
    expect(insert.status).toBe("success");
    await call(agent.id, "archival_memory_insert", { content: "Alice owns a golden retriever named Max." });
    const found = await call(agent.id, "archival_memory_search", { query: "launch code" });
    expect(found.status).toBe("success");
    expect(JSON.parse(found.tool_return)[0]).toMatchObject({
      content: "The launch code is 4242.",
      tags: ["ops"],
    });
    const pet = await call(agent.id, "archival_memory_search", {
      query: "what animal lives with Alice",
      top_k: 1,
    });
    expect(JSON.parse(pet.tool_return)).toHaveLength(1);
    expect(pet.tool_return).toContain("golden retriever");
    const onlyOps = await call(agent.id, "archival_memory_search", { query: "dog", tags: ["ops"] });
    expect(onlyOps.tool_return).not.toContain("retriever");
    const bad = await call(agent.id, "archival_memory_search", { query: "x", top_k: 5000 });
    expect(bad.status).toBe("error");
    expect(bad.tool_return).toContain("top_k");
    const tooLong = await call(agent.id, "archival_memory_insert", { content: "y".repeat(40_000) });
    expect(tooLong.status).toBe("error");
    expect(tooLong.tool_return).toMatch(/at most \d+/);
    // What the tools stored is what the API lists.
    const listed = (await t.req("GET", `/v1/agents/${agent.id}/archival-memory`)).body;
    expect(listed.map((p: any) => p.text)).toEqual([
      "The launch code is 4242.",
      "Alice owns a golden retriever named Max.",
    ]);
  }, 30_000);

  it("working_memory_* tools read and write the same store as the API", async () => {
    fake.script(toolScript);
    const agent = (
      await t.req("POST", "/v1/agents/", {
        model: "openai/gpt-4o-mini",
        tools: ["working_memory_set", "working_memory_get", "working_memory_delete", "working_memory_list"],
      })
    ).body;
    expect((await call(agent.id, "working_memory_set", { key: "plan", value: { step: 1 } })).status).toBe(
      "success",
    );
    expect((await t.req("GET", `/v1/agents/${agent.id}/working-memory/plan`)).body.value).toEqual({
      step: 1,
    });
    await t.req("PUT", `/v1/agents/${agent.id}/working-memory/goal`, { value: "ship it" });
    expect((await call(agent.id, "working_memory_get", { key: "goal" })).tool_return).toBe('"ship it"');
    expect((await call(agent.id, "working_memory_list", {})).tool_return).toContain("plan");
    expect((await call(agent.id, "working_memory_delete", { key: "plan" })).status).toBe("success");
    const missing = await call(agent.id, "working_memory_get", { key: "plan" });
    expect(missing.status).toBe("error");
    expect(missing.tool_return).toContain("not found");
  }, 30_000);

  it("conversation_search finds earlier messages by words and by meaning", async () => {
    fake.script((req) => {
      const text = lastUser(req);
      if (text.startsWith("conversation_search")) return toolScript(req);
      return { toolCalls: [{ name: "send_message", args: { message: `noted: ${text}` } }] };
    });
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini" })).body;
    for (const text of [
      "My sister lives in Toronto.",
      "I adopted a kitten last week.",
      "The invoice is overdue.",
    ]) {
      await t.req("POST", `/v1/agents/${agent.id}/messages`, { messages: [{ role: "user", content: text }] });
    }
    const words = await call(agent.id, "conversation_search", { query: "Toronto", limit: 1 });
    expect(words.tool_return).toContain("My sister lives in Toronto.");
    const meaning = await call(agent.id, "conversation_search", {
      query: "new pet cat",
      roles: ["user"],
      limit: 1,
    });
    expect(meaning.tool_return).toContain("kitten");
    const none = await call(agent.id, "conversation_search", { query: "zzyzx", roles: ["user"] });
    expect(none.tool_return).toContain("No results found");
  }, 30_000);

  it("conversation_search 20 times in one turn: never its own results, compact, the prompt bounded", async () => {
    const SEARCHES = 20;
    const RESULTS_DEFAULT = CONVERSATION_SEARCH_LIMIT_DEFAULT;
    fake.script((req) => {
      if (!lastUser(req).startsWith("search"))
        return { toolCalls: [{ name: "send_message", args: { message: "ok" } }] };
      const done = req.messages.filter(
        (m) => m.role === "tool" && m.toolName === "conversation_search",
      ).length;
      if (done < SEARCHES)
        return {
          toolCalls: [
            { name: "conversation_search", args: { query: "Toronto sister", request_heartbeat: true } },
          ],
        };
      return { toolCalls: [{ name: "send_message", args: { message: "done" } }] };
    });
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini" })).body;
    await t.req("POST", `/v1/agents/${agent.id}/messages`, {
      messages: [{ role: "user", content: 'My sister lives in Toronto, "downtown" near the lake.' }],
    });
    fake.requests.length = 0;
    const res = await t.req("POST", `/v1/agents/${agent.id}/messages`, {
      messages: [{ role: "user", content: "search Toronto sister" }],
    });
    expect(res.status).toBe(200);
    const returns = res.body.messages
      .filter((m: any) => m.message_type === "tool_return_message" && m.name === "conversation_search")
      .map((m: any) => m.tool_return as string);
    expect(returns).toHaveLength(SEARCHES);
    for (const r of returns) {
      // The original message, as text (its quotes not escaped), and no earlier search result.
      expect(r).toContain('user: My sister lives in Toronto, "downtown" near the lake.');
      expect(r).not.toContain("\\");
      expect(r.match(/Found \d+ results/g)).toHaveLength(1);
      expect(r.length).toBeLessThan(RESULTS_DEFAULT * (CONVERSATION_SEARCH_RESULT_CHARS_MAX + 60));
    }
    // Each step's prompt grows only by one call and one fixed-size result.
    const sizes = fake.requests
      .filter((r) => r.protocol === "openai")
      .map((r) => JSON.stringify(r.body.messages).length);
    expect(sizes.length).toBeGreaterThanOrEqual(SEARCHES);
    const growth = sizes.slice(1).map((n, i) => n - sizes[i]!);
    expect(Math.max(...growth)).toBeLessThan(
      2 * RESULTS_DEFAULT * (CONVERSATION_SEARCH_RESULT_CHARS_MAX + 60),
    );
  }, 60_000);
});

describe("working memory limits and expiry", () => {
  it("rejects what does not fit (never truncates) and forgets entries when their TTL passes", async () => {
    const clock = new ManualClock(1_000_000);
    const storage = new MemoryStorage();
    const env = { clock, rng: new SeededRng(1), storage };
    const agentId = "agent-00000000-0000-4000-8000-000000000001";
    await storage.commit([
      {
        op: "put_agent",
        create: true,
        agent: storedAgent(agentId, "wm"),
      },
    ]);
    const wm = new WorkingMemoryService(
      env,
      new Runtime({ clock, storage, placement: new LocalPlacement(storage) }),
    );
    await wm.put(agentId, "short", { value: 1, ttl_ms: 5_000 });
    await wm.put(agentId, "long", { value: "kept" });
    clock.advanceMs(4_999);
    expect((await wm.get(agentId, "short")).value).toBe(1);
    clock.advanceMs(2);
    await expect(wm.get(agentId, "short")).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect((await wm.list(agentId)).map((e) => e.key)).toEqual(["long"]);

    await expect(wm.put(agentId, "big", { value: "z".repeat(70 * 1024) })).rejects.toMatchObject({
      code: "VALIDATION",
      issues: [{ loc: ["body", "value"] }],
    });
    await expect(wm.put(agentId, "k".repeat(300), { value: 1 })).rejects.toMatchObject({
      code: "VALIDATION",
    });
    for (let i = 0; i < 17; i++) await wm.put(agentId, `chunk-${i}`, { value: "c".repeat(60 * 1024) });
    await expect(wm.put(agentId, "one-too-many", { value: "c".repeat(60 * 1024) })).rejects.toMatchObject({
      code: "BAD_REQUEST",
    });
    expect((await wm.get(agentId, "long")).value).toBe("kept");
    await expect(wm.get(agentId, "one-too-many")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("answers the API with clear errors", async () => {
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini" })).body;
    expect((await t.req("GET", `/v1/agents/${agent.id}/working-memory/nope`)).status).toBe(404);
    expect((await t.req("PUT", `/v1/agents/${agent.id}/working-memory/x`, { nothing: 1 })).status).toBe(422);
    const missingAgent = await t.req(
      "PUT",
      "/v1/agents/agent-00000000-0000-4000-8000-0000000000ff/working-memory/x",
      {
        value: 1,
      },
    );
    expect(missingAgent.status).toBe(404);
    expect((await t.req("DELETE", `/v1/agents/${agent.id}/working-memory/x`)).status).toBe(404);
  });
});
