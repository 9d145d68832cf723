// Folds a stream of chat events into the result `complete` would have returned, for callers that
// stream to a client and still need the whole turn (and for tests comparing the two paths).
import { assert } from "../core/assert.ts";
import type { ChatEvent, ChatResult, ToolCall } from "./types.ts";

export async function collectChatStream(events: AsyncIterable<ChatEvent>): Promise<ChatResult> {
  let text = "";
  let reasoning = "";
  const toolCalls = new Map<number, ToolCall>();
  for await (const event of events) {
    switch (event.type) {
      case "text-delta":
        text += event.delta;
        break;
      case "reasoning-delta":
        reasoning += event.delta;
        break;
      case "tool-call-start":
      case "tool-call-delta":
        break;
      case "tool-call":
        assert(!toolCalls.has(event.index), `tool call ${event.index} completed twice`);
        toolCalls.set(event.index, { id: event.id, name: event.toolName, argsJson: event.argsJson });
        break;
      case "finish":
        return {
          text,
          ...(reasoning === "" ? {} : { reasoning }),
          toolCalls: [...toolCalls.entries()].sort(([a], [b]) => a - b).map(([, call]) => call),
          finishReason: event.finishReason,
          usage: event.usage,
          warnings: event.warnings,
          modelId: event.modelId,
        };
    }
  }
  assert(false, "a chat stream ended without a finish event");
}
