// The agent loop end to end in one process: the real Fastify app, the real provider adapters,
// and a fake LLM over real HTTP speaking the OpenAI and Anthropic wire protocols.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { KelpieError } from "../../src/core/errors.ts";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";

let fake: FakeLlm;
let t: TestApp;
let storage: MemoryStorage;

beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(async () => {
  fake.reset();
  storage = new MemoryStorage();
  t = await testApp(storage, {
    llm: llmConfigFromEnv({
      OPENAI_API_KEY: "sk-test",
      OPENAI_BASE_URL: `${fake.url}/v1`,
      ANTHROPIC_API_KEY: "sk-ant-test",
      ANTHROPIC_BASE_URL: fake.url,
    }),
    llmRetry: { backoffMsBase: 5, backoffMsMax: 20, retryAfterMsMax: 20 },
  });
});
afterEach(async () => {
  await t.kelpie.close();
});

const lastUserText = (req: ScriptRequest) =>
  [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
const callsSinceUser = (req: ScriptRequest) => {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  return req.messages.slice(i + 1).filter((m) => m.role === "assistant" && m.toolCalls.length > 0).length;
};
const assistantText = (body: any) =>
  body.messages
    .filter((m: any) => m.message_type === "assistant_message")
    .map((m: any) => m.content)
    .join("\n");

async function agent(body: Record<string, unknown> = {}) {
  const res = await t.req("POST", "/v1/agents/", {
    model: "openai/gpt-4o-mini",
    memory_blocks: [
      { label: "persona", value: "PERSONA-MARK" },
      { label: "human", value: "HUMAN-MARK" },
      { label: "notes", value: "NOTES-MARK", description: "scratch notes", read_only: true },
    ],
    ...body,
  });
  expect(res.status).toBe(200);
  return res.body;
}

async function send(agentId: string, text: string, extra: Record<string, unknown> = {}) {
  return t.req("POST", `/v1/agents/${agentId}/messages`, {
    messages: [{ role: "user", content: text }],
    ...extra,
  });
}

describe("the agent loop", () => {
  it("answers through OpenAI and through Anthropic, each receiving every memory block in the system prompt", async () => {
    const systems: Record<string, string> = {};
    fake.script((req) => {
      systems[req.protocol] = req.system;
      return { toolCalls: [{ name: "send_message", args: { message: `echo: ${lastUserText(req)}` } }] };
    });
    for (const model of ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5"]) {
      const a = await agent({ model });
      const res = await send(a.id, "hello");
      expect(res.status).toBe(200);
      expect(assistantText(res.body)).toBe("echo: hello");
      expect(res.body.stop_reason).toEqual({ message_type: "stop_reason", stop_reason: "end_turn" });
      expect(res.body.usage).toMatchObject({ message_type: "usage_statistics", step_count: 1 });
      expect(res.body.usage.run_ids).toHaveLength(1);
    }
    for (const protocol of ["openai", "anthropic"]) {
      const system = systems[protocol]!;
      for (const mark of [
        "PERSONA-MARK",
        "HUMAN-MARK",
        "NOTES-MARK",
        "scratch notes",
        "read_only=true",
        "chars_limit=",
      ]) {
        expect(system, `${protocol} system prompt`).toContain(mark);
      }
    }
    expect(fake.requests.some((r) => r.protocol === "anthropic")).toBe(true);
    expect(fake.requests.some((r) => r.protocol === "openai")).toBe(true);
  });

  it("stores the conversation in Letta's message shapes and lists it", async () => {
    fake.script((req) => ({
      toolCalls: [{ name: "send_message", args: { message: `re: ${lastUserText(req)}` } }],
    }));
    const a = await agent();
    await send(a.id, "first");
    await send(a.id, "second");
    const list = (await t.req("GET", `/v1/agents/${a.id}/messages?order=asc`)).body;
    const types = list.map((m: any) => m.message_type);
    expect(types).toEqual([
      "user_message",
      "assistant_message",
      "tool_return_message",
      "user_message",
      "assistant_message",
      "tool_return_message",
    ]);
    expect(list[0].content).toBe("first");
    expect(list[4].content).toBe("re: second");
    const agentState = (await t.req("GET", `/v1/agents/${a.id}`)).body;
    expect(agentState.message_ids).toHaveLength(6);
  });

  it("chains tool calls while the model asks for heartbeats, and stops at max_steps", async () => {
    fake.script((req) => {
      const n = Number(lastUserText(req).split(":")[1]);
      const done = callsSinceUser(req);
      expect(req.tools.find((x) => x.name === "conversation_search")?.parameters.properties).toHaveProperty(
        "request_heartbeat",
      );
      if (done < n)
        return {
          toolCalls: [
            // A small memory edit per step: conversation_search would return its own earlier
            // results, nested and escaped again each step, and the prompt would balloon.
            {
              name: "memory_insert",
              args: { label: "human", new_str: `step ${done}`, request_heartbeat: true },
            },
          ],
        };
      return { toolCalls: [{ name: "send_message", args: { message: "chain done" } }] };
    });
    const a = await agent();
    const chained = await send(a.id, "chain: 12");
    const calls = chained.body.messages.filter((m: any) => m.message_type === "tool_call_message");
    expect(calls).toHaveLength(12);
    expect(assistantText(chained.body)).toBe("chain done");
    expect(chained.body.usage.step_count).toBe(13);
    const capped = await send(a.id, "chain: 30", { max_steps: 5 });
    expect(capped.body.stop_reason.stop_reason, JSON.stringify(capped.body)).toBe("max_steps");
    expect(capped.body.usage.step_count).toBe(5);
  });

  it("letta_v1_agent continues while the model calls tools and ends on plain text", async () => {
    fake.script((req) => {
      expect(req.tools.map((x) => x.name)).not.toContain("send_message");
      expect(req.tools.find((x) => x.name === "memory_insert")?.parameters.properties).not.toHaveProperty(
        "request_heartbeat",
      );
      return callsSinceUser(req) < 3
        ? { toolCalls: [{ name: "conversation_search", args: { query: "x" } }] }
        : { text: "all done" };
    });
    const a = await agent({ agent_type: "letta_v1_agent" });
    const res = await send(a.id, "go");
    expect(res.body.messages.filter((m: any) => m.message_type === "tool_call_message")).toHaveLength(3);
    expect(assistantText(res.body)).toBe("all done");
    expect(res.body.stop_reason.stop_reason).toBe("end_turn");
  });

  it("edits core memory with every memory tool, enforcing limits and read-only with errors to the model", async () => {
    const plan: { name: string; args: Record<string, unknown> }[] = [
      { name: "core_memory_append", args: { label: "human", content: "likes tea" } },
      { name: "core_memory_replace", args: { label: "human", old_content: "tea", new_content: "green tea" } },
      { name: "memory_insert", args: { label: "persona", new_str: "inserted line", insert_line: 0 } },
      {
        name: "memory_replace",
        args: { label: "persona", old_str: "PERSONA-MARK", new_str: "PERSONA-EDITED" },
      },
      { name: "memory_rethink", args: { label: "plans", new_memory: "a brand new block" } },
      {
        name: "memory",
        args: {
          command: "str_replace",
          path: "/memories/plans",
          old_string: "brand new",
          new_string: "renewed",
        },
      },
      { name: "memory_apply_patch", args: { label: "plans", patch: "-a renewed block\n+a patched block" } },
      { name: "memory_replace", args: { label: "notes", old_str: "NOTES", new_str: "HACKED" } },
      { name: "core_memory_append", args: { label: "human", content: "x".repeat(200) } },
      { name: "memory_finish_edits", args: {} },
    ];
    const results: string[] = [];
    fake.script((req) => {
      const done = callsSinceUser(req);
      const last = [...req.messages].reverse().find((m) => m.role === "tool");
      if (done > 0 && last) results.push(last.text);
      const next = plan[done];
      if (next) return { toolCalls: [{ name: next.name, args: { ...next.args, request_heartbeat: true } }] };
      return { toolCalls: [{ name: "send_message", args: { message: "edited" } }] };
    });
    const a = await agent({
      agent_type: "memgpt_agent",
      tools: [
        "memory_insert",
        "memory_replace",
        "memory_rethink",
        "memory",
        "memory_apply_patch",
        "memory_finish_edits",
      ],
      memory_blocks: [
        { label: "persona", value: "PERSONA-MARK" },
        { label: "human", value: "Ada", limit: 100 },
        { label: "notes", value: "NOTES-MARK", read_only: true },
      ],
    });
    const res = await send(a.id, "edit yourself");
    expect(res.status).toBe(200);
    expect(assistantText(res.body)).toBe("edited");
    const blocks = Object.fromEntries(
      (await t.req("GET", `/v1/agents/${a.id}/core-memory/blocks`)).body.map((b: any) => [b.label, b.value]),
    );
    expect(blocks.human).toBe("Ada\nlikes green tea");
    expect(blocks.persona).toBe("inserted line\nPERSONA-EDITED");
    expect(blocks.plans).toBe("a patched block");
    expect(blocks.notes).toBe("NOTES-MARK");
    expect(results[7]).toContain("read-only");
    expect(results[8]).toMatch(/limit/);
    expect(results[8]).toContain('"status":"Failed"');
    const returns = res.body.messages.filter((m: any) => m.message_type === "tool_return_message");
    expect(returns.filter((m: any) => m.status === "error")).toHaveLength(2);
  });

  it("reports malformed tool-call JSON to the model and goes on", async () => {
    let sawError = "";
    fake.script((req) => {
      if (callsSinceUser(req) === 0)
        return { toolCalls: [{ name: "conversation_search", args: '{"query": "oops' }] };
      sawError = [...req.messages].reverse().find((m) => m.role === "tool")?.text ?? "";
      return { toolCalls: [{ name: "send_message", args: { message: "recovered" } }] };
    });
    const a = await agent();
    const res = await send(a.id, "go");
    expect(res.status).toBe(200);
    expect(sawError).toContain("not valid JSON");
    expect(assistantText(res.body)).toBe("recovered");
  });

  it("streams steps as SSE in Letta's shapes and streams tokens with stream_tokens", async () => {
    fake.script((req) =>
      callsSinceUser(req) === 0
        ? { toolCalls: [{ name: "conversation_search", args: { query: "q", request_heartbeat: true } }] }
        : {
            toolCalls: [
              { name: "send_message", args: { message: "a fairly long streamed answer to split" } },
            ],
          },
    );
    const a = await agent();
    for (const [url, body] of [
      [`/v1/agents/${a.id}/messages/stream`, { messages: [{ role: "user", content: "hi" }] }],
      [
        `/v1/agents/${a.id}/messages`,
        { messages: [{ role: "user", content: "hi" }], streaming: true, stream_tokens: true },
      ],
    ] as const) {
      const res = await t.kelpie.app.inject({ method: "POST", url, payload: body });
      expect(res.headers["content-type"]).toContain("text/event-stream");
      const events = res.body
        .split("\n\n")
        .filter((e) => e.startsWith("data: "))
        .map((e) => e.slice(6));
      expect(events.at(-1)).toBe("[DONE]");
      const parsed = events.slice(0, -1).map((e) => JSON.parse(e));
      const types = parsed.map((e: any) => e.message_type);
      expect(types).toContain("tool_call_message");
      expect(types).toContain("tool_return_message");
      expect(types.at(-2)).toBe("stop_reason");
      expect(types.at(-1)).toBe("usage_statistics");
      const said = parsed.filter((e: any) => e.message_type === "assistant_message");
      expect(said.map((e: any) => e.content).join("")).toBe("a fairly long streamed answer to split");
      if ("stream_tokens" in body) {
        expect(said.length).toBeGreaterThan(1);
        expect(new Set(said.map((e: any) => e.id)).size).toBe(1);
      } else {
        expect(said).toHaveLength(1);
      }
    }
  });

  it("retries provider faults, then reports them clearly and leaves the agent consistent", async () => {
    const a = await agent();
    fake.failNext(2, 429, { retryAfterSeconds: 0 });
    const retried = await send(a.id, "after faults");
    expect(retried.status).toBe(200);
    expect(JSON.stringify(retried.body)).toContain("echo: after faults");
    const before = (await t.req("GET", `/v1/agents/${a.id}`)).body.message_ids;
    fake.failNext(3, 500);
    const failed = await send(a.id, "doomed");
    expect(failed.status).toBe(502);
    expect(failed.body.detail).toMatch(/500/);
    expect(failed.body.detail).toMatch(/3 attempts/);
    expect((await t.req("GET", `/v1/agents/${a.id}`)).body.message_ids).toEqual(before);
    const runs = (await t.req("GET", `/v1/runs/?agent_id=${a.id}`)).body;
    expect(runs[0]).toMatchObject({ status: "failed", stop_reason: "llm_api_error" });
    fake.failNext(1, 400);
    expect((await send(a.id, "bad request")).status).toBe(502);
    expect((await send(a.id, "fine again")).status).toBe(200);
  });

  it("without an API key the server still answers, with a clear error naming the variable", async () => {
    const bare = await testApp(new MemoryStorage(), { llm: llmConfigFromEnv({}) });
    try {
      const a = (await bare.req("POST", "/v1/agents/", { model: "anthropic/claude-sonnet-4-5" })).body;
      const res = await bare.req("POST", `/v1/agents/${a.id}/messages`, { input: "hi" });
      expect(res.status).toBe(400);
      expect(res.body.detail).toContain("ANTHROPIC_API_KEY");
    } finally {
      await bare.kelpie.close();
    }
  });

  it("runs 100 agents concurrently: each waits 200 ms on the model, all finish in about one delay", async () => {
    fake.script((req) => ({
      delayMs: 200,
      toolCalls: [{ name: "send_message", args: { message: `done ${lastUserText(req)}` } }],
    }));
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) ids.push((await agent({ name: `c${i}` })).id);
    const started = performance.now();
    const results = await Promise.all(ids.map((id, i) => send(id, `n${i}`)));
    const elapsedMs = performance.now() - started;
    expect(results.every((r) => r.status === 200)).toBe(true);
    results.forEach((r, i) => {
      expect(assistantText(r.body)).toBe(`done n${i}`);
    });
    // Serial would be 20 s; concurrent is one delay plus overhead.
    expect(elapsedMs).toBeLessThan(3_000);
  });

  it("one agent's turns are serial: concurrent messages to one agent never interleave", async () => {
    fake.script((req) => ({
      delayMs: 20,
      toolCalls: [{ name: "send_message", args: { message: `re ${lastUserText(req)}` } }],
    }));
    const a = await agent();
    await Promise.all(Array.from({ length: 5 }, (_, i) => send(a.id, `m${i}`)));
    const list = (await t.req("GET", `/v1/agents/${a.id}/messages?order=asc&limit=100`)).body;
    for (let i = 0; i < list.length; i += 3) {
      expect(list[i].message_type).toBe("user_message");
      expect(list[i + 1].content).toBe(`re ${list[i].content}`);
    }
  });

  it("summarizes old messages when the context window fills, keeping the full history stored", async () => {
    fake.script((req) => {
      if (req.tools.length === 0) return { text: "SUMMARY: the user sent many long messages" };
      return { toolCalls: [{ name: "send_message", args: { message: "ok" } }] };
    });
    const a = await agent({
      llm_config: { model: "gpt-4o-mini", model_endpoint_type: "openai", context_window: 3000 },
    });
    const long = "lorem ipsum dolor sit amet ".repeat(60);
    for (let i = 0; i < 8; i++) {
      const res = await send(a.id, `${i} ${long}`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
    }
    const state = (await t.req("GET", `/v1/agents/${a.id}`)).body;
    const stored = (await t.req("GET", `/v1/agents/${a.id}/messages?limit=1000`)).body;
    expect(state.message_ids.length).toBeLessThan(24);
    const first = await storage.getMessage(state.message_ids[0]);
    expect(JSON.stringify(first?.content)).toContain("SUMMARY: the user sent many long messages");
    expect(
      stored.filter((m: any) => m.message_type === "user_message" && m.content.includes("lorem")).length,
    ).toBe(8);
    const context = (await t.req("GET", `/v1/agents/${a.id}/context`)).body;
    expect(context.context_window_size_max).toBe(3000);
    expect(context.context_window_size_current).toBeLessThanOrEqual(3000);
  });

  it("runs a message asynchronously, and cancels a run in flight", async () => {
    fake.script(() => ({ delayMs: 300, toolCalls: [{ name: "send_message", args: { message: "late" } }] }));
    const a = await agent();
    const run = (await t.req("POST", `/v1/agents/${a.id}/messages/async`, { input: "slow one" })).body;
    expect(run.id).toMatch(/^run-/);
    expect(["created", "running"]).toContain(run.status);
    for (let i = 0; i < 50; i++) {
      const now = (await t.req("GET", `/v1/runs/${run.id}`)).body;
      if (now.status === "completed") break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await t.req("GET", `/v1/runs/${run.id}`)).body).toMatchObject({
      status: "completed",
      stop_reason: "end_turn",
    });
    const produced = (await t.req("GET", `/v1/runs/${run.id}/messages`)).body;
    expect(produced.map((m: any) => m.message_type)).toContain("assistant_message");

    fake.script(() => ({ delayMs: 5_000, text: "never" }));
    const second = (await t.req("POST", `/v1/agents/${a.id}/messages/async`, { input: "cancel me" })).body;
    await new Promise((r) => setTimeout(r, 100));
    const cancelled = (await t.req("POST", `/v1/agents/${a.id}/messages/cancel`, {})).body;
    expect(Object.keys(cancelled)).toEqual([second.id]);
    for (let i = 0; i < 50; i++) {
      if ((await t.req("GET", `/v1/runs/${second.id}`)).body.status === "cancelled") break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await t.req("GET", `/v1/runs/${second.id}`)).body.status).toBe("cancelled");
  });

  it("rejects bad message requests with a 4xx naming the field", async () => {
    const a = await agent();
    expect((await t.req("POST", `/v1/agents/${a.id}/messages`, {})).status).toBe(422);
    expect(
      (await t.req("POST", `/v1/agents/${a.id}/messages`, { messages: [{ role: "user", content: 5 }] })).body
        .detail[0].loc,
    ).toEqual(["body", "messages", 0, "content"]);
    expect(
      (await t.req("POST", `/v1/agents/${a.id}/messages`, { messages: [{ role: "wizard", content: "x" }] }))
        .status,
    ).toBe(422);
    expect((await send(a.id, "x", { max_steps: 0 })).status).toBe(422);
    expect((await send("agent-00000000-0000-4000-8000-000000000000", "x")).status).toBe(404);
    const parts = await t.req("POST", `/v1/agents/${a.id}/messages`, {
      messages: [{ role: "user", content: [{ type: "text", text: "from parts" }] }],
    });
    expect(JSON.stringify(parts.body)).toContain("echo: from parts");
  });

  it("resets the conversation", async () => {
    const a = await agent();
    await send(a.id, "hello");
    const reset = await t.req("PATCH", `/v1/agents/${a.id}/reset-messages`, {});
    expect(reset.status).toBe(200);
    expect(reset.body.message_ids).toEqual([]);
    expect((await t.req("GET", `/v1/agents/${a.id}/messages`)).body).toEqual([]);
  });

  it("lists the configured models", async () => {
    const models = (await t.req("GET", "/v1/models/")).body;
    expect(models.map((m: any) => m.handle)).toContain("openai/gpt-4o-mini");
    expect(models.map((m: any) => m.handle)).toContain("anthropic/claude-sonnet-4-5");
    const embeddings = (await t.req("GET", "/v1/models/embedding")).body;
    expect(embeddings.map((m: any) => m.handle)).toContain("openai/text-embedding-3-small");
  });
});

describe("a client that goes away mid-stream", () => {
  it("does not corrupt the agent: the step still commits, and the agent answers the next message", async () => {
    fake.script((req) =>
      callsSinceUser(req) === 0
        ? { toolCalls: [{ name: "conversation_search", args: { query: "x", request_heartbeat: true } }] }
        : { delayMs: 300, toolCalls: [{ name: "send_message", args: { message: "finished anyway" } }] },
    );
    const a = await agent();
    const url = await t.kelpie.app.listen({ host: "127.0.0.1", port: 0 });
    const controller = new AbortController();
    const res = await fetch(`${url}/v1/agents/${a.id}/messages/stream`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "stream then vanish" }] }),
      signal: controller.signal,
    });
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toContain("data: ");
    controller.abort();
    // The turn finishes on the server: its messages are all stored, whole.
    let list: any[] = [];
    for (let i = 0; i < 50; i++) {
      list = (await t.req("GET", `/v1/agents/${a.id}/messages?order=asc`)).body;
      if (list.some((m: any) => m.message_type === "assistant_message")) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(list.map((m: any) => m.message_type)).toEqual([
      "user_message",
      "tool_call_message",
      "tool_return_message",
      "assistant_message",
      "tool_return_message",
    ]);
    fake.script((req) => ({
      toolCalls: [{ name: "send_message", args: { message: `echo: ${lastUserText(req)}` } }],
    }));
    const next = await send(a.id, "still there?");
    expect(assistantText(next.body)).toBe("echo: still there?");
  });

  it("a turn whose first step cannot commit fails the request with that error, and stores nothing", async () => {
    fake.script(() => ({ toolCalls: [{ name: "send_message", args: { message: "lost" } }] }));
    const a = await agent();
    const commit = storage.commit.bind(storage);
    // Another node took the agent over between the model call and the step's commit.
    storage.commit = async (mutations, options) => {
      if (mutations.some((m) => m.op === "put_step")) {
        storage.commit = commit;
        throw new KelpieError("FENCED", `agent ${a.id}: fencing token is stale`);
      }
      return commit(mutations, options);
    };
    const res = await send(a.id, "hello?");
    expect(res.status).toBe(409);
    expect(res.body.code).toBe("FENCED");
    expect((await t.req("GET", `/v1/agents/${a.id}/messages`)).body).toEqual([]);
  });
});
