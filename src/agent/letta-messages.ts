// Stored messages → Letta's message union (user_message, system_message, reasoning_message,
// assistant_message, tool_call_message, tool_return_message), as Letta's Message.to_letta_messages
// does: a send_message call is shown as the assistant's words, other calls as tool calls.
import type { MessageRecord } from "../storage/types.ts";

export interface LettaMessageOptions {
  useAssistantMessage: boolean;
  assistantMessageToolName: string;
  assistantMessageToolKwarg: string;
}

export const LETTA_MESSAGE_OPTIONS_DEFAULT: LettaMessageOptions = {
  useAssistantMessage: true,
  assistantMessageToolName: "send_message",
  assistantMessageToolKwarg: "message",
};

export type LettaMessage = Record<string, unknown> & { id: string; message_type: string; date: string };

export function isoDate(ms: number): string {
  return new Date(ms).toISOString();
}

function textOf(message: MessageRecord): string {
  return message.content
    .filter((p): p is { type: "text"; text: string } => p.type === "text")
    .map((p) => p.text)
    .join("");
}

function parseArgs(json: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(json);
    return value !== null && typeof value === "object" && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

/** Parses a tool return as Letta packs it (`{"status": "...", "message": ...}`), if it is one. */
export function unpackToolReturn(text: string): { status: "success" | "error"; value: string } {
  const packed = parseArgs(text);
  if (packed !== null && (packed.status === "OK" || packed.status === "Failed")) {
    const message = packed.message;
    return {
      status: packed.status === "OK" ? "success" : "error",
      value: typeof message === "string" ? message : JSON.stringify(message),
    };
  }
  return { status: "success", value: text };
}

export function toLettaMessages(
  message: MessageRecord,
  options: LettaMessageOptions = LETTA_MESSAGE_OPTIONS_DEFAULT,
): LettaMessage[] {
  const base = {
    id: message.id,
    date: isoDate(message.created_at_ms),
    name: message.name,
    otid: message.otid,
    sender_id: message.sender_id,
    step_id: message.step_id,
    is_err: message.is_err,
    seq_id: null,
    run_id: message.run_id,
  };
  switch (message.role) {
    case "system":
      return [{ ...base, message_type: "system_message", content: textOf(message) }];
    case "user":
      return [{ ...base, message_type: "user_message", content: textOf(message) }];
    case "tool": {
      const { status, value } = unpackToolReturn(textOf(message));
      return [
        {
          ...base,
          message_type: "tool_return_message",
          tool_return: value,
          status: message.is_err ? "error" : status,
          tool_call_id: message.tool_call_id ?? "",
          stdout: (message.tool_returns?.[0] as { stdout?: string[] | null } | undefined)?.stdout ?? null,
          stderr: (message.tool_returns?.[0] as { stderr?: string[] | null } | undefined)?.stderr ?? null,
          tool_returns: message.tool_returns,
        },
      ];
    }
    case "assistant":
    case "approval": {
      const out: LettaMessage[] = [];
      for (const part of message.content) {
        if (part.type === "reasoning" && typeof part.reasoning === "string") {
          out.push({
            ...base,
            message_type: "reasoning_message",
            source: part.is_native ? "reasoner_model" : "non_reasoner_model",
            reasoning: part.reasoning,
            signature: part.signature ?? null,
          });
        }
      }
      const text = textOf(message);
      const calls = message.tool_calls ?? [];
      if (text.length > 0) {
        // With tool calls, the text is the model's inner monologue (MemGPT); alone, it is the answer.
        out.push(
          calls.length > 0
            ? {
                ...base,
                message_type: "reasoning_message",
                source: "non_reasoner_model",
                reasoning: text,
                signature: null,
              }
            : { ...base, message_type: "assistant_message", content: text },
        );
      }
      for (const call of calls) {
        const args = parseArgs(call.function.arguments);
        const said = args?.[options.assistantMessageToolKwarg];
        if (
          options.useAssistantMessage &&
          call.function.name === options.assistantMessageToolName &&
          typeof said === "string"
        ) {
          out.push({ ...base, message_type: "assistant_message", content: said });
          continue;
        }
        const toolCall = {
          name: call.function.name,
          arguments: call.function.arguments,
          tool_call_id: call.id,
        };
        out.push({
          ...base,
          message_type:
            message.role === "approval" || message.pending_tool_call_ids?.includes(call.id) === true
              ? "approval_request_message"
              : "tool_call_message",
          tool_call: toolCall,
          tool_calls: [toolCall],
        });
      }
      return out;
    }
  }
}
