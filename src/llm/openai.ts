// OpenAI chat completions over the official SDK, for OpenAI itself and for servers that speak the
// same wire (Ollama, vLLM, LM Studio, llama.cpp): "openai-compatible", which may need no API key.
// One attempt per call: retries and backoff are ours (retry.ts), on the injected clock.
import OpenAI from "openai";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParamsBase,
  ChatCompletionMessageParam,
  ChatCompletionTool,
  ChatCompletionToolChoiceOption,
} from "openai/resources/chat/completions";
import type { CompletionUsage } from "openai/resources/completions";
import { API_KEY_PLACEHOLDER } from "./config.ts";
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

export interface OpenAiProviderOptions {
  name: "openai" | "openai-compatible";
  baseUrl: string;
  /** Undefined for servers without auth: the placeholder is sent instead. */
  apiKey: string | undefined;
  timeoutMs: number;
  fetch?: typeof fetch;
}

// OpenAI's reasoning models accept only the default temperature.
const FIXED_TEMPERATURE_MODEL = /^(o\d|gpt-5)/;

export function mapOpenAiFinishReason(raw: string | null | undefined): FinishReason {
  const unified = (() => {
    switch (raw) {
      case "stop":
        return "stop";
      case "length":
        return "length";
      case "tool_calls":
      case "function_call":
        return "tool-calls";
      case "content_filter":
        return "content-filter";
      default:
        return "other";
    }
  })();
  return raw === null || raw === undefined ? { unified } : { unified, raw };
}

function mapUsage(usage: CompletionUsage | null | undefined): Usage {
  const inputTokens = usage?.prompt_tokens ?? 0;
  const outputTokens = usage?.completion_tokens ?? 0;
  return { inputTokens, outputTokens, totalTokens: usage?.total_tokens ?? inputTokens + outputTokens };
}

export function toOpenAiMessages(system: string, messages: ChatMessage[]): ChatCompletionMessageParam[] {
  const out: ChatCompletionMessageParam[] = [];
  if (system !== "") out.push({ role: "system", content: system });
  for (const m of messages) {
    if (m.role === "user") {
      out.push({ role: "user", content: m.text });
    } else if (m.role === "assistant") {
      out.push({
        role: "assistant",
        content: m.text === "" ? null : m.text,
        ...(m.toolCalls.length === 0
          ? {}
          : {
              tool_calls: m.toolCalls.map((c) => ({
                id: c.id,
                type: "function" as const,
                function: { name: c.name, arguments: c.argsJson },
              })),
            }),
      });
    } else {
      out.push({ role: "tool", tool_call_id: m.toolCallId, content: m.content });
    }
  }
  return out;
}

function toOpenAiToolChoice(choice: ChatRequest["toolChoice"]): ChatCompletionToolChoiceOption {
  return typeof choice === "string" ? choice : { type: "function", function: { name: choice.name } };
}

interface BuiltRequest {
  body: ChatCompletionCreateParamsBase;
  warnings: Warning[];
}

function buildRequest(name: OpenAiProviderOptions["name"], req: ChatRequest): BuiltRequest {
  const warnings = toolChoiceWarnings(req);
  const body: ChatCompletionCreateParamsBase = {
    model: req.model,
    messages: toOpenAiMessages(req.system, req.messages),
  };
  if (req.tools.length > 0) {
    body.tools = req.tools.map(
      (t): ChatCompletionTool => ({
        type: "function",
        function: { name: t.name, description: t.description, parameters: t.parameters },
      }),
    );
    body.tool_choice = toOpenAiToolChoice(req.toolChoice);
    if (req.parallelToolCalls !== undefined) body.parallel_tool_calls = req.parallelToolCalls;
  }
  if (req.maxTokens !== undefined) {
    // OpenAI deprecated max_tokens (its reasoning models reject it); compatible servers know only it.
    if (name === "openai") body.max_completion_tokens = req.maxTokens;
    else body.max_tokens = req.maxTokens;
  }
  if (req.temperature !== undefined) {
    if (name === "openai" && FIXED_TEMPERATURE_MODEL.test(req.model)) {
      warnings.push({
        type: "unsupported",
        setting: "temperature",
        details: `${req.model} uses a fixed temperature`,
      });
    } else {
      body.temperature = req.temperature;
    }
  }
  return { body, warnings };
}

// Reasoning text, which compatible servers add beside `content` under one of two names
// (vLLM and DeepSeek: reasoning_content; Ollama and OpenRouter: reasoning).
function reasoningOf(part: object): string | undefined {
  const r = part as { reasoning_content?: unknown; reasoning?: unknown };
  const value = r.reasoning_content ?? r.reasoning;
  return typeof value === "string" && value !== "" ? value : undefined;
}

function statusDetail(message: string, status: number): string {
  const prefix = `${status} `;
  return message.startsWith(prefix) ? message.slice(prefix.length) : message;
}

function failureOfFor(timeoutMs: number): SdkFailureOf {
  return (err) => {
    if (err instanceof OpenAI.APIConnectionTimeoutError) {
      return { failure: { kind: "timeout" }, detail: `no response within ${timeoutMs} ms` };
    }
    if (err instanceof OpenAI.APIConnectionError)
      return { failure: { kind: "connection" }, detail: err.message };
    if (err instanceof OpenAI.APIError && err.status !== undefined) {
      const failure: LlmFailure = { kind: "status", status: err.status, ...retryHeadersOf(err.headers) };
      return { failure, detail: statusDetail(err.message, err.status) };
    }
    if (err instanceof OpenAI.OpenAIError || err instanceof SyntaxError) {
      return { failure: { kind: "protocol" }, detail: err.message };
    }
    if (isFetchTransportError(err))
      return { failure: { kind: "connection" }, detail: (err as Error).message };
    return undefined;
  };
}

interface StreamedToolCall {
  id: string;
  name: string;
  argsJson: string;
  started: boolean;
}

class OpenAiProvider implements LlmProvider {
  readonly spec = LLM_SPEC;
  readonly name: OpenAiProviderOptions["name"];
  private readonly client: OpenAI;
  private readonly failureOf: SdkFailureOf;

  constructor(options: OpenAiProviderOptions) {
    this.name = options.name;
    this.client = new OpenAI({
      baseURL: options.baseUrl,
      apiKey: options.apiKey ?? API_KEY_PLACEHOLDER,
      maxRetries: 0,
      timeout: options.timeoutMs,
      ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
    });
    this.failureOf = failureOfFor(options.timeoutMs);
  }

  async complete(req: ChatRequest, signal: AbortSignal): Promise<ChatResult> {
    const { body, warnings } = buildRequest(this.name, req);
    let completion: ChatCompletion;
    try {
      completion = await this.client.chat.completions.create({ ...body, stream: false }, { signal });
    } catch (err) {
      throw toLlmError(this.name, err, signal, this.failureOf);
    }
    const choice = completion.choices[0];
    if (choice === undefined) {
      throw toLlmError(this.name, new OpenAI.OpenAIError("response has no choices"), signal, this.failureOf);
    }
    const message = choice.message;
    const toolCalls: ToolCall[] = [];
    for (const call of message.tool_calls ?? []) {
      if (call.type === "function") {
        toolCalls.push({ id: call.id, name: call.function.name, argsJson: call.function.arguments ?? "" });
      }
    }
    const reasoning = reasoningOf(message);
    return {
      text: message.content ?? message.refusal ?? "",
      ...(reasoning === undefined ? {} : { reasoning }),
      toolCalls,
      finishReason: mapOpenAiFinishReason(choice.finish_reason),
      usage: mapUsage(completion.usage),
      warnings,
      modelId: completion.model,
    };
  }

  async *stream(req: ChatRequest, signal: AbortSignal): AsyncGenerator<ChatEvent, void, undefined> {
    const { body, warnings } = buildRequest(this.name, req);
    const calls = new Map<number, StreamedToolCall>();
    let finishRaw: string | null = null;
    let usage: CompletionUsage | undefined;
    let modelId = req.model;
    try {
      const chunks = await this.client.chat.completions.create(
        { ...body, stream: true, stream_options: { include_usage: true } },
        { signal },
      );
      for await (const chunk of chunks) {
        if (chunk.model) modelId = chunk.model;
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices) {
          yield* this.choiceEvents(chunk, choice, calls);
          if (choice.finish_reason) finishRaw = choice.finish_reason;
        }
      }
    } catch (err) {
      throw toLlmError(this.name, err, signal, this.failureOf);
    }
    // The SDK ends iteration quietly when the request is aborted: that is a cancellation, not an end.
    if (signal.aborted) throw cancelledError(this.name);
    const ordered = [...calls.entries()].sort(([a], [b]) => a - b);
    for (const [index, call] of ordered) {
      if (!call.started) yield { type: "tool-call-start", index, id: call.id, toolName: call.name };
      yield { type: "tool-call", index, id: call.id, toolName: call.name, argsJson: call.argsJson };
    }
    if (usage === undefined) {
      warnings.push({
        type: "unsupported",
        setting: "stream_options.include_usage",
        details: "no usage reported",
      });
    }
    yield {
      type: "finish",
      finishReason: mapOpenAiFinishReason(finishRaw),
      usage: mapUsage(usage),
      warnings,
      modelId,
    };
  }

  private *choiceEvents(
    chunk: ChatCompletionChunk,
    choice: ChatCompletionChunk.Choice,
    calls: Map<number, StreamedToolCall>,
  ): Generator<ChatEvent> {
    const delta = choice.delta ?? {};
    const reasoning = reasoningOf(delta);
    if (reasoning !== undefined) yield { type: "reasoning-delta", delta: reasoning };
    if (delta.content) yield { type: "text-delta", delta: delta.content };
    if (delta.refusal) yield { type: "text-delta", delta: delta.refusal };
    for (const part of delta.tool_calls ?? []) {
      // Tool calls arrive in pieces keyed by `index`: the first piece has the id and name.
      const index = part.index ?? calls.size;
      let call = calls.get(index);
      if (call === undefined) {
        call = { id: part.id ?? `call_${chunk.id}_${index}`, name: "", argsJson: "", started: false };
        calls.set(index, call);
      }
      if (part.function?.name && call.name === "") call.name = part.function.name;
      const argsDelta = part.function?.arguments ?? "";
      call.argsJson += argsDelta;
      if (!call.started && call.name !== "") {
        call.started = true;
        yield { type: "tool-call-start", index, id: call.id, toolName: call.name };
        if (call.argsJson !== "")
          yield { type: "tool-call-delta", index, id: call.id, argsDelta: call.argsJson };
      } else if (call.started && argsDelta !== "") {
        yield { type: "tool-call-delta", index, id: call.id, argsDelta };
      }
    }
  }
}

export function createOpenAiProvider(options: OpenAiProviderOptions): LlmProvider {
  return new OpenAiProvider(options);
}
