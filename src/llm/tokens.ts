// Token counts for a prompt (system + messages + tool schemas), for context-window accounting.
// Counts are estimates: exact for the text of OpenAI models, approximate for the per-message and
// per-tool framing (which providers do not publish exactly) and for Anthropic (see below).
import { createRequire } from "node:module";
import { Tiktoken, type TiktokenBPE } from "js-tiktoken/lite";
import type { ChatMessage, ToolSpec } from "./types.ts";

export type TokenEncodingName = "o200k_base" | "cl100k_base";

/** Framing around each message (role markers), per OpenAI's published counting recipe. */
export const TOKENS_PER_MESSAGE = 3;
/** Priming for the reply that follows the prompt. */
export const TOKENS_PER_REPLY = 3;
/** Framing around each tool definition and each tool call, beyond their JSON text (estimate). */
export const TOKENS_PER_TOOL = 8;

// The gpt-4o family and everything after it (4.1, 4.5, 5, o-series) use o200k_base.
const O200K_MODEL = /^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4)/;

/**
 * Anthropic publishes no tokenizer for its current models, so cl100k_base stands in as an
 * approximation: good enough to budget a context window, not to bill by.
 */
export function encodingForModel(providerName: string, model: string): TokenEncodingName {
  if (providerName === "anthropic") return "cl100k_base";
  return O200K_MODEL.test(model) ? "o200k_base" : "cl100k_base";
}

// Rank tables are large (o200k_base takes about half a second to load): each is loaded on first
// use, synchronously, and kept.
const encoders = new Map<TokenEncodingName, Tiktoken>();
const require = createRequire(import.meta.url);

function encoder(name: TokenEncodingName): Tiktoken {
  let found = encoders.get(name);
  if (found === undefined) {
    const ranks = require(`js-tiktoken/ranks/${name}`) as TiktokenBPE;
    found = new Tiktoken(ranks);
    encoders.set(name, found);
  }
  return found;
}

/**
 * Byte-pair encoding takes time quadratic in the length of one "word", so a long run without
 * whitespace (a blob, a line of one repeated character) could stall the server for minutes. Such
 * runs are counted as one token per UTF-8 byte instead: an upper bound (a token covers at least one
 * byte), which is the safe side for fitting a context window.
 */
export const TOKEN_COUNT_RUN_CHARS_MAX = 100;
const LONG_RUN = new RegExp(`\\S{${TOKEN_COUNT_RUN_CHARS_MAX},}`, "g");

export function countTextTokens(text: string, encoding: TokenEncodingName): number {
  if (text === "") return 0;
  // Special-token text such as "<|endoftext|>" in user content is counted as ordinary text.
  const encode = (part: string) => (part === "" ? 0 : encoder(encoding).encode(part, [], []).length);
  if (text.length < TOKEN_COUNT_RUN_CHARS_MAX) return encode(text);
  let total = 0;
  let from = 0;
  for (const run of text.matchAll(LONG_RUN)) {
    total += encode(text.slice(from, run.index)) + Buffer.byteLength(run[0]);
    from = run.index + run[0].length;
  }
  return total + encode(text.slice(from));
}

function messageTokens(m: ChatMessage, encoding: TokenEncodingName): number {
  switch (m.role) {
    case "user":
      return countTextTokens(m.text, encoding);
    case "assistant":
      return (
        countTextTokens(m.text, encoding) +
        m.toolCalls.reduce(
          (sum, c) =>
            sum + TOKENS_PER_TOOL + countTextTokens(c.name, encoding) + countTextTokens(c.argsJson, encoding),
          0,
        )
      );
    case "tool":
      return countTextTokens(m.toolName, encoding) + countTextTokens(m.content, encoding);
  }
}

export interface PromptToCount {
  providerName: string;
  model: string;
  system: string;
  messages: ChatMessage[];
  tools: ToolSpec[];
}

export interface PromptTokens {
  systemTokens: number;
  messagesTokens: number;
  toolsTokens: number;
  totalTokens: number;
}

/** Estimated prompt tokens, split the way Letta's context-window view reports them. */
export function countPromptTokens(prompt: PromptToCount): PromptTokens {
  const encoding = encodingForModel(prompt.providerName, prompt.model);
  const systemTokens =
    prompt.system === "" ? 0 : TOKENS_PER_MESSAGE + countTextTokens(prompt.system, encoding);
  const messagesTokens = prompt.messages.reduce(
    (sum, m) => sum + TOKENS_PER_MESSAGE + messageTokens(m, encoding),
    0,
  );
  const toolsTokens = prompt.tools.reduce(
    (sum, t) =>
      sum +
      TOKENS_PER_TOOL +
      countTextTokens(
        JSON.stringify({ name: t.name, description: t.description, parameters: t.parameters }),
        encoding,
      ),
    0,
  );
  return {
    systemTokens,
    messagesTokens,
    toolsTokens,
    totalTokens: systemTokens + messagesTokens + toolsTokens + TOKENS_PER_REPLY,
  };
}
