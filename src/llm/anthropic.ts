// Anthropic messages over the official SDK. The quirks live here: the system prompt is a top-level
// parameter, tools are {name, description, input_schema}, tool calls and results are content
// blocks, roles must alternate (tool results travel in a user turn) and max_tokens is required.
// One attempt per call: retries and backoff are ours (retry.ts), on the injected clock.
import Anthropic from "@anthropic-ai/sdk";
import type {
  ContentBlockParam,
  Message,
  MessageCreateParamsBase,
  MessageParam,
  RawMessageStreamEvent,
  Tool,
  ToolChoice,
} from "@anthropic-ai/sdk/resources/messages/messages";
import {
  cancelledError,
  isFetchTransportError,
  type LlmFailure,
  retryHeadersOf,
  type SdkFailureOf,
  toLlmError,
} from "./errors.ts";
import type {
  ChatEvent,
  ChatMessage,
  ChatRequest,
  ChatResult,
  FinishReason,
  LlmProvider,
  ToolCall,
  Usage,
  Warning,
} from "./types.ts";
import { LLM_SPEC } from "./types.ts";
import { toolChoiceWarnings } from "./warnings.ts";

/** Anthropic requires max_tokens on every request; this is ours when the agent sets none. */
export const ANTHROPIC_MAX_TOKENS_DEFAULT = 8_192;

export interface AnthropicProviderOptions {
  /** Without the trailing /v1: the SDK adds /v1/messages itself. */
  baseUrl: string;
  apiKey: string;
  timeoutMs: number;
  fetch?: typeof fetch;
}

export function mapAnthropicStopReason(raw: string | null | undefined): FinishReason {
  const unified = (() => {
    switch (raw) {
      case "end_turn":
      case "stop_sequence":
      case "pause_turn":
        return "stop";
      case "max_tokens":
      case "model_context_window_exceeded":
        return "length";
      case "tool_use":
        return "tool-calls";
      case "refusal":
        return "content-filter";
      default:
        return "other";
    }
  })();
  return raw === null || raw === undefined ? { unified } : { unified, raw };
}

interface AnthropicUsageLike {
  input_tokens?: number | null;
  output_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
}

function mapUsage(usage: AnthropicUsageLike): Usage {
  // Cached prompt tokens are input too: Anthropic counts them apart from input_tokens.
  const inputTokens =
    (usage.input_tokens ?? 0) +
    (usage.cache_creation_input_tokens ?? 0) +
    (usage.cache_read_input_tokens ?? 0);
  const outputTokens = usage.output_tokens ?? 0;
  return { inputTokens, outputTokens, totalTokens: inputTokens + outputTokens };
}

/** Anthropic wants a tool call's input as an object; ours is raw text the model may have botched. */
function toolInputOf(call: ToolCall, warnings: Warning[]): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(call.argsJson === "" ? "{}" : call.argsJson);
    if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed))
      return parsed as Record<string, unknown>;
  } catch {}
  // Keep what the model wrote, so it can see its own mistake in the history.
  warnings.push({
    type: "unsupported",
    setting: "messages.toolCalls.argsJson",
    details: `tool call ${call.id} arguments are not a JSON object; sent as {"raw_arguments": ...}`,
  });
  return { raw_arguments: call.argsJson };
}

function blocksOf(m: ChatMessage, warnings: Warning[]): ContentBlockParam[] {
  switch (m.role) {
    case "user":
      // Anthropic rejects empty text blocks; an empty turn carries nothing anyway.
      return m.text === "" ? [] : [{ type: "text", text: m.text }];
    case "assistant":
      return [
        ...(m.text === "" ? [] : [{ type: "text" as const, text: m.text }]),
        ...m.toolCalls.map((c) => ({
          type: "tool_use" as const,
          id: c.id,
          name: c.name,
          input: toolInputOf(c, warnings),
        })),
      ];
    case "tool":
      return [
        {
          type: "tool_result",
          tool_use_id: m.toolCallId,
          content: m.content,
          ...(m.isError === undefined ? {} : { is_error: m.isError }),
        },
      ];
  }
}

/**
 * Neutral messages to Anthropic turns: consecutive messages of one role merge into one turn (tool
 * results are user turns), and within a user turn tool results come first, as the API requires.
 */
export function toAnthropicMessages(messages: ChatMessage[], warnings: Warning[] = []): MessageParam[] {
  const turns: { role: "user" | "assistant"; content: ContentBlockParam[] }[] = [];
  for (const m of messages) {
    const blocks = blocksOf(m, warnings);
    if (blocks.length === 0) continue;
    const role = m.role === "assistant" ? "assistant" : "user";
    const last = turns.at(-1);
    if (last !== undefined && last.role === role) last.content.push(...blocks);
    else turns.push({ role, content: blocks });
  }
  for (const turn of turns) {
    if (turn.role !== "user") continue;
    const results = turn.content.filter((b) => b.type === "tool_result");
    if (results.length > 0)
      turn.content = [...results, ...turn.content.filter((b) => b.type !== "tool_result")];
  }
  return turns;
}

function toAnthropicToolChoice(req: ChatRequest): ToolChoice {
  const disable = req.parallelToolCalls === false ? { disable_parallel_tool_use: true } : {};
  const choice = req.toolChoice;
  if (choice === "none") return { type: "none" };
  if (choice === "auto") return { type: "auto", ...disable };
  if (choice === "required") return { type: "any", ...disable };
  return { type: "tool", name: choice.name, ...disable };
}

interface BuiltRequest {
  body: MessageCreateParamsBase;
  warnings: Warning[];
}

function buildRequest(req: ChatRequest): BuiltRequest {
  const warnings = toolChoiceWarnings(req);
  const body: MessageCreateParamsBase = {
    model: req.model,
    max_tokens: req.maxTokens ?? ANTHROPIC_MAX_TOKENS_DEFAULT,
    messages: toAnthropicMessages(req.messages, warnings),
  };
  if (req.system !== "") body.system = req.system;
  if (req.tools.length > 0) {
    body.tools = req.tools.map(
      (t): Tool => ({
        name: t.name,
        description: t.description,
        input_schema: t.parameters as Tool.InputSchema,
      }),
    );
    body.tool_choice = toAnthropicToolChoice(req);
  }
  if (req.temperature !== undefined) {
    // The messages API as this SDK describes it has no sampling temperature any more.
    warnings.push({
      type: "unsupported",
      setting: "temperature",
      details: "not a parameter of Anthropic messages",
    });
  }
  return { body, warnings };
}

// Anthropic's documented error types and the HTTP statuses they are sent with.
const STREAM_ERROR_STATUS: Record<string, number> = {
  invalid_request_error: 400,
  authentication_error: 401,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  overloaded_error: 529,
};

function failureOfFor(timeoutMs: number): SdkFailureOf {
  return (err) => {
    if (err instanceof Anthropic.APIConnectionTimeoutError) {
      return { failure: { kind: "timeout" }, detail: `no response within ${timeoutMs} ms` };
    }
    if (err instanceof Anthropic.APIConnectionError)
      return { failure: { kind: "connection" }, detail: err.message };
    if (err instanceof Anthropic.APIError) {
      const detail = err.apiMessage ?? err.message;
      // An `error` event inside a stream has no HTTP status: its type names the status it stands for.
      if (err.status === undefined) {
        const status = err.type === null ? undefined : STREAM_ERROR_STATUS[err.type];
        const failure: LlmFailure = status === undefined ? { kind: "protocol" } : { kind: "status", status };
        return { failure, detail };
      }
      return { failure: { kind: "status", status: err.status, ...retryHeadersOf(err.headers) }, detail };
    }
    if (err instanceof Anthropic.AnthropicError || err instanceof SyntaxError) {
      return { failure: { kind: "protocol" }, detail: err.message };
    }
    if (isFetchTransportError(err))
      return { failure: { kind: "connection" }, detail: (err as Error).message };
    return undefined;
  };
}

function resultOf(message: Message, warnings: Warning[]): ChatResult {
  let text = "";
  let reasoning = "";
  const toolCalls: ToolCall[] = [];
  for (const block of message.content) {
    if (block.type === "text") text += block.text;
    else if (block.type === "thinking") reasoning += block.thinking;
    else if (block.type === "tool_use") {
      // Real responses carry an object; a string is passed through raw rather than re-encoded.
      const argsJson = typeof block.input === "string" ? block.input : JSON.stringify(block.input ?? {});
      toolCalls.push({ id: block.id, name: block.name, argsJson });
    }
  }
  return {
    text,
    ...(reasoning === "" ? {} : { reasoning }),
    toolCalls,
    finishReason: mapAnthropicStopReason(message.stop_reason),
    usage: mapUsage(message.usage),
    warnings,
    modelId: message.model,
  };
}

type OpenBlock =
  | { kind: "text" }
  | { kind: "thinking" }
  | { kind: "tool"; index: number; id: string; name: string; argsJson: string };

class AnthropicProvider implements LlmProvider {
  readonly spec = LLM_SPEC;
  readonly name = "anthropic";
  private readonly client: Anthropic;
  private readonly failureOf: SdkFailureOf;

  constructor(options: AnthropicProviderOptions) {
    this.client = new Anthropic({
      baseURL: options.baseUrl,
      apiKey: options.apiKey,
      maxRetries: 0,
      timeout: options.timeoutMs,
      ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
    });
    this.failureOf = failureOfFor(options.timeoutMs);
  }

  async complete(req: ChatRequest, signal: AbortSignal): Promise<ChatResult> {
    const { body, warnings } = buildRequest(req);
    try {
      const message = await this.client.messages.create({ ...body, stream: false }, { signal });
      return resultOf(message, warnings);
    } catch (err) {
      throw toLlmError(this.name, err, signal, this.failureOf);
    }
  }

  async *stream(req: ChatRequest, signal: AbortSignal): AsyncGenerator<ChatEvent, void, undefined> {
    const { body, warnings } = buildRequest(req);
    const blocks = new Map<number, OpenBlock>();
    const usage: AnthropicUsageLike = {};
    let stopReason: string | null = null;
    let modelId = req.model;
    let toolCallsCount = 0;
    try {
      const events = await this.client.messages.create({ ...body, stream: true }, { signal });
      for await (const event of events) {
        switch (event.type) {
          case "message_start":
            modelId = event.message.model;
            Object.assign(usage, definedUsage(event.message.usage));
            break;
          case "message_delta":
            stopReason = event.delta.stop_reason ?? stopReason;
            Object.assign(usage, definedUsage(event.usage));
            break;
          case "content_block_start": {
            const block = event.content_block;
            if (block.type === "tool_use") {
              const open = {
                kind: "tool" as const,
                index: toolCallsCount++,
                id: block.id,
                name: block.name,
                argsJson: "",
              };
              blocks.set(event.index, open);
              yield { type: "tool-call-start", index: open.index, id: open.id, toolName: open.name };
            } else if (block.type === "text") {
              blocks.set(event.index, { kind: "text" });
              if (block.text !== "") yield { type: "text-delta", delta: block.text };
            } else if (block.type === "thinking") {
              blocks.set(event.index, { kind: "thinking" });
              if (block.thinking !== "") yield { type: "reasoning-delta", delta: block.thinking };
            }
            break;
          }
          case "content_block_delta":
            yield* deltaEvents(event, blocks);
            break;
          case "content_block_stop": {
            const open = blocks.get(event.index);
            if (open?.kind === "tool") {
              // A tool without arguments streams no input at all: its input is the empty object.
              const argsJson = open.argsJson === "" ? "{}" : open.argsJson;
              yield { type: "tool-call", index: open.index, id: open.id, toolName: open.name, argsJson };
            }
            blocks.delete(event.index);
            break;
          }
          case "message_stop":
            break;
        }
      }
    } catch (err) {
      throw toLlmError(this.name, err, signal, this.failureOf);
    }
    // The SDK ends iteration quietly when the request is aborted: that is a cancellation, not an end.
    if (signal.aborted) throw cancelledError(this.name);
    yield {
      type: "finish",
      finishReason: mapAnthropicStopReason(stopReason),
      usage: mapUsage(usage),
      warnings,
      modelId,
    };
  }
}

function definedUsage(usage: AnthropicUsageLike): AnthropicUsageLike {
  // message_delta repeats usage cumulatively, with nulls for what it does not restate.
  return Object.fromEntries(Object.entries(usage).filter(([, v]) => typeof v === "number"));
}

function* deltaEvents(
  event: Extract<RawMessageStreamEvent, { type: "content_block_delta" }>,
  blocks: Map<number, OpenBlock>,
): Generator<ChatEvent> {
  const delta = event.delta;
  if (delta.type === "text_delta") {
    yield { type: "text-delta", delta: delta.text };
  } else if (delta.type === "thinking_delta") {
    yield { type: "reasoning-delta", delta: delta.thinking };
  } else if (delta.type === "input_json_delta") {
    const open = blocks.get(event.index);
    if (open?.kind !== "tool" || delta.partial_json === "") return;
    open.argsJson += delta.partial_json;
    yield { type: "tool-call-delta", index: open.index, id: open.id, argsDelta: delta.partial_json };
  }
}

export function createAnthropicProvider(options: AnthropicProviderOptions): LlmProvider {
  return new AnthropicProvider(options);
}
