// Token counting for context-window accounting: more text counts more, tool schemas count, the
// encoding follows the model family, and user text that looks like a special token is just text.
import { describe, expect, it } from "vitest";
import { countPromptTokens, countTextTokens, encodingForModel } from "../../src/llm/tokens.ts";
import type { ChatMessage } from "../../src/llm/types.ts";
import { weatherTool } from "./support.ts";

const base = { providerName: "openai", model: "gpt-4o-mini", system: "You are helpful.", tools: [] };
const says = (text: string): ChatMessage[] => [{ role: "user", text }];

describe("token counting", () => {
  it("picks o200k_base for the gpt-4o family and cl100k_base otherwise", () => {
    expect(encodingForModel("openai", "gpt-4o-mini")).toBe("o200k_base");
    expect(encodingForModel("openai", "gpt-4.1")).toBe("o200k_base");
    expect(encodingForModel("openai", "o3-mini")).toBe("o200k_base");
    expect(encodingForModel("openai", "gpt-4")).toBe("cl100k_base");
    expect(encodingForModel("openai-compatible", "llama3")).toBe("cl100k_base");
    expect(encodingForModel("anthropic", "claude-sonnet-4-5")).toBe("cl100k_base");
  });

  it("counts known text exactly", () => {
    expect(countTextTokens("hello world", "o200k_base")).toBe(2);
    expect(countTextTokens("hello world", "cl100k_base")).toBe(2);
    expect(countTextTokens("", "cl100k_base")).toBe(0);
  });

  it("counts more for more text", () => {
    const short = countPromptTokens({ ...base, messages: says("hi") });
    const long = countPromptTokens({ ...base, messages: says("hi ".repeat(200)) });
    expect(long.messagesTokens).toBeGreaterThan(short.messagesTokens + 150);
    expect(long.totalTokens).toBeGreaterThan(short.totalTokens);
    expect(long.systemTokens).toBe(short.systemTokens);
  });

  it("counts tool schemas and tool calls", () => {
    const without = countPromptTokens({ ...base, messages: says("weather?") });
    const withTool = countPromptTokens({ ...base, messages: says("weather?"), tools: [weatherTool] });
    expect(without.toolsTokens).toBe(0);
    expect(withTool.toolsTokens).toBeGreaterThan(10);
    expect(withTool.totalTokens - without.totalTokens).toBe(withTool.toolsTokens);
    const withCall = countPromptTokens({
      ...base,
      messages: [
        ...says("weather?"),
        {
          role: "assistant",
          text: "",
          toolCalls: [{ id: "c", name: "get_weather", argsJson: '{"city":"Paris"}' }],
        },
        { role: "tool", toolCallId: "c", toolName: "get_weather", content: "sunny and 24 degrees" },
      ],
    });
    expect(withCall.messagesTokens).toBeGreaterThan(without.messagesTokens + 10);
  });

  it("counts special-token text in user content as plain text", () => {
    expect(countTextTokens("say <|endoftext|> please", "cl100k_base")).toBeGreaterThan(3);
  });

  it("counts Anthropic prompts with the approximation", () => {
    const counted = countPromptTokens({
      ...base,
      providerName: "anthropic",
      model: "claude-haiku-4-5",
      messages: says("hi"),
    });
    expect(counted.totalTokens).toBeGreaterThan(0);
  });

  it("counts a long run without whitespace as one token per byte (an upper bound), around exact words", () => {
    const run = "y".repeat(40_000);
    expect(countTextTokens(run, "o200k_base")).toBe(40_000);
    const words = countTextTokens("hello there ", "o200k_base") + countTextTokens(" and bye", "o200k_base");
    expect(countTextTokens(`hello there ${run} and bye`, "o200k_base")).toBe(words + 40_000);
    // Runs shorter than the bound are encoded exactly.
    expect(countTextTokens("y".repeat(99), "o200k_base")).toBeLessThan(99);
  });
});
