// Both hosted providers, over real HTTP, through the real SDKs and our adapters, against the fake
// LLM server speaking each genuine wire protocol. What the agent loop relies on: text, tool calls
// (single and parallel, streamed and not), usage, the system prompt reaching the model, retries of
// transient failures only, clear errors, raw malformed tool arguments and cancellation.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { KelpieError } from "../../src/core/errors.ts";
import { collectChatStream } from "../../src/llm/collect.ts";
import type { ChatEvent } from "../../src/llm/types.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { chat, eventsOf, neverAborted, providerFor, timeTool, weatherTool } from "./support.ts";

interface Case {
  protocol: "openai" | "anthropic";
  handle: string;
  model: string;
  toolCallId: RegExp;
  finishStopRaw: string;
  finishToolsRaw: string;
  /** Where the system prompt travels on this wire. */
  systemOf(body: Record<string, unknown>): unknown;
}

const CASES: Case[] = [
  {
    protocol: "openai",
    handle: "openai/gpt-4o-mini",
    model: "gpt-4o-mini",
    toolCallId: /^call_\w+$/,
    finishStopRaw: "stop",
    finishToolsRaw: "tool_calls",
    systemOf: (body) => (body.messages as { role: string; content: unknown }[])[0],
  },
  {
    protocol: "anthropic",
    handle: "anthropic/claude-sonnet-4-5",
    model: "claude-sonnet-4-5",
    toolCallId: /^toolu_\w+$/,
    finishStopRaw: "end_turn",
    finishToolsRaw: "tool_use",
    systemOf: (body) => body.system,
  },
];

let fake: FakeLlm;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => fake.reset());

async function expectKelpieError(
  promise: Promise<unknown>,
  code: string,
  message: RegExp,
): Promise<KelpieError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KelpieError);
  expect((err as KelpieError).code).toBe(code);
  expect((err as KelpieError).message).toMatch(message);
  return err as KelpieError;
}

describe.each(CASES)("$protocol provider", (c) => {
  it("answers plain text with a stop finish and the model id", async () => {
    const { provider } = providerFor(fake, c.handle);
    const result = await provider.complete(chat(c.model, "hello there"), neverAborted());
    expect(result.text).toBe("echo: hello there");
    expect(result.toolCalls).toEqual([]);
    expect(result.finishReason).toEqual({ unified: "stop", raw: c.finishStopRaw });
    expect(result.modelId).toBe(c.model);
    expect(fake.requests.filter((r) => r.protocol === c.protocol)).toHaveLength(1);
  });

  it("delivers the system prompt where the protocol puts it", async () => {
    const { provider } = providerFor(fake, c.handle);
    await provider.complete(chat(c.model, "hi", { system: "PERSONA-MARK-123" }), neverAborted());
    const body = fake.requests[0]!.body;
    if (c.protocol === "openai")
      expect(c.systemOf(body)).toEqual({ role: "system", content: "PERSONA-MARK-123" });
    else expect(c.systemOf(body)).toBe("PERSONA-MARK-123");
    if (c.protocol === "anthropic") {
      expect((body.messages as { role: string }[]).every((m) => m.role !== "system")).toBe(true);
    }
  });

  it("maps usage, streamed and not", async () => {
    fake.script(() => ({ text: "counted", usage: { inputTokens: 11, outputTokens: 7 } }));
    const { provider } = providerFor(fake, c.handle);
    const result = await provider.complete(chat(c.model, "x"), neverAborted());
    expect(result.usage).toEqual({ inputTokens: 11, outputTokens: 7, totalTokens: 18 });
    const streamed = await collectChatStream(provider.stream(chat(c.model, "x"), neverAborted()));
    expect(streamed.usage).toEqual({ inputTokens: 11, outputTokens: 7, totalTokens: 18 });
  });

  it("returns a single tool call with its id, name and JSON arguments", async () => {
    let seen: ScriptRequest | undefined;
    fake.script((req) => {
      seen = req;
      return { toolCalls: [{ name: "get_weather", args: { city: "Paris" } }] };
    });
    const { provider } = providerFor(fake, c.handle);
    const result = await provider.complete(
      chat(c.model, "weather?", { tools: [weatherTool] }),
      neverAborted(),
    );
    expect(seen?.tools).toEqual([weatherTool]);
    expect(result.toolCalls).toHaveLength(1);
    const [call] = result.toolCalls;
    expect(call!.id).toMatch(c.toolCallId);
    expect(call!.name).toBe("get_weather");
    expect(JSON.parse(call!.argsJson)).toEqual({ city: "Paris" });
    expect(result.finishReason).toEqual({ unified: "tool-calls", raw: c.finishToolsRaw });
  });

  it("returns parallel tool calls in order", async () => {
    fake.script(() => ({
      text: "Checking both.",
      toolCalls: [
        { name: "get_weather", args: { city: "Oslo" } },
        { name: "get_time", args: { tz: "Europe/Oslo" } },
      ],
    }));
    const { provider } = providerFor(fake, c.handle);
    const req = chat(c.model, "weather and time?", {
      tools: [weatherTool, timeTool],
      parallelToolCalls: true,
    });
    const result = await provider.complete(req, neverAborted());
    expect(result.text).toBe("Checking both.");
    expect(result.toolCalls.map((t) => [t.name, JSON.parse(t.argsJson)])).toEqual([
      ["get_weather", { city: "Oslo" }],
      ["get_time", { tz: "Europe/Oslo" }],
    ]);
    expect(new Set(result.toolCalls.map((t) => t.id)).size).toBe(2);
  });

  it("sends tool results back so the model sees the call id and tool name", async () => {
    let seen: ScriptRequest | undefined;
    fake.script((req) => {
      seen = req;
      return { text: "It is sunny." };
    });
    const { provider } = providerFor(fake, c.handle);
    const callId = c.protocol === "openai" ? "call_abc" : "toolu_abc";
    const req = chat(c.model, "weather?", {
      tools: [weatherTool],
      messages: [
        { role: "user", text: "weather?" },
        {
          role: "assistant",
          text: "",
          toolCalls: [{ id: callId, name: "get_weather", argsJson: '{"city":"Rome"}' }],
        },
        { role: "tool", toolCallId: callId, toolName: "get_weather", content: '{"sky":"sunny"}' },
      ],
    });
    const result = await provider.complete(req, neverAborted());
    expect(result.text).toBe("It is sunny.");
    expect(seen?.messages.map((m) => m.role)).toEqual(["user", "assistant", "tool"]);
    expect(seen?.messages[1]?.toolCalls).toEqual([
      { id: callId, name: "get_weather", args: '{"city":"Rome"}' },
    ]);
    expect(seen?.messages[2]).toMatchObject({
      toolCallId: callId,
      toolName: "get_weather",
      text: '{"sky":"sunny"}',
    });
  });

  it("streams text as several deltas that add up to the complete answer", async () => {
    const { provider } = providerFor(fake, c.handle);
    const events = await eventsOf(provider.stream(chat(c.model, "stream me please"), neverAborted()));
    const deltas = events.filter((e) => e.type === "text-delta").map((e) => e.delta);
    expect(deltas.length).toBeGreaterThanOrEqual(3);
    expect(deltas.join("")).toBe("echo: stream me please");
    const finish = events.at(-1);
    expect(finish).toMatchObject({ type: "finish", finishReason: { unified: "stop", raw: c.finishStopRaw } });
    expect(events.filter((e) => e.type === "finish")).toHaveLength(1);
  });

  it("assembles streamed parallel tool calls from their deltas", async () => {
    fake.script(() => ({
      toolCalls: [
        { name: "get_weather", args: { city: "Lima", units: "metric" } },
        { name: "get_time", args: { tz: "America/Lima" } },
      ],
    }));
    const { provider } = providerFor(fake, c.handle);
    const req = chat(c.model, "both", { tools: [weatherTool, timeTool] });
    const events = await eventsOf(provider.stream(req, neverAborted()));
    const starts = events.filter((e) => e.type === "tool-call-start");
    expect(starts.map((e) => [e.index, e.toolName])).toEqual([
      [0, "get_weather"],
      [1, "get_time"],
    ]);
    const deltas = events.filter(
      (e): e is Extract<ChatEvent, { type: "tool-call-delta" }> => e.type === "tool-call-delta",
    );
    expect(deltas.filter((d) => d.index === 0).length).toBeGreaterThan(1);
    const done = events.filter((e): e is Extract<ChatEvent, { type: "tool-call" }> => e.type === "tool-call");
    expect(done.map((e) => JSON.parse(e.argsJson))).toEqual([
      { city: "Lima", units: "metric" },
      { tz: "America/Lima" },
    ]);
    for (const call of done) {
      expect(call.id).toMatch(c.toolCallId);
      const fromDeltas = deltas.filter((d) => d.index === call.index).map((d) => d.argsDelta);
      expect(fromDeltas.join("")).toBe(call.argsJson);
    }
    expect(events.at(-1)).toMatchObject({ type: "finish", finishReason: { unified: "tool-calls" } });
    const collected = await collectChatStream(provider.stream(req, neverAborted()));
    const completed = await provider.complete(req, neverAborted());
    expect(collected.toolCalls.map((t) => [t.name, t.argsJson])).toEqual(
      completed.toolCalls.map((t) => [t.name, t.argsJson]),
    );
  });

  it("retries two 429s, honouring retry-after up to its cap, then succeeds", async () => {
    fake.failNext(2, 429); // retry-after: 1 s, capped to retryAfterMsMax = 25 ms
    const { provider, notices } = providerFor(fake, c.handle);
    const result = await provider.complete(chat(c.model, "after faults"), neverAborted());
    expect(result.text).toBe("echo: after faults");
    expect(fake.requests).toHaveLength(3);
    expect(notices.map((n) => [n.attempt, n.delayMs])).toEqual([
      [1, 25],
      [2, 25],
    ]);
  });

  it("gives up after three 500s with an LLM_ERROR naming the provider, status and attempts", async () => {
    fake.failNext(3, 500);
    const { provider } = providerFor(fake, c.handle);
    const err = await expectKelpieError(
      provider.complete(chat(c.model, "x"), neverAborted()),
      "LLM_ERROR",
      new RegExp(`^${c.protocol} 500: injected fault: HTTP 500 after 3 attempts$`),
    );
    expect(err.status).toBe(502);
    expect(fake.requests).toHaveLength(3);
  });

  it("fails a 400 at once, without retrying", async () => {
    fake.failNext(1, 400);
    const { provider, notices } = providerFor(fake, c.handle);
    await expectKelpieError(
      provider.complete(chat(c.model, "x"), neverAborted()),
      "LLM_ERROR",
      new RegExp(`^${c.protocol} 400: injected fault: HTTP 400$`),
    );
    expect(fake.requests).toHaveLength(1);
    expect(notices).toEqual([]);
  });

  it("fails a 401 at once, without retrying", async () => {
    fake.failNext(1, 401);
    const { provider } = providerFor(fake, c.handle);
    await expectKelpieError(provider.complete(chat(c.model, "x"), neverAborted()), "LLM_ERROR", / 401: /);
    expect(fake.requests).toHaveLength(1);
  });

  it("retries a timed-out call, then reports the timeout after the last attempt", async () => {
    fake.failNext(2, "timeout");
    const { provider } = providerFor(fake, c.handle, { timeoutMs: 150, retry: { attemptsMax: 2 } });
    await expectKelpieError(
      provider.complete(chat(c.model, "x"), neverAborted()),
      "LLM_ERROR",
      new RegExp(`^${c.protocol} timeout: no response within 150 ms after 2 attempts$`),
    );
    expect(fake.requests).toHaveLength(2);
  });

  it("recovers when only the first call times out", async () => {
    fake.failNext(1, "timeout");
    const { provider, notices } = providerFor(fake, c.handle, { timeoutMs: 150 });
    const result = await provider.complete(chat(c.model, "second time"), neverAborted());
    expect(result.text).toBe("echo: second time");
    expect(notices).toHaveLength(1);
  });

  it("retries a stream that fails before its first event", async () => {
    fake.failNext(1, 503);
    const { provider, notices } = providerFor(fake, c.handle);
    const result = await collectChatStream(provider.stream(chat(c.model, "streamed retry"), neverAborted()));
    expect(result.text).toBe("echo: streamed retry");
    expect(notices).toHaveLength(1);
  });

  it("passes malformed tool-call arguments through raw, streamed and not", async () => {
    fake.script(() => ({ toolCalls: [{ name: "get_weather", args: { city: "Paris" } }] }));
    const { provider } = providerFor(fake, c.handle);
    const req = chat(c.model, "weather?", { tools: [weatherTool] });
    fake.failNext(1, "malformed-tool-json");
    const result = await provider.complete(req, neverAborted());
    expect(result.toolCalls[0]?.argsJson).toBe('{"city":"Paris"');
    fake.failNext(1, "malformed-tool-json");
    const streamed = await collectChatStream(provider.stream(req, neverAborted()));
    expect(streamed.toolCalls[0]?.argsJson).toBe('{"city":"Paris"');
    expect(() => JSON.parse(streamed.toolCalls[0]!.argsJson)).toThrow();
  });

  it("turns an abort during the call into CANCELLED, promptly", async () => {
    fake.script(() => ({ text: "too late", delayMs: 5_000 }));
    const { provider } = providerFor(fake, c.handle);
    const abort = new AbortController();
    const startedMs = performance.now();
    setTimeout(() => abort.abort(), 50);
    await expectKelpieError(provider.complete(chat(c.model, "x"), abort.signal), "CANCELLED", /cancelled/);
    expect(performance.now() - startedMs).toBeLessThan(2_000);
  });

  it("turns an abort during a stream into CANCELLED", async () => {
    fake.script(() => ({ text: "too late", delayMs: 5_000 }));
    const { provider } = providerFor(fake, c.handle);
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 50);
    await expectKelpieError(
      eventsOf(provider.stream(chat(c.model, "x"), abort.signal)),
      "CANCELLED",
      /cancelled/,
    );
  });

  it("does not call at all when already aborted", async () => {
    const { provider } = providerFor(fake, c.handle);
    const abort = new AbortController();
    abort.abort();
    await expectKelpieError(provider.complete(chat(c.model, "x"), abort.signal), "CANCELLED", /cancelled/);
    expect(fake.requests).toHaveLength(0);
  });
});
