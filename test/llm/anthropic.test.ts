// Anthropic's quirks, checked on the wire the fake server received: turns alternate (consecutive
// same-role messages merge, tool results ride in user turns ahead of any text), max_tokens is
// always sent, tool choice and parallelism map onto tool_choice, unsupported settings come back as
// warnings, and stop reasons map to the unified finish reasons.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  ANTHROPIC_MAX_TOKENS_DEFAULT,
  mapAnthropicStopReason,
  toAnthropicMessages,
} from "../../src/llm/anthropic.ts";
import { collectChatStream } from "../../src/llm/collect.ts";
import type { ChatMessage, Warning } from "../../src/llm/types.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";
import { chat, neverAborted, providerFor, timeTool, weatherTool } from "./support.ts";

const MODEL = "claude-sonnet-4-5";
const HANDLE = `anthropic/${MODEL}`;

let fake: FakeLlm;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => fake.reset());

const conversation: ChatMessage[] = [
  { role: "user", text: "first" },
  { role: "user", text: "second" },
  {
    role: "assistant",
    text: "Let me check.",
    toolCalls: [
      { id: "toolu_1", name: "get_weather", argsJson: '{"city":"Oslo"}' },
      { id: "toolu_2", name: "get_time", argsJson: '{"tz":"CET"}' },
    ],
  },
  { role: "tool", toolCallId: "toolu_1", toolName: "get_weather", content: "rain" },
  { role: "user", text: "and?" },
  { role: "tool", toolCallId: "toolu_2", toolName: "get_time", content: "noon", isError: false },
];

describe("anthropic adapter", () => {
  it("merges same-role turns and puts tool results first in their user turn", () => {
    expect(toAnthropicMessages(conversation)).toEqual([
      {
        role: "user",
        content: [
          { type: "text", text: "first" },
          { type: "text", text: "second" },
        ],
      },
      {
        role: "assistant",
        content: [
          { type: "text", text: "Let me check." },
          { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Oslo" } },
          { type: "tool_use", id: "toolu_2", name: "get_time", input: { tz: "CET" } },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "toolu_1", content: "rain" },
          { type: "tool_result", tool_use_id: "toolu_2", content: "noon", is_error: false },
          { type: "text", text: "and?" },
        ],
      },
    ]);
  });

  it("sends that alternating history over the wire, with tools as input_schema", async () => {
    const { provider } = providerFor(fake, HANDLE);
    await provider.complete(
      chat(MODEL, "", { messages: conversation, tools: [weatherTool, timeTool] }),
      neverAborted(),
    );
    const body = fake.requests[0]!.body as { messages: { role: string }[]; tools: unknown[] };
    expect(body.messages.map((m) => m.role)).toEqual(["user", "assistant", "user"]);
    expect(body.tools[0]).toEqual({
      name: "get_weather",
      description: weatherTool.description,
      input_schema: weatherTool.parameters,
    });
  });

  it("keeps a history tool call whose arguments were not JSON, and says so", () => {
    const warnings: Warning[] = [];
    const turns = toAnthropicMessages(
      [
        {
          role: "assistant",
          text: "",
          toolCalls: [{ id: "toolu_x", name: "get_weather", argsJson: '{"city":' }],
        },
      ],
      warnings,
    );
    expect(turns[0]?.content).toEqual([
      { type: "tool_use", id: "toolu_x", name: "get_weather", input: { raw_arguments: '{"city":' } },
    ]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.setting).toBe("messages.toolCalls.argsJson");
  });

  it("always sends max_tokens: the agent's, else the default", async () => {
    const { provider } = providerFor(fake, HANDLE);
    await provider.complete(chat(MODEL, "a"), neverAborted());
    await provider.complete(chat(MODEL, "b", { maxTokens: 321 }), neverAborted());
    expect(fake.requests.map((r) => r.body.max_tokens)).toEqual([ANTHROPIC_MAX_TOKENS_DEFAULT, 321]);
  });

  it("maps tool choice and parallelism onto tool_choice", async () => {
    const { provider } = providerFor(fake, HANDLE);
    const tools = [weatherTool];
    await provider.complete(
      chat(MODEL, "a", { tools, toolChoice: "required", parallelToolCalls: false }),
      neverAborted(),
    );
    await provider.complete(chat(MODEL, "b", { tools, toolChoice: { name: "get_weather" } }), neverAborted());
    await provider.complete(chat(MODEL, "c", { tools, toolChoice: "none" }), neverAborted());
    await provider.complete(chat(MODEL, "d", { toolChoice: "auto" }), neverAborted());
    expect(fake.requests.map((r) => r.body.tool_choice)).toEqual([
      { type: "any", disable_parallel_tool_use: true },
      { type: "tool", name: "get_weather" },
      { type: "none" },
      undefined,
    ]);
    expect(fake.requests[3]?.body.tools).toBeUndefined();
  });

  it("reports temperature as unsupported instead of sending it", async () => {
    const { provider } = providerFor(fake, HANDLE);
    const result = await provider.complete(chat(MODEL, "warm", { temperature: 0.7 }), neverAborted());
    expect(fake.requests[0]?.body.temperature).toBeUndefined();
    expect(result.warnings).toEqual([
      { type: "unsupported", setting: "temperature", details: "not a parameter of Anthropic messages" },
    ]);
  });

  it("surfaces thinking as reasoning, streamed and not", async () => {
    fake.script(() => ({ reasoning: "User wants a greeting.", text: "Hello!" }));
    const { provider } = providerFor(fake, HANDLE);
    const result = await provider.complete(chat(MODEL, "hi"), neverAborted());
    expect(result).toMatchObject({ text: "Hello!", reasoning: "User wants a greeting." });
    const streamed = await collectChatStream(provider.stream(chat(MODEL, "hi"), neverAborted()));
    expect(streamed).toMatchObject({ text: "Hello!", reasoning: "User wants a greeting." });
  });

  it("maps stop reasons, keeping the raw value", () => {
    expect(mapAnthropicStopReason("end_turn")).toEqual({ unified: "stop", raw: "end_turn" });
    expect(mapAnthropicStopReason("stop_sequence").unified).toBe("stop");
    expect(mapAnthropicStopReason("max_tokens").unified).toBe("length");
    expect(mapAnthropicStopReason("model_context_window_exceeded").unified).toBe("length");
    expect(mapAnthropicStopReason("tool_use").unified).toBe("tool-calls");
    expect(mapAnthropicStopReason("refusal").unified).toBe("content-filter");
    expect(mapAnthropicStopReason("something_new")).toEqual({ unified: "other", raw: "something_new" });
    expect(mapAnthropicStopReason(null)).toEqual({ unified: "other" });
  });

  it("sends the configured key and no trailing /v1 twice", async () => {
    const { provider } = providerFor(fake, HANDLE);
    await provider.complete(chat(MODEL, "auth"), neverAborted());
    const req = fake.requests[0]!;
    expect(req.path).toBe("/v1/messages");
    expect(JSON.stringify(req.headers)).toContain("sk-ant-test");
  });
});
