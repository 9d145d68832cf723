// Stored messages → the provider-neutral conversation the LLM sees.
import type { ChatMessage } from "../llm/types.ts";
import type { MessageRecord } from "../storage/types.ts";

export function textOf(message: MessageRecord): string {
  return message.content
    .filter((p): p is { type: "text"; text: string } => p.type === "text" && typeof p.text === "string")
    .map((p) => p.text)
    .join("");
}

/** Stored messages never change, so each one's chat form is made once (the history is re-sent every step). */
const chatForms = new WeakMap<MessageRecord, ChatMessage | null>();

export function toChatMessages(messages: MessageRecord[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (const m of messages) {
    let form = chatForms.get(m);
    if (form === undefined) {
      form = toChatMessage(m);
      chatForms.set(m, form);
    }
    if (form !== null) out.push(form);
  }
  return out;
}

function toChatMessage(m: MessageRecord): ChatMessage | null {
  const out: ChatMessage[] = [];
  switch (m.role) {
    case "user":
      out.push({ role: "user", text: textOf(m) });
      break;
    case "system":
      // A system message inside the history (a summary, an alert) reaches every provider as user text.
      out.push({ role: "user", text: textOf(m) });
      break;
    case "assistant":
    case "approval":
      out.push({
        role: "assistant",
        text: textOf(m),
        toolCalls: (m.tool_calls ?? []).map((c) => ({
          id: c.id,
          name: c.function.name,
          argsJson: c.function.arguments,
        })),
      });
      break;
    case "tool":
      out.push({
        role: "tool",
        toolCallId: m.tool_call_id ?? "",
        toolName: m.name ?? "",
        content: textOf(m),
        isError: m.is_err === true,
      });
      break;
  }
  return out[0] ?? null;
}
