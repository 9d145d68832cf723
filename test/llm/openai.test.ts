// OpenAI's quirks, checked on the wire the fake server received: message and tool shapes, the
// token limit field (max_completion_tokens for OpenAI, max_tokens for compatible servers), usage
// requested on streams, fixed-temperature models reported, and OpenAI-compatible servers reached
// without a key.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { SystemClock } from "../../src/core/clock.ts";
import { SeededRng } from "../../src/core/rng.ts";
import { collectChatStream } from "../../src/llm/collect.ts";
import { API_KEY_PLACEHOLDER, llmConfigFromEnv } from "../../src/llm/config.ts";
import { mapOpenAiFinishReason, toOpenAiMessages } from "../../src/llm/openai.ts";
import { resolveLlm } from "../../src/llm/registry.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";
import { chat, eventsOf, FAST_RETRY, neverAborted, providerFor, weatherTool } from "./support.ts";

let fake: FakeLlm;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => fake.reset());

describe("openai adapter", () => {
  it("maps messages: system first, assistant tool calls, tool results by call id", () => {
    expect(
      toOpenAiMessages("SYS", [
        { role: "user", text: "hi" },
        {
          role: "assistant",
          text: "",
          toolCalls: [{ id: "call_1", name: "get_weather", argsJson: '{"city":"X"}' }],
        },
        { role: "tool", toolCallId: "call_1", toolName: "get_weather", content: "sunny" },
        { role: "assistant", text: "Sunny.", toolCalls: [] },
      ]),
    ).toEqual([
      { role: "system", content: "SYS" },
      { role: "user", content: "hi" },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"X"}' } },
        ],
      },
      { role: "tool", tool_call_id: "call_1", content: "sunny" },
      { role: "assistant", content: "Sunny." },
    ]);
  });

  it("sends tools, tool choice, parallelism and max_completion_tokens to OpenAI", async () => {
    const { provider } = providerFor(fake, "openai/gpt-4o-mini");
    const req = chat("gpt-4o-mini", "x", {
      tools: [weatherTool],
      toolChoice: { name: "get_weather" },
      parallelToolCalls: false,
      maxTokens: 99,
      temperature: 0.2,
    });
    await provider.complete(req, neverAborted());
    const body = fake.requests[0]!.body;
    expect(body.tools).toEqual([
      {
        type: "function",
        function: {
          name: "get_weather",
          description: weatherTool.description,
          parameters: weatherTool.parameters,
        },
      },
    ]);
    expect(body.tool_choice).toEqual({ type: "function", function: { name: "get_weather" } });
    expect(body.parallel_tool_calls).toBe(false);
    expect(body.max_completion_tokens).toBe(99);
    expect(body.max_tokens).toBeUndefined();
    expect(body.temperature).toBe(0.2);
  });

  it("leaves tool_choice out without tools, and warns when a tool was required", async () => {
    const { provider } = providerFor(fake, "openai/gpt-4o-mini");
    const result = await provider.complete(
      chat("gpt-4o-mini", "x", { toolChoice: "required" }),
      neverAborted(),
    );
    expect(fake.requests[0]?.body.tool_choice).toBeUndefined();
    expect(result.warnings.map((w) => w.setting)).toEqual(["toolChoice"]);
  });

  it("asks for usage on streams", async () => {
    const { provider } = providerFor(fake, "openai/gpt-4o-mini");
    await eventsOf(provider.stream(chat("gpt-4o-mini", "x"), neverAborted()));
    expect(fake.requests[0]?.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
  });

  it("reports temperature as unsupported for fixed-temperature models", async () => {
    const { provider } = providerFor(fake, "openai/gpt-5");
    const result = await provider.complete(chat("gpt-5", "x", { temperature: 0.3 }), neverAborted());
    expect(fake.requests[0]?.body.temperature).toBeUndefined();
    expect(result.warnings).toEqual([
      { type: "unsupported", setting: "temperature", details: "gpt-5 uses a fixed temperature" },
    ]);
  });

  it("reaches an OpenAI-compatible server without a key, with max_tokens and reasoning", async () => {
    fake.script(() => ({ reasoning: "thinking...", text: "local answer" }));
    const config = llmConfigFromEnv({ OLLAMA_BASE_URL: fake.url }); // Letta's form, without /v1
    const { model, provider } = resolveLlm("ollama/llama3", config, {
      clock: new SystemClock(),
      rng: new SeededRng(1),
      retry: FAST_RETRY,
    });
    expect(provider.name).toBe("openai-compatible");
    expect(model.baseUrl).toBe(`${fake.url}/v1`);
    const result = await provider.complete(chat("llama3", "hi", { maxTokens: 50 }), neverAborted());
    expect(result).toMatchObject({ text: "local answer", reasoning: "thinking..." });
    const streamed = await collectChatStream(provider.stream(chat("llama3", "hi"), neverAborted()));
    expect(streamed).toMatchObject({ text: "local answer", reasoning: "thinking..." });
    const [first] = fake.requests;
    expect(first?.path).toBe("/v1/chat/completions");
    expect(first?.headers.authorization).toBe(`Bearer ${API_KEY_PLACEHOLDER}`);
    expect(first?.body.max_tokens).toBe(50);
    expect(first?.body.max_completion_tokens).toBeUndefined();
  });

  it("maps finish reasons, keeping the raw value", () => {
    expect(mapOpenAiFinishReason("stop")).toEqual({ unified: "stop", raw: "stop" });
    expect(mapOpenAiFinishReason("length").unified).toBe("length");
    expect(mapOpenAiFinishReason("tool_calls").unified).toBe("tool-calls");
    expect(mapOpenAiFinishReason("function_call").unified).toBe("tool-calls");
    expect(mapOpenAiFinishReason("content_filter").unified).toBe("content-filter");
    expect(mapOpenAiFinishReason("eos")).toEqual({ unified: "other", raw: "eos" });
    expect(mapOpenAiFinishReason(null)).toEqual({ unified: "other" });
  });
});
