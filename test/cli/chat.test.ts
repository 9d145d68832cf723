// The pieces of `kelpie chat` that need no terminal: SSE framing, tool-argument summaries, rendering.
import { describe, expect, it } from "vitest";
import { formatToolArgs, ReplyRenderer, styleFor } from "../../src/cli/chat.ts";
import { readSse } from "../../src/cli/sse.ts";

function streamOf(pieces: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const piece of pieces) controller.enqueue(encoder.encode(piece));
      controller.close();
    },
  });
}

async function collect(pieces: string[]) {
  const out = [];
  for await (const event of readSse(streamOf(pieces))) out.push(event);
  return out;
}

describe("readSse", () => {
  it("frames events split anywhere, with \\n, \\r\\n or \\r line ends, comments and multi-line data", async () => {
    const events = await collect([
      ": comment\n",
      'data: {"a":',
      "1}\r",
      "\n\r\nevent: ping\rdata: x\r\r",
      "data: one\ndata:two\n\n",
      "data: [DONE]\n\n",
      "data: cut off",
    ]);
    expect(events).toEqual([
      { event: "message", data: '{"a":1}' },
      { event: "ping", data: "x" },
      { event: "message", data: "one\ntwo" },
      { event: "message", data: "[DONE]" },
    ]);
  });

  it("decodes a multi-byte character split across chunks", async () => {
    const bytes = new TextEncoder().encode("data: ⚙\n\n");
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.slice(0, 7));
        controller.enqueue(bytes.slice(7));
        controller.close();
      },
    });
    const events = [];
    for await (const event of readSse(stream)) events.push(event);
    expect(events).toEqual([{ event: "message", data: "⚙" }]);
  });
});

describe("formatToolArgs", () => {
  it("shows JSON values, hides request_heartbeat, cuts long strings and long lists", () => {
    expect(formatToolArgs('{"label":"human","content":"Ada","request_heartbeat":true}')).toBe(
      'label="human", content="Ada"',
    );
    expect(formatToolArgs(JSON.stringify({ text: "x".repeat(100) }))).toBe(`text="${"x".repeat(39)}…"`);
    const many = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i * 1000]));
    expect(formatToolArgs(JSON.stringify(many))).toMatch(/^k0=0, k1=1000, .*, …$/);
    expect(formatToolArgs("{not json")).toBe("{not json");
  });
});

describe("ReplyRenderer", () => {
  it("joins token chunks of one message, holds tool calls until their return, hides send_message", () => {
    let out = "";
    const r = new ReplyRenderer((s) => (out += s), styleFor(false), "ada");
    r.handle({ message_type: "reasoning_message", id: "m1", reasoning: "Let me " });
    r.handle({ message_type: "reasoning_message", id: "m1", reasoning: "note that." });
    const call = { name: "core_memory_append", tool_call_id: "c1" };
    r.handle({ message_type: "tool_call_message", id: "m1", tool_call: { ...call, arguments: '{"label":' } });
    r.handle({ message_type: "tool_call_message", id: "m1", tool_call: { ...call, arguments: '"human"}' } });
    r.handle({
      message_type: "tool_return_message",
      id: "t1",
      tool_call_id: "c1",
      status: "success",
      tool_return: "None",
    });
    r.handle({ message_type: "assistant_message", id: "m2", content: "Hello " });
    r.handle({ message_type: "assistant_message", id: "m2", content: "Ada." });
    r.handle({
      message_type: "tool_return_message",
      id: "t2",
      tool_call_id: "c2",
      status: "success",
      name: "send_message",
    });
    r.handle({
      message_type: "tool_call_message",
      id: "m3",
      tool_call: { name: "web_search", tool_call_id: "c3", arguments: "{}" },
    });
    r.handle({
      message_type: "tool_return_message",
      id: "t3",
      tool_call_id: "c3",
      status: "error",
      tool_return: "no key\nset",
    });
    r.handle({ message_type: "stop_reason", stop_reason: "max_steps" });
    r.finish();
    expect(out).toBe(
      [
        "thinking: Let me note that.",
        '⚙ core_memory_append(label="human") → ok',
        "ada> Hello Ada.",
        "⚙ web_search() → error: no key set",
        "(stopped: max_steps)",
        "",
      ].join("\n"),
    );
  });
});
