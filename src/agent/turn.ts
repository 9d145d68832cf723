// The agent loop (one turn): for each step, assemble the prompt (system + every core block +
// memory metadata + in-context messages), call the model, run its tool calls, and commit the
// step — messages, block edits, usage, step and run records — in one fenced transaction before
// anything about it is announced. Steps repeat while the model asks for them (a heartbeat for
// memgpt-style agents, any tool call for letta_v1/react agents), up to max_steps.
import type { Env } from "../core/env.ts";
import { isKelpieError, KelpieError } from "../core/errors.ts";
import { newId } from "../core/ids.ts";
import type { Rng } from "../core/rng.ts";
import {
  createLlmProvider,
  type LlmProvidersConfig,
  type ResolvedModel,
  resolveModel,
} from "../llm/registry.ts";
import type { RetryPolicy } from "../llm/retry.ts";
import { countPromptTokens } from "../llm/tokens.ts";
import type { ChatEvent, ChatRequest, ChatResult, LlmProvider, ToolSpec } from "../llm/types.ts";
import type { Telemetry } from "../observability/telemetry.ts";
import type { TurnContext } from "../runtime/runtime.ts";
import type {
  ConversationRecord,
  MessageRecord,
  Mutation,
  OutboxRecord,
  RunRecord,
  StepRecord,
  ToolCallRecord,
  ToolRecord,
} from "../storage/types.ts";
import { usesHeartbeats, withHeartbeat } from "../tools/builtins.ts";
import { CoreMemory } from "../tools/memory-tools.ts";
import type { AgentService, AgentView } from "./agents.ts";
import { toChatMessages } from "./history.ts";
import { type LettaMessage, type LettaMessageOptions, toLettaMessages } from "./letta-messages.ts";
import { MessageCache } from "./message-cache.ts";
import { admitOutbox } from "./outbox.ts";
import { compileSystemMessage } from "./prompt.ts";
import { JsonStringFieldStream } from "./stream-args.ts";
import {
  CONTEXT_KEEP_FRACTION,
  CONTEXT_SUMMARIZE_AT_FRACTION,
  chooseCut,
  SUMMARY_MAX_TOKENS,
  summarizeMessages,
  summaryMessageText,
} from "./summarize.ts";
import { isInTurnTool, runToolCall, type ToolOutput, type ToolRunners } from "./tool-calls.ts";

export const MAX_STEPS_DEFAULT = 50;
export const MAX_STEPS_MAX = 1_000;
export const TOOL_ARGS_CHARS_MAX = 1_000_000;

export type StopReason =
  | "end_turn"
  | "max_steps"
  | "error"
  | "llm_api_error"
  | "invalid_tool_call"
  | "cancelled"
  | "requires_approval"
  | "context_window_overflow_in_system_prompt";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  step_count: number;
}

/** What the caller sees while the turn runs (SSE): whole messages after each commit, or token chunks. */
export type TurnEvent = { type: "message"; message: LettaMessage } | { type: "chunk"; message: LettaMessage };

export interface TurnRequest {
  agentId: string;
  runId: string;
  /** How deep in agent-to-agent calls this turn is (0 for a client's request). */
  callDepth?: number;
  /** Run ids of the turns suspended waiting for this one (runtime/turn-gate.ts), outermost first. */
  callChain?: readonly string[];
  /** Who asked (an API key id, or the calling agent), for the audit log. */
  actor?: string;
  /** The new input messages (role user or system), not yet stored. */
  input: MessageRecord[];
  maxSteps: number;
  streamTokens: boolean;
  messageOptions: LettaMessageOptions;
  signal: AbortSignal;
  onEvent?: (event: TurnEvent) => void;
  /** Set when the run record was already committed (async runs). */
  runCreated?: RunRecord;
  /** The conversation whose history this turn extends; the agent's default history when absent. */
  conversationId?: string | undefined;
  /**
   * Tools the client runs itself (Letta's client_tools): the model sees them; a call to one ends
   * the turn with stop reason requires_approval, and the client sends the result back.
   */
  clientTools?: ToolSpec[];
  requestConfig?: Record<string, unknown>;
}

export interface TurnResult {
  runId: string;
  messages: LettaMessage[];
  stopReason: StopReason;
  usage: Usage;
  /** Set when the turn ended on an error; steps committed before it stay committed. */
  error?: KelpieError;
}

export interface TurnDeps {
  env: Env;
  agents: AgentService;
  llm: LlmProvidersConfig;
  toolRunners: ToolRunners;
  telemetry: Telemetry;
  /** The transport of LLM calls: the egress-policy fetch (src/net/egress-fetch.ts). */
  llmFetch: typeof fetch;
  /** Overrides the provider for every agent (tests, simulation). */
  providerOverride?: LlmProvider;
  /** Overrides the retry policy of LLM calls (tests use short backoffs). */
  llmRetry?: Partial<RetryPolicy>;
  /** Told when a step committed outbox entries (async messages to other agents) to deliver. */
  outbox?: { kick(agentId: string): void };
}

interface StepOutcome {
  stop: StopReason | null;
  messages: MessageRecord[];
}

/** Runs an op in the agent's mailbox. */
export type Invoke = <T>(op: (ctx: TurnContext) => Promise<T>) => Promise<T>;

interface ParsedCall {
  id: string;
  name: string;
  /** The parsed arguments, or why they could not be parsed. */
  args: Record<string, unknown> | string;
}

/** A step whose model call is done and whose tool calls are not all run yet. */
interface PendingStep {
  stepId: string;
  assistant: MessageRecord;
  result: ChatResult;
  calls: ParsedCall[];
  /** Calls that run outside the mailbox (custom, MCP, other agents), in order. */
  external: ParsedCall[];
  toolsByName: Map<string, ToolRecord>;
  memory: CoreMemory;
  /** The agent as the step's first half read it (before any of this step's edits). */
  view: AgentView;
  pendingInput: MessageRecord[];
  llm: { providerName: string; model: string };
  agentType: string;
  nowMs: number;
}

function messageBase(agentId: string, stepId: string, runId: string, model: string) {
  return {
    agent_id: agentId,
    name: null,
    tool_returns: null,
    step_id: stepId,
    run_id: runId,
    model,
    otid: null,
    sender_id: null,
    group_id: null,
    is_err: null,
  };
}

function parseArgs(json: string): Record<string, unknown> | string {
  if (json.length > TOOL_ARGS_CHARS_MAX)
    return `arguments are ${json.length} characters (max ${TOOL_ARGS_CHARS_MAX})`;
  if (json.trim() === "") return {};
  try {
    const value: unknown = JSON.parse(json);
    if (value === null || typeof value !== "object" || Array.isArray(value))
      return "arguments must be a JSON object";
    return value as Record<string, unknown>;
  } catch (err) {
    return `arguments are not valid JSON (${(err as Error).message})`;
  }
}

/** Letta's package_function_response: what the model reads back from a tool. */
function packToolReturn(ok: boolean, value: string, nowMs: number): string {
  return JSON.stringify({
    status: ok ? "OK" : "Failed",
    message: value,
    time: new Date(nowMs).toISOString(),
  });
}

/** A tool's spec, per stored record (engines hand out the same record object until the row changes). */
const toolSpecCache = new WeakMap<ToolRecord, { plain?: ToolSpec[]; heartbeat?: ToolSpec[] }>();

function toolSpecs(tools: ToolRecord[], agentType: string): ToolSpec[] {
  const heartbeat = usesHeartbeats(agentType);
  return tools.flatMap((tool) => {
    let cached = toolSpecCache.get(tool);
    if (cached === undefined) {
      cached = {};
      toolSpecCache.set(tool, cached);
    }
    const key = heartbeat ? "heartbeat" : "plain";
    cached[key] ??= toolSpec(tool, heartbeat);
    return cached[key];
  });
}

function toolSpec(tool: ToolRecord, heartbeat: boolean): ToolSpec[] {
  const schema = tool.json_schema as {
    name?: string;
    description?: string;
    parameters?: Record<string, unknown>;
  } | null;
  if (schema === null || typeof schema !== "object") return [];
  const parameters = (schema.parameters ?? { type: "object", properties: {}, required: [] }) as {
    type: "object";
    properties: Record<string, unknown>;
    required: string[];
  };
  const full = {
    name: tool.name,
    description: schema.description ?? tool.description ?? "",
    parameters: {
      ...parameters,
      properties: parameters.properties ?? {},
      required: parameters.required ?? [],
    },
  };
  const final = heartbeat ? withHeartbeat(full) : full;
  return [{ name: final.name, description: final.description, parameters: final.parameters }];
}

/**
 * Client tool results answer the calls the last assistant message left pending: each must name one
 * of them, and while any is unanswered the conversation cannot go on with anything else (the model
 * would see a call without its result). Fills in each result's tool name.
 */
function checkApprovals(history: MessageRecord[], input: MessageRecord[]): void {
  let at = history.length - 1;
  while (at >= 0 && history[at]!.role !== "assistant" && history[at]!.role !== "approval") at--;
  const lastAssistant = at >= 0 ? history[at] : undefined;
  const pendingIds = lastAssistant?.pending_tool_call_ids ?? [];
  if (pendingIds.length === 0 && !input.some((m) => m.role === "tool")) return;
  const answered = new Set(
    history
      .slice(at + 1)
      .filter((m) => m.role === "tool")
      .map((m) => m.tool_call_id),
  );
  const open = pendingIds.filter((id) => !answered.has(id));
  const results = input.filter((m) => m.role === "tool");
  for (const result of results) {
    if (!open.includes(result.tool_call_id ?? "")) {
      throw new KelpieError(
        "VALIDATION",
        `body.messages: no pending client tool call '${result.tool_call_id}' to approve${open.length > 0 ? ` (pending: ${open.join(", ")})` : ""}`,
        { issues: [{ loc: ["body", "messages"], msg: "unknown tool_call_id", type: "value_error" }] },
      );
    }
    const call = lastAssistant!.tool_calls?.find((c) => c.id === result.tool_call_id);
    result.name = call?.function.name ?? result.name;
  }
  const missing = open.filter((id) => !results.some((r) => r.tool_call_id === id));
  if (missing.length > 0) {
    throw new KelpieError(
      "CONFLICT",
      `the agent is waiting for the results of client tool calls ${missing.join(", ")}: send them as an approval message ({"type": "approval", "approvals": [{"type": "tool", "tool_call_id": ..., "tool_return": ..., "status": "success"}]})`,
    );
  }
}

/** Bytes a message's role, ids and separators may take beyond its text, in any provider's encoding. */
const MESSAGE_FRAMING_CHARS_MAX = 64;
const UTF8_BYTES_PER_UTF16_UNIT_MAX = 3;

/** Serialized size of each tool spec, kept per spec object (specs are rebuilt only when tools change). */
const toolSpecBytesCache = new WeakMap<object, number>();

function toolSpecsBytes(tools: ToolSpec[]): number {
  let total = 0;
  for (const t of tools) {
    let bytes = toolSpecBytesCache.get(t.parameters);
    if (bytes === undefined) {
      bytes = Buffer.byteLength(JSON.stringify(t.parameters));
      toolSpecBytesCache.set(t.parameters, bytes);
    }
    total += bytes + UTF8_BYTES_PER_UTF16_UNIT_MAX * (t.name.length + t.description.length);
  }
  return total;
}

export class TurnRunner {
  /**
   * One stream per concern, forked once here and then drawn from: a fork derives from the seed,
   * so forking per step would replay the same draws (and ids) every step under simulation.
   */
  private readonly memoryRng: Rng;
  private readonly llmRng: Rng;

  constructor(private readonly deps: TurnDeps) {
    this.memoryRng = deps.env.rng.fork("memory");
    this.llmRng = deps.env.rng.fork("llm");
  }

  private provider(llmConfig: Record<string, unknown> | null): {
    provider: LlmProvider;
    model: string;
    providerName: string;
    contextWindow: number;
    maxTokens: number | undefined;
    temperature: number | undefined;
  } {
    if (llmConfig === null) throw new KelpieError("LLM_NOT_CONFIGURED", "the agent has no llm_config");
    const model = resolveModel(llmConfig, this.deps.llm);
    return {
      provider: this.deps.providerOverride ?? this.cachedProvider(model),
      model: model.model,
      providerName: model.providerName,
      contextWindow: model.contextWindowTokens,
      maxTokens: model.maxTokens,
      temperature: model.temperature,
    };
  }

  /** Providers are stateless clients: one per endpoint and credential, reused by every agent. */
  private readonly providers = new Map<string, LlmProvider>();
  private readonly messageCache = new MessageCache();

  private cachedProvider(model: ResolvedModel): LlmProvider {
    const key = `${model.providerName}|${model.baseUrl}|${model.credential}|${model.notConfigured ?? ""}`;
    let provider = this.providers.get(key);
    if (provider === undefined) {
      provider = createLlmProvider(model, this.deps.llm, {
        clock: this.deps.env.clock,
        rng: this.llmRng,
        fetch: this.deps.llmFetch,
        ...(this.deps.llmRetry === undefined ? {} : { retry: this.deps.llmRetry }),
      });
      this.providers.set(key, provider);
    }
    return provider;
  }

  /**
   * Runs one turn; the caller holds the agent's turn gate for all of it (agent/message-service.ts),
   * so no other turn of the agent steps in between. Each step runs as an op in the agent's mailbox
   * (`invoke`); tool calls that leave the agent (custom, MCP, other agents) run between ops,
   * outside the mailbox, and their results come back as a continuation op — so a slow tool blocks
   * no other mailbox op (API block edits), and a tool may call back into its own agent (A asks B,
   * B asks A) without deadlock: the gate lets a turn in whose holder waits on it.
   */
  async run(invoke: Invoke, request: TurnRequest): Promise<TurnResult> {
    const { env } = this.deps;
    // A resumed run (an Idempotency-Key retry after its node died) goes on counting its steps.
    const usage: Usage = {
      prompt_tokens: 0,
      completion_tokens: 0,
      total_tokens: 0,
      step_count: 0,
      ...request.runCreated?.usage,
    };
    const produced: LettaMessage[] = [];
    let run: RunRecord = request.runCreated ?? {
      id: request.runId,
      agent_id: request.agentId,
      status: "running",
      stop_reason: null,
      background: false,
      metadata: {},
      request_config: request.requestConfig ?? null,
      usage,
      error: null,
      created_at_ms: env.clock.nowMs(),
      completed_at_ms: null,
    };
    // A resumed run may have been marked interrupted meanwhile: it is running again.
    run = { ...run, status: "running", stop_reason: null, error: null, completed_at_ms: null };
    let pendingInput = request.input;
    let stopReason: StopReason | null = null;
    try {
      while (stopReason === null) {
        if (request.signal.aborted) {
          stopReason = "cancelled";
          break;
        }
        const input = pendingInput;
        type Begun = { pending: PendingStep; outcome: null } | { pending: null; outcome: StepOutcome };
        const stepSpan = { agent_id: request.agentId, run_id: run.id, step: usage.step_count + 1 };
        const begun = await invoke(
          (ctx): Promise<Begun> =>
            this.deps.telemetry.span("agent.step", stepSpan, async (): Promise<Begun> => {
              const pending = await this.stepBegin(ctx, request, input, run);
              if (pending.external.length > 0) return { pending, outcome: null };
              const finished = await this.stepFinish(
                ctx,
                request,
                pending,
                new Map(),
                run,
                usage,
                produced,
                pending.view,
              );
              return { pending: null, outcome: finished };
            }),
        );
        let outcome: StepOutcome;
        if (begun.pending === null) outcome = begun.outcome;
        else {
          const pending = begun.pending;
          const outputs = await this.runExternal(pending, request, run);
          outcome = await invoke((ctx) =>
            this.deps.telemetry.span("agent.step.continuation", stepSpan, () =>
              this.stepFinish(ctx, request, pending, outputs, run, usage, produced),
            ),
          );
        }
        pendingInput = [];
        stopReason = outcome.stop;
      }
      if (stopReason === "cancelled")
        await invoke((ctx) => this.finishRun(ctx, run, usage, "cancelled", null));
      return { runId: run.id, messages: produced, stopReason, usage };
    } catch (err) {
      const error = isKelpieError(err)
        ? err
        : new KelpieError("INTERNAL", `agent step failed: ${(err as Error).message}`, { cause: err });
      const reason: StopReason =
        error.code === "CANCELLED"
          ? "cancelled"
          : error.code === "LLM_ERROR" || error.code === "LLM_NOT_CONFIGURED"
            ? "llm_api_error"
            : error.code === "CONTEXT_WINDOW_OVERFLOW"
              ? "context_window_overflow_in_system_prompt"
              : "error";
      if (error.code !== "FENCED" && error.code !== "AGENT_NOT_FOUND") {
        await invoke((ctx) => this.finishRun(ctx, run, usage, reason, error.message)).catch(() => {});
      }
      return { runId: run.id, messages: produced, stopReason: reason, usage, error };
    }
  }

  /** Runs, in order and outside the mailbox, the calls that leave the agent. */
  private async runExternal(
    pending: PendingStep,
    request: TurnRequest,
    run: RunRecord,
  ): Promise<Map<string, ToolOutput>> {
    const outputs = new Map<string, ToolOutput>();
    for (const call of pending.external) {
      outputs.set(call.id, await this.runOneTool(call, pending, request, run, pending.memory));
    }
    return outputs;
  }

  private async runOneTool(
    call: ParsedCall,
    pending: PendingStep,
    request: TurnRequest,
    run: RunRecord,
    memory: CoreMemory,
  ): Promise<ToolOutput> {
    const { env, telemetry } = this.deps;
    const tool = pending.toolsByName.get(call.name);
    const startMs = env.clock.monotonicMs();
    const output =
      typeof call.args === "string"
        ? { ok: false, value: `Error: ${call.name} ${call.args}` }
        : await telemetry.span(
            "tool.run",
            { tool: call.name },
            () =>
              runToolCall(
                call.name,
                call.args as Record<string, unknown>,
                {
                  env,
                  agentId: request.agentId,
                  runId: run.id,
                  memory,
                  tool,
                  signal: request.signal,
                  callDepth: request.callDepth ?? 0,
                  callChain: request.callChain ?? [],
                },
                this.deps.toolRunners,
              ),
            // Tools run inside the turn make no spans of their own; others (other agents) may.
            { leaf: isInTurnTool(call.name) },
          );
    telemetry.toolRun({
      tool: call.name,
      toolType: tool?.tool_type ?? "unknown",
      sandbox:
        tool?.tool_type === "custom" ? "sandbox" : tool?.tool_type === "external_mcp" ? "mcp" : "builtin",
      durationMs: env.clock.monotonicMs() - startMs,
      ok: output.ok,
    });
    return output;
  }

  private async finishRun(
    ctx: TurnContext,
    run: RunRecord,
    usage: Usage,
    stop: StopReason,
    error: string | null,
  ): Promise<void> {
    const status = stop === "cancelled" ? "cancelled" : error !== null ? "failed" : "completed";
    await this.deps.env.storage.commit(
      [
        {
          op: "put_run",
          run: {
            ...run,
            status,
            stop_reason: stop,
            usage: { ...usage },
            error,
            completed_at_ms: this.deps.env.clock.nowMs(),
          },
        },
      ],
      { fence: ctx.fence },
    );
  }

  /** The first half of a step, in the mailbox: assemble the prompt and call the model. */
  private async stepBegin(
    ctx: TurnContext,
    request: TurnRequest,
    pendingInput: MessageRecord[],
    run: RunRecord,
  ): Promise<PendingStep> {
    const { env, agents, telemetry } = this.deps;
    const view = await agents.view(ctx.agentId);
    const agent = view.agent;
    const llm = this.provider(agent.llm_config);
    const memory = new CoreMemory(view.blocks, agent.id, () => env.clock.nowMs(), this.memoryRng);
    const conversation = await this.conversationOf(request, agent.id);
    let contextIds = conversation?.in_context_message_ids ?? agent.message_ids;
    let inContext = await this.messageCache.load(env.storage, contextIds);
    const serverTools = toolSpecs(view.tools, agent.agent_type);
    const serverNames = new Set(serverTools.map((t) => t.name));
    const clientOnly = new Set(
      (request.clientTools ?? []).map((t) => t.name).filter((n) => !serverNames.has(n)),
    );
    const tools = [...serverTools, ...(request.clientTools ?? []).filter((t) => clientOnly.has(t.name))];
    checkApprovals(inContext, pendingInput);

    const buildRequest = (history: MessageRecord[]): ChatRequest => ({
      model: llm.model,
      system: compileSystemMessage(agent.system, memory.list(), {
        nowMs: env.clock.nowMs(),
        blocksUpdatedAtMs: Math.max(0, ...memory.list().map((b) => b.updated_at_ms)),
        recallMessagesCount: contextIds.length,
        archivalPassagesCount: 0,
      }),
      messages: toChatMessages(history),
      tools,
      toolChoice: tools.length > 0 ? "auto" : "none",
      ...(llm.maxTokens === undefined ? {} : { maxTokens: llm.maxTokens }),
      ...(llm.temperature === undefined ? {} : { temperature: llm.temperature }),
    });

    // Keep the prompt inside the context window: summarize the oldest messages when it is not.
    let chatRequest = buildRequest([...inContext, ...pendingInput]);
    const count = (req: ChatRequest) =>
      countPromptTokens({
        providerName: llm.providerName,
        model: llm.model,
        system: req.system,
        messages: req.messages,
        tools: req.tools,
      }).totalTokens;
    // A BPE token covers at least one UTF-8 byte, and a UTF-16 unit is at most 3 UTF-8 bytes: so
    // 3 × the characters (plus room for each message's framing) bounds the token count, and the
    // tokenizer only runs when the prompt could be near the window. No serialization per step.
    const bytesBound = (req: ChatRequest) => {
      let chars = req.system.length;
      for (const m of req.messages) {
        chars += MESSAGE_FRAMING_CHARS_MAX;
        if (m.role === "tool") chars += m.content.length + m.toolName.length + m.toolCallId.length;
        else chars += m.text.length;
        if (m.role === "assistant") {
          for (const c of m.toolCalls)
            chars += c.argsJson.length + c.name.length + c.id.length + MESSAGE_FRAMING_CHARS_MAX;
        }
      }
      return UTF8_BYTES_PER_UTF16_UNIT_MAX * chars + toolSpecsBytes(req.tools);
    };
    let promptTokens =
      bytesBound(chatRequest) <= llm.contextWindow * CONTEXT_SUMMARIZE_AT_FRACTION ? 0 : count(chatRequest);
    if (promptTokens > llm.contextWindow * CONTEXT_SUMMARIZE_AT_FRACTION && inContext.length > 1) {
      // What must fit besides the history: system prompt, memory, tools, the new input, a summary.
      const fixedTokens = count(buildRequest(pendingInput)) + SUMMARY_MAX_TOKENS;
      const keepTokens = Math.floor(
        (llm.contextWindow * CONTEXT_SUMMARIZE_AT_FRACTION - fixedTokens) * CONTEXT_KEEP_FRACTION,
      );
      inContext = await this.compact(
        ctx,
        contextIds,
        inContext,
        llm,
        Math.max(0, keepTokens),
        request.signal,
        conversation?.id,
      );
      // The compaction committed the shorter context; the rest of the step builds on it.
      contextIds = inContext.map((m) => m.id);
      if (conversation === null) agent.message_ids = contextIds;
      chatRequest = buildRequest([...inContext, ...pendingInput]);
      promptTokens = count(chatRequest);
    }
    if (promptTokens > llm.contextWindow) {
      throw new KelpieError(
        "CONTEXT_WINDOW_OVERFLOW",
        `the prompt needs ${promptTokens} tokens but the context window is ${llm.contextWindow} (system prompt, memory blocks and the newest messages alone do not fit)`,
      );
    }

    const stepId = newId("step", env.rng);
    const assistantId = newId("message", env.rng);
    const startMs = env.clock.monotonicMs();
    let result: ChatResult;
    try {
      result = await telemetry.span(
        "llm.call",
        { model: llm.model, provider: llm.providerName },
        async (span) => {
          const answer = await (request.streamTokens && request.onEvent
            ? this.streamCall(
                llm.provider,
                chatRequest,
                request,
                assistantId,
                stepId,
                agent.agent_type,
                clientOnly,
              )
            : llm.provider.complete(chatRequest, request.signal));
          span.setAttribute("gen_ai.usage.input_tokens", answer.usage.inputTokens);
          span.setAttribute("gen_ai.usage.output_tokens", answer.usage.outputTokens);
          return answer;
        },
        { leaf: true },
      );
    } catch (err) {
      telemetry.llmCall({
        provider: llm.providerName,
        model: llm.model,
        durationMs: env.clock.monotonicMs() - startMs,
        inputTokens: 0,
        outputTokens: 0,
        ok: false,
        errorCode: isKelpieError(err) ? err.code : "INTERNAL",
      });
      throw err;
    }
    telemetry.llmCall({
      provider: llm.providerName,
      model: llm.model,
      durationMs: env.clock.monotonicMs() - startMs,
      inputTokens: result.usage.inputTokens,
      outputTokens: result.usage.outputTokens,
      ok: true,
    });

    const nowMs = env.clock.nowMs();
    const toolCalls: ToolCallRecord[] = result.toolCalls.map((c) => ({
      id: c.id,
      type: "function",
      function: { name: c.name, arguments: c.argsJson },
    }));
    const assistant: MessageRecord = {
      ...messageBase(agent.id, stepId, run.id, llm.model),
      id: assistantId,
      role: "assistant",
      content: [
        ...(result.reasoning ? [{ type: "reasoning", reasoning: result.reasoning, is_native: true }] : []),
        ...(result.text.length > 0 ? [{ type: "text" as const, text: result.text }] : []),
      ],
      tool_calls: toolCalls.length > 0 ? toolCalls : null,
      tool_call_id: null,
      created_at_ms: nowMs,
    };
    const calls: ParsedCall[] = result.toolCalls.map((c) => ({
      id: c.id,
      name: c.name,
      args: parseArgs(c.argsJson),
    }));
    const toolsByName = new Map(view.tools.map((t) => [t.name, t]));
    return {
      stepId,
      assistant,
      result,
      calls,
      external: calls.filter(
        (c) => typeof c.args !== "string" && !isInTurnTool(c.name) && toolsByName.has(c.name),
      ),
      toolsByName,
      memory,
      view,
      pendingInput,
      llm: { providerName: llm.providerName, model: llm.model },
      agentType: agent.agent_type,
      nowMs,
    };
  }

  /**
   * The second half of a step, in the mailbox: run the in-turn tools against the agent's current
   * memory, take the results of the external ones, decide whether to go on, commit, announce.
   */
  private async stepFinish(
    ctx: TurnContext,
    request: TurnRequest,
    pending: PendingStep,
    externalOutputs: Map<string, ToolOutput>,
    run: RunRecord,
    usage: Usage,
    produced: LettaMessage[],
    sameOpView?: AgentView,
  ): Promise<StepOutcome> {
    const { env, agents } = this.deps;
    // Within the op that began the step the agent is as it was read; after a continuation, read
    // it afresh: between the halves another op may have changed its memory or history.
    const view = sameOpView ?? (await agents.view(ctx.agentId));
    const agent = view.agent;
    const memory = new CoreMemory(view.blocks, agent.id, () => env.clock.nowMs(), this.memoryRng);
    const { assistant, result, stepId } = pending;
    const toolMessages: MessageRecord[] = [];
    let heartbeat = false;
    let failed = false;
    let sentMessage = false;
    const clientNames = new Set((request.clientTools ?? []).map((t) => t.name));
    const deferred: string[] = [];
    const outbox: OutboxRecord[] = [];
    for (const call of pending.calls) {
      if (clientNames.has(call.name) && !pending.toolsByName.has(call.name)) {
        // The client runs it: the turn pauses here until the client sends its result.
        deferred.push(call.id);
        continue;
      }
      if (typeof call.args !== "string" && call.args.request_heartbeat === true) heartbeat = true;
      const output = await admitOutbox(
        env.storage,
        agent.id,
        externalOutputs.get(call.id) ?? (await this.runOneTool(call, pending, request, run, memory)),
        outbox,
      );
      let value = output.value;
      if (call.name === "send_message" && output.ok) sentMessage = true;
      if (!output.ok) failed = true;
      const limit = pending.toolsByName.get(call.name)?.return_char_limit ?? Number.POSITIVE_INFINITY;
      if (value.length > limit) {
        value = `${value.slice(0, limit)}\n[truncated by Kelpie: ${limit} of ${value.length} characters shown; the tool's return_char_limit is ${limit}]`;
      }
      toolMessages.push({
        ...messageBase(agent.id, stepId, run.id, pending.llm.model),
        id: newId("message", env.rng),
        role: "tool",
        name: call.name,
        content: [{ type: "text", text: packToolReturn(output.ok, value, env.clock.nowMs()) }],
        tool_calls: null,
        tool_call_id: call.id,
        tool_returns: [
          {
            tool_call_id: call.id,
            status: output.ok ? "success" : "error",
            stdout: output.stdout ?? null,
            stderr: output.stderr ?? null,
          },
        ],
        is_err: output.ok ? null : true,
        created_at_ms: env.clock.nowMs(),
      });
    }

    // Decide whether the loop continues.
    usage.step_count++;
    usage.prompt_tokens += result.usage.inputTokens;
    usage.completion_tokens += result.usage.outputTokens;
    usage.total_tokens += result.usage.totalTokens;
    let stop: StopReason | null;
    if (request.signal.aborted) stop = "cancelled";
    else if (result.toolCalls.length === 0) stop = "end_turn";
    else if (usesHeartbeats(agent.agent_type)) stop = heartbeat || failed ? null : "end_turn";
    else stop = sentMessage && !heartbeat ? "end_turn" : null;
    if (deferred.length > 0 && stop !== "cancelled") stop = "requires_approval";
    if (stop === null && usage.step_count >= request.maxSteps) stop = "max_steps";
    if (deferred.length > 0) assistant.pending_tool_call_ids = deferred;

    const nowMs = pending.nowMs;
    const conversation = await this.conversationOf(request, agent.id);
    const stepMessages = [...pending.pendingInput, assistant, ...toolMessages].map((m) =>
      conversation === null ? m : { ...m, conversation_id: conversation.id },
    );
    const step: StepRecord = {
      id: stepId,
      run_id: run.id,
      agent_id: agent.id,
      provider: pending.llm.providerName,
      model: pending.llm.model,
      stop_reason: stop,
      usage: {
        prompt_tokens: result.usage.inputTokens,
        completion_tokens: result.usage.outputTokens,
        total_tokens: result.usage.totalTokens,
      },
      created_at_ms: nowMs,
    };
    const finished = stop !== null;
    const { block_ids: _b, tool_ids: _t, ...storedAgent } = agent;
    const mutations: Mutation[] = [
      ...stepMessages.map((message): Mutation => ({ op: "put_message", message })),
      ...memory.mutations(),
      ...outbox.map((entry): Mutation => ({ op: "put_outbox", entry, create: true })),
      {
        op: "put_agent",
        create: false,
        agent: {
          ...storedAgent,
          message_ids:
            conversation === null
              ? [...agent.message_ids, ...stepMessages.map((m) => m.id)]
              : agent.message_ids,
          extra: finished ? { ...storedAgent.extra, last_stop_reason: stop } : storedAgent.extra,
          updated_at_ms: nowMs,
        },
      },
      { op: "put_step", step },
      ...(conversation === null
        ? []
        : [
            {
              op: "put_conversation" as const,
              create: false,
              conversation: {
                ...conversation,
                in_context_message_ids: [
                  ...conversation.in_context_message_ids,
                  ...stepMessages.map((m) => m.id),
                ],
                updated_at_ms: nowMs,
              },
            },
          ]),
      ...pending.calls.map(
        (call, i): Mutation => ({
          op: "put_audit",
          entry: {
            id: newId("audit", env.rng),
            at_ms: nowMs,
            actor: request.actor ?? "anonymous",
            action: "tool.execute",
            target: call.name,
            detail: {
              agent_id: agent.id,
              run_id: run.id,
              step_id: stepId,
              tool_call_id: call.id,
              ok: toolMessages[i]?.is_err !== true,
            },
          },
        }),
      ),
      {
        op: "put_run",
        run: {
          ...run,
          status: finished ? (stop === "cancelled" ? "cancelled" : "completed") : "running",
          stop_reason: stop,
          usage: { ...usage },
          completed_at_ms: finished ? nowMs : null,
        },
      },
    ];
    await env.storage.commit(mutations, { fence: ctx.fence });
    for (const message of stepMessages) this.messageCache.put(message);
    if (outbox.length > 0) this.deps.outbox?.kick(agent.id);

    // Committed: now the step may be announced.
    const announced = [assistant, ...toolMessages].flatMap((m) => toLettaMessages(m, request.messageOptions));
    produced.push(...announced);
    if (request.onEvent) {
      for (const message of announced) {
        // With token streaming the assistant's words and calls were already sent as chunks.
        if (request.streamTokens && message.id === assistant.id) continue;
        request.onEvent({ type: "message", message });
      }
    }
    return { stop, messages: stepMessages };
  }

  /** Summarizes the oldest in-context messages and commits the shorter context. */
  /** The turn's conversation, read afresh (it must belong to the agent); null for the default one. */
  private async conversationOf(
    request: { conversationId?: string | undefined },
    agentId: string,
  ): Promise<ConversationRecord | null> {
    if (request.conversationId === undefined) return null;
    const conversation = await this.deps.env.storage.getConversation(request.conversationId);
    if (conversation === null || conversation.agent_id !== agentId) {
      throw new KelpieError("NOT_FOUND", `Conversation ${request.conversationId} not found`);
    }
    return conversation;
  }

  private async compact(
    ctx: TurnContext,
    messageIds: string[],
    inContext: MessageRecord[],
    llm: { provider: LlmProvider; model: string; providerName: string; contextWindow: number },
    keepTokens: number,
    signal: AbortSignal,
    conversationId?: string,
  ): Promise<MessageRecord[]> {
    const { env } = this.deps;
    const tokensOf = (m: MessageRecord) =>
      countPromptTokens({
        providerName: llm.providerName,
        model: llm.model,
        system: "",
        messages: toChatMessages([m]),
        tools: [],
      }).totalTokens;
    const cut = chooseCut(inContext, tokensOf, keepTokens);
    if (cut <= 0) return inContext;
    const hidden = inContext.slice(0, cut);
    const kept = inContext.slice(cut);
    const summary = await summarizeMessages(llm.provider, llm.model, hidden, signal);
    const nowMs = env.clock.nowMs();
    const summaryMessage: MessageRecord = {
      id: newId("message", env.rng),
      agent_id: ctx.agentId,
      role: "user",
      content: [
        { type: "text", text: summaryMessageText(hidden.length, summary, new Date(nowMs).toISOString()) },
      ],
      name: null,
      tool_calls: null,
      tool_call_id: null,
      tool_returns: null,
      step_id: null,
      run_id: null,
      model: llm.model,
      otid: null,
      sender_id: null,
      group_id: null,
      is_err: null,
      created_at_ms: nowMs,
    };
    const agent = await env.storage.getAgent(ctx.agentId);
    if (agent === null) throw new KelpieError("AGENT_NOT_FOUND", `Agent ${ctx.agentId} not found`);
    const { block_ids: _b, tool_ids: _t, ...stored } = agent;
    const keptIds = new Set(kept.map((m) => m.id));
    const compacted = [summaryMessage.id, ...messageIds.filter((id) => keptIds.has(id))];
    const conversation =
      conversationId === undefined ? null : await this.conversationOf({ conversationId }, ctx.agentId);
    if (conversation !== null) summaryMessage.conversation_id = conversation.id;
    await env.storage.commit(
      [
        { op: "put_message", message: summaryMessage },
        conversation === null
          ? {
              op: "put_agent",
              create: false,
              agent: { ...stored, message_ids: compacted, updated_at_ms: nowMs },
            }
          : {
              op: "put_conversation",
              create: false,
              conversation: { ...conversation, in_context_message_ids: compacted, updated_at_ms: nowMs },
            },
      ],
      { fence: ctx.fence },
    );
    this.messageCache.put(summaryMessage);
    return [summaryMessage, ...kept];
  }

  /** Streams one model call, forwarding token chunks in Letta's message shapes, and returns the whole result. */
  private async streamCall(
    provider: LlmProvider,
    chatRequest: ChatRequest,
    request: TurnRequest,
    assistantId: string,
    stepId: string,
    agentType: string,
    /** Client tools: their calls stream as approval requests. */
    clientOnly: Set<string>,
  ): Promise<ChatResult> {
    const emit = request.onEvent!;
    const options = request.messageOptions;
    const date = new Date(this.deps.env.clock.nowMs()).toISOString();
    const base = { id: assistantId, date, step_id: stepId, run_id: request.runId, otid: null, name: null };
    // memgpt-style agents think in text and speak through send_message; others speak in text.
    const textIsSpeech = !usesHeartbeats(agentType);
    let text = "";
    let reasoning = "";
    const calls = new Map<number, { id: string; name: string; args: string; said?: JsonStringFieldStream }>();
    let finish: Extract<ChatEvent, { type: "finish" }> | undefined;
    for await (const event of provider.stream(chatRequest, request.signal)) {
      switch (event.type) {
        case "text-delta":
          text += event.delta;
          emit({
            type: "chunk",
            message: textIsSpeech
              ? { ...base, message_type: "assistant_message", content: event.delta }
              : {
                  ...base,
                  message_type: "reasoning_message",
                  source: "non_reasoner_model",
                  reasoning: event.delta,
                },
          });
          break;
        case "reasoning-delta":
          reasoning += event.delta;
          emit({
            type: "chunk",
            message: {
              ...base,
              message_type: "reasoning_message",
              source: "reasoner_model",
              reasoning: event.delta,
            },
          });
          break;
        case "tool-call-start": {
          const speaking = options.useAssistantMessage && event.toolName === options.assistantMessageToolName;
          calls.set(event.index, {
            id: event.id,
            name: event.toolName,
            args: "",
            ...(speaking ? { said: new JsonStringFieldStream(options.assistantMessageToolKwarg) } : {}),
          });
          if (!speaking) {
            const toolCall = { name: event.toolName, arguments: "", tool_call_id: event.id };
            emit({
              type: "chunk",
              message: {
                ...base,
                message_type: clientOnly.has(event.toolName)
                  ? "approval_request_message"
                  : "tool_call_message",
                tool_call: toolCall,
                tool_calls: [toolCall],
              },
            });
          }
          break;
        }
        case "tool-call-delta": {
          const call = calls.get(event.index);
          if (call === undefined) break;
          call.args += event.argsDelta;
          if (call.said) {
            const piece = call.said.push(event.argsDelta);
            if (piece.length > 0)
              emit({
                type: "chunk",
                message: { ...base, message_type: "assistant_message", content: piece },
              });
          } else {
            const toolCall = { name: call.name, arguments: event.argsDelta, tool_call_id: call.id };
            emit({
              type: "chunk",
              message: {
                ...base,
                message_type: clientOnly.has(call.name) ? "approval_request_message" : "tool_call_message",
                tool_call: toolCall,
                tool_calls: [toolCall],
              },
            });
          }
          break;
        }
        case "tool-call": {
          const call = calls.get(event.index);
          if (call === undefined)
            calls.set(event.index, { id: event.id, name: event.toolName, args: event.argsJson });
          else call.args = event.argsJson;
          break;
        }
        case "finish":
          finish = event;
          break;
      }
    }
    if (finish === undefined)
      throw new KelpieError("LLM_ERROR", "the model's stream ended without a finish event");
    return {
      text,
      ...(reasoning.length > 0 ? { reasoning } : {}),
      toolCalls: [...calls.entries()]
        .sort(([a], [b]) => a - b)
        .map(([, c]) => ({ id: c.id, name: c.name, argsJson: c.args })),
      finishReason: finish.finishReason,
      usage: finish.usage,
      warnings: finish.warnings,
      modelId: finish.modelId,
    };
  }
}
