// Context-window management: when the prompt no longer fits, the oldest in-context messages are
// summarized by the model, the summary stays in context, and the full history stays in storage
// (searchable with conversation_search). Nothing is silently dropped.
import type { ChatMessage, LlmProvider } from "../llm/types.ts";
import type { MessageRecord } from "../storage/types.ts";
import { textOf } from "./history.ts";

/** Summarize when the prompt would use more than this fraction of the context window. */
export const CONTEXT_SUMMARIZE_AT_FRACTION = 0.9;
/** After summarizing, the kept recent messages should use at most this fraction. */
export const CONTEXT_KEEP_FRACTION = 0.5;
export const SUMMARY_MAX_TOKENS = 1_024;

const SUMMARY_SYSTEM =
  "You summarize conversations for an AI agent whose context window is full. Write a concise summary " +
  "(under 300 words) of the conversation excerpt below, from the agent's point of view: what the user " +
  "said and wanted, what the agent did and learned, decisions made, and open threads. Keep names, " +
  "numbers and facts exact. Reply with the summary only.";

function transcript(messages: MessageRecord[]): string {
  return messages
    .map((m) => {
      const calls = (m.tool_calls ?? [])
        .map((c) => ` [called ${c.function.name}(${c.function.arguments})]`)
        .join("");
      return `${m.role}${m.name ? ` (${m.name})` : ""}: ${textOf(m)}${calls}`;
    })
    .join("\n");
}

/**
 * Where to cut the in-context history: the first `cut` messages are summarized. The kept part
 * never starts with a tool result (it must follow its call) and keeps at least the last message.
 */
export function chooseCut(
  messages: MessageRecord[],
  tokensOf: (m: MessageRecord) => number,
  keepTokens: number,
): number {
  let kept = 0;
  let cut = messages.length;
  while (cut > 1 && kept + tokensOf(messages[cut - 1]!) <= keepTokens) {
    kept += tokensOf(messages[cut - 1]!);
    cut--;
  }
  if (cut === messages.length) cut = messages.length - 1;
  while (cut < messages.length && messages[cut]!.role === "tool") cut++;
  return Math.max(0, Math.min(cut, messages.length - 1));
}

export async function summarizeMessages(
  provider: LlmProvider,
  model: string,
  messages: MessageRecord[],
  signal: AbortSignal,
): Promise<string> {
  const request: ChatMessage[] = [{ role: "user", text: transcript(messages) }];
  const result = await provider.complete(
    {
      model,
      system: SUMMARY_SYSTEM,
      messages: request,
      tools: [],
      toolChoice: "none",
      maxTokens: SUMMARY_MAX_TOKENS,
    },
    signal,
  );
  return result.text.trim();
}

/** The text of the in-context summary message (Letta packs it as a system alert in a user turn). */
export function summaryMessageText(hiddenCount: number, summary: string, nowIso: string): string {
  return JSON.stringify({
    type: "system_alert",
    message: `Note: prior messages (${hiddenCount} messages) have been hidden from view due to conversation memory constraints.\nThe following is a summary of the previous messages:\n ${summary}`,
    time: nowIso,
  });
}
