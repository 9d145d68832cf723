// The LLM seam: one small, versioned interface that every provider adapter implements.
// Provider quirks (message shapes, tool formats, stop reasons) stay inside the adapters; what the
// agent loop sees is the provider-neutral request, result and stream events below.

export const LLM_SPEC = "kelpie-llm-v1";

/** A JSON Schema object (a tool's parameters), passed to the provider as given. */
export type JsonSchema = Record<string, unknown>;

/**
 * A tool call as the model made it. `argsJson` is the raw argument text: it is usually a JSON
 * object, but a model can emit invalid JSON, and then it is passed through untouched so the agent
 * loop can report the mistake back to the model.
 */
export interface ToolCall {
  id: string;
  name: string;
  argsJson: string;
}

/** One turn of the conversation, provider-neutral. The system prompt is not a message. */
export type ChatMessage =
  | { role: "user"; text: string }
  | { role: "assistant"; text: string; toolCalls: ToolCall[] }
  | { role: "tool"; toolCallId: string; toolName: string; content: string; isError?: boolean };

export interface ToolSpec {
  name: string;
  description: string;
  parameters: JsonSchema;
}

export type ToolChoice = "auto" | "required" | "none" | { name: string };

export interface ChatRequest {
  model: string;
  system: string;
  messages: ChatMessage[];
  tools: ToolSpec[];
  toolChoice: ToolChoice;
  maxTokens?: number;
  temperature?: number;
  parallelToolCalls?: boolean;
}

export type FinishReasonUnified = "stop" | "length" | "tool-calls" | "content-filter" | "other";

/** Why generation stopped: normalized, with the provider's own value kept beside it. */
export interface FinishReason {
  unified: FinishReasonUnified;
  raw?: string;
}

export interface Usage {
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
}

/** A request setting the provider could not honour: reported, never silently dropped. */
export interface Warning {
  type: "unsupported";
  setting: string;
  details?: string;
}

export interface ChatResult {
  text: string;
  reasoning?: string;
  toolCalls: ToolCall[];
  finishReason: FinishReason;
  usage: Usage;
  warnings: Warning[];
  /** The model id the provider reports having used (may differ from the requested alias). */
  modelId: string;
}

/**
 * Stream events. Text and reasoning arrive as deltas; each tool call is announced
 * (`tool-call-start`), grows (`tool-call-delta`) and completes (`tool-call`, with the full raw
 * arguments); `finish` is always last. `index` numbers tool calls within one response, from 0.
 */
export type ChatEvent =
  | { type: "text-delta"; delta: string }
  | { type: "reasoning-delta"; delta: string }
  | { type: "tool-call-start"; index: number; id: string; toolName: string }
  | { type: "tool-call-delta"; index: number; id: string; argsDelta: string }
  | { type: "tool-call"; index: number; id: string; toolName: string; argsJson: string }
  | { type: "finish"; finishReason: FinishReason; usage: Usage; warnings: Warning[]; modelId: string };

export interface LlmProvider {
  readonly spec: typeof LLM_SPEC;
  /** "openai" | "anthropic" | "openai-compatible" */
  readonly name: string;
  complete(req: ChatRequest, signal: AbortSignal): Promise<ChatResult>;
  stream(req: ChatRequest, signal: AbortSignal): AsyncIterable<ChatEvent>;
}
