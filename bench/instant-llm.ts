// A provider that answers at once (0 ms model latency), so a benchmark measures the server alone:
// every call replies through send_message, ending the turn after one step.
import {
  type ChatEvent,
  type ChatRequest,
  type ChatResult,
  LLM_SPEC,
  type LlmProvider,
} from "../src/llm/types.ts";

let callsCount = 0;

function reply(req: ChatRequest): ChatResult {
  callsCount++;
  const last = [...req.messages].reverse().find((m) => m.role === "user");
  const text = last?.role === "user" ? last.text : "";
  return {
    text: "",
    toolCalls: [
      {
        id: `call_${callsCount}`,
        name: "send_message",
        argsJson: JSON.stringify({ message: `echo: ${text}` }),
      },
    ],
    finishReason: { unified: "tool-calls", raw: "tool_calls" },
    usage: { inputTokens: 10, outputTokens: 5, totalTokens: 15 },
    warnings: [],
    modelId: req.model,
  };
}

export const instantLlm: LlmProvider = {
  spec: LLM_SPEC,
  name: "instant",
  complete: async (req) => reply(req),
  stream: async function* (req): AsyncGenerator<ChatEvent> {
    const r = reply(req);
    const call = r.toolCalls[0]!;
    yield { type: "tool-call", index: 0, id: call.id, toolName: call.name, argsJson: call.argsJson };
    yield { type: "finish", finishReason: r.finishReason, usage: r.usage, warnings: [], modelId: r.modelId };
  },
};
