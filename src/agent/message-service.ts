// Sending messages to agents: turns Letta request bodies into input messages, lets the turn in
// through the agent's turn gate (one turn at a time per agent, runtime/turn-gate.ts), runs its
// steps in the agent's mailbox, and keeps the registry of runs in flight (for cancellation and
// async runs).
import { setMaxListeners } from "node:events";
import type { Env } from "../core/env.ts";
import { invalidField, KelpieError } from "../core/errors.ts";
import { idFromKey, newId } from "../core/ids.ts";
import type { ToolSpec } from "../llm/types.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { TurnGate, type TurnPass } from "../runtime/turn-gate.ts";
import type { MessageContentPart, MessageRecord, RunRecord } from "../storage/types.ts";
import { type LettaMessageOptions, toLettaMessages } from "./letta-messages.ts";
import { wasInterrupted } from "./run-recovery.ts";
import {
  MAX_STEPS_DEFAULT,
  MAX_STEPS_MAX,
  type TurnEvent,
  type TurnResult,
  type TurnRunner,
} from "./turn.ts";

export const INPUT_MESSAGES_MAX = 256;
export const INPUT_TEXT_CHARS_MAX = 1_000_000;
/** A replayed run returns at most this many of its messages (a turn has at most MAX_STEPS_MAX steps). */
const RUN_REPLAY_MESSAGES_MAX = 10_000;

/** One input message as Letta's MessageCreate carries it. */
export interface MessageCreateInput {
  role?: unknown;
  content?: unknown;
  name?: unknown;
  otid?: unknown;
  sender_id?: unknown;
  type?: unknown;
}

export interface SendRequestBody {
  messages?: MessageCreateInput[] | null;
  input?: unknown;
  role?: unknown;
  content?: unknown;
  max_steps?: number;
  use_assistant_message?: boolean;
  assistant_message_tool_name?: string;
  assistant_message_tool_kwarg?: string;
  stream_tokens?: boolean;
  streaming?: boolean;
  [key: string]: unknown;
}

export interface SendOptions {
  streamTokens: boolean;
  onEvent?: (event: TurnEvent) => void;
  /** For agent-to-agent messages: who sent it. */
  senderId?: string;
  /** For agent-to-agent messages: how deep the calling turn is. */
  callDepth?: number;
  /**
   * For agent-to-agent messages the caller waits for: the run ids of the turns suspended on this
   * one, outermost first. The turn gate lets a turn in at once when its agent's holder is one.
   */
  callChain?: readonly string[];
  /**
   * Called once the turn is admitted (running, or queued behind another turn of the agent), after
   * which the request is no longer refused as busy: a stream opens here.
   */
  onAdmitted?: () => void;
  /** Who asked (an API key id), for the audit log. */
  actor?: string;
  /** The conversation to continue; the agent's default history when absent. */
  conversationId?: string;
  /**
   * The client's Idempotency-Key: the run's id derives from it, so a retry (on any node, after
   * any crash) returns the finished run, joins the one in flight, or resumes the one whose node
   * died from its last committed step: the turn takes effect once.
   */
  idempotencyKey?: string;
}

/** The run id an Idempotency-Key names for one agent. */
export function idempotentRunId(agentId: string, key: string): string {
  return idFromKey("run", `${agentId}\n${key}`);
}

const RUN_TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** A turn let in through the gate (or queued there), registered as in flight. */
interface Admission {
  controller: AbortController;
  /** Resolves when the turn holds its agent; null when it was cancelled while queued. */
  entered: Promise<TurnPass | null>;
  /** Gives up a turn that will not run after all. */
  abandon(): void;
}

function contentParts(content: unknown, loc: (string | number)[]): MessageContentPart[] {
  if (typeof content === "string") {
    if (content.length > INPUT_TEXT_CHARS_MAX)
      throw invalidField(loc, `must be at most ${INPUT_TEXT_CHARS_MAX} characters`);
    return [{ type: "text", text: content }];
  }
  if (Array.isArray(content)) {
    return content.map((part, i) => {
      if (part === null || typeof part !== "object")
        throw invalidField([...loc, i], "must be a content part object");
      const p = part as Record<string, unknown>;
      if (p.type === "text") {
        if (typeof p.text !== "string") throw invalidField([...loc, i, "text"], "must be a string");
        return { type: "text", text: p.text };
      }
      if (p.type === "image") return { ...(p as { type: string }) } as MessageContentPart;
      throw invalidField(
        [...loc, i, "type"],
        `unsupported content part type '${String(p.type)}' (text, image)`,
      );
    });
  }
  throw invalidField(loc, "must be a string or a list of content parts");
}

export class MessageService {
  private readonly active = new Map<string, { agentId: string; controller: AbortController }>();
  /** Turns in flight here under an Idempotency-Key, by run id: a retry joins the first attempt. */
  private readonly keyed = new Map<string, Promise<TurnResult>>();

  constructor(
    private readonly env: Env,
    private readonly runtime: Runtime,
    private readonly turns: TurnRunner,
    private readonly gate: TurnGate = new TurnGate(env.clock),
  ) {}

  /** Whether a turn of this run is in flight on this node (running, or queued behind another turn). */
  isLive(runId: string): boolean {
    return this.active.has(runId);
  }

  /** Validates a request body and builds the input messages (not yet stored). */
  parseInput(agentId: string, body: SendRequestBody, runId: string, senderId?: string): MessageRecord[] {
    let inputs: MessageCreateInput[];
    // Where each input's fields sit in the request, for errors that name them.
    let locOf: (i: number) => (string | number)[];
    if (Array.isArray(body.messages) && body.messages.length > 0) {
      inputs = body.messages;
      locOf = (i) => ["body", "messages", i];
    } else if (body.input !== undefined && body.input !== null) {
      inputs = [{ role: "user", content: body.input }];
      locOf = () => ["body", "input"];
    } else if (body.content !== undefined) {
      // The Kelpie seed's shorthand: {"role": "user", "content": "..."}.
      inputs = [{ role: body.role ?? "user", content: body.content }];
      locOf = () => ["body"];
    } else {
      throw invalidField(
        ["body", "messages"],
        "give at least one message (messages, input, or role+content)",
        "missing",
      );
    }
    if (inputs.length > INPUT_MESSAGES_MAX) {
      throw invalidField(["body", "messages"], `at most ${INPUT_MESSAGES_MAX} messages per request`);
    }
    const nowMs = this.env.clock.nowMs();
    return inputs.flatMap((m, i): MessageRecord[] => {
      const at = locOf(i);
      if (m === null || typeof m !== "object") throw invalidField(at, "must be a message object");
      if (m.type === "approval") return this.approvalResults(agentId, m, at, runId, nowMs);
      const role = m.role ?? "user";
      if (role !== "user" && role !== "system")
        throw invalidField([...at, "role"], "must be 'user' or 'system'");
      const record: MessageRecord = {
        id: newId("message", this.env.rng),
        agent_id: agentId,
        role,
        content: contentParts(m.content, at[1] === "input" ? at : [...at, "content"]),
        name: typeof m.name === "string" ? m.name : null,
        tool_calls: null,
        tool_call_id: null,
        tool_returns: null,
        step_id: null,
        run_id: runId,
        model: null,
        otid: typeof m.otid === "string" ? m.otid : null,
        sender_id: senderId ?? (typeof m.sender_id === "string" ? m.sender_id : null),
        group_id: null,
        is_err: null,
        created_at_ms: nowMs,
      };
      return [record];
    });
  }

  /**
   * Letta's ApprovalCreate: the client's results for the client-side tool calls the agent made
   * (`{"type": "tool", tool_call_id, tool_return, status}`), or a refusal to run one
   * (`{"type": "approval", tool_call_id, approve: false, reason}`). Each becomes a tool result.
   */
  private approvalResults(
    agentId: string,
    m: MessageCreateInput,
    at: (string | number)[],
    runId: string,
    nowMs: number,
  ): MessageRecord[] {
    const approvals = (m as { approvals?: unknown }).approvals;
    if (!Array.isArray(approvals) || approvals.length === 0) {
      throw invalidField([...at, "approvals"], "give at least one approval or tool result", "missing");
    }
    return approvals.map((a, j): MessageRecord => {
      const loc = [...at, "approvals", j];
      if (a === null || typeof a !== "object") throw invalidField(loc, "must be an object");
      const r = a as Record<string, unknown>;
      if (typeof r.tool_call_id !== "string" || r.tool_call_id === "") {
        throw invalidField([...loc, "tool_call_id"], "field required", "missing");
      }
      let ok: boolean;
      let text: string;
      if (r.type === "approval") {
        if (r.approve === true) {
          throw invalidField(
            [...loc, "approve"],
            "this server runs no tools that need approval; client tools answer with {type: 'tool', tool_return}",
          );
        }
        ok = false;
        text = `The user denied this tool call${typeof r.reason === "string" && r.reason ? `: ${r.reason}` : "."}`;
      } else {
        if (r.type !== undefined && r.type !== "tool")
          throw invalidField([...loc, "type"], "must be 'tool' or 'approval'");
        ok = r.status !== "error";
        text = typeof r.tool_return === "string" ? r.tool_return : JSON.stringify(r.tool_return ?? null);
      }
      const lines = (v: unknown) =>
        Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : null;
      return {
        id: newId("message", this.env.rng),
        agent_id: agentId,
        role: "tool",
        content: [{ type: "text", text: JSON.stringify({ status: ok ? "OK" : "Failed", message: text }) }],
        name: null,
        tool_calls: null,
        tool_call_id: r.tool_call_id,
        tool_returns: [
          {
            tool_call_id: r.tool_call_id,
            status: ok ? "success" : "error",
            stdout: lines(r.stdout),
            stderr: lines(r.stderr),
          },
        ],
        step_id: null,
        run_id: runId,
        model: null,
        otid: typeof m.otid === "string" ? m.otid : null,
        sender_id: null,
        group_id: null,
        is_err: ok ? null : true,
        created_at_ms: nowMs,
      };
    });
  }

  /** Letta's client_tools: `[{name, description, parameters}]` the client runs itself. */
  static clientTools(body: SendRequestBody): ToolSpec[] {
    const given = body.client_tools;
    if (given === undefined || given === null) return [];
    if (!Array.isArray(given)) throw invalidField(["body", "client_tools"], "must be a list of tools");
    return given.map((t, i) => {
      const loc = ["body", "client_tools", i];
      if (t === null || typeof t !== "object") throw invalidField(loc, "must be an object");
      const tool = t as { name?: unknown; description?: unknown; parameters?: unknown };
      if (typeof tool.name !== "string" || !/^[a-zA-Z0-9_-]{1,64}$/.test(tool.name)) {
        throw invalidField([...loc, "name"], "must be 1 to 64 letters, digits, '_' or '-'");
      }
      const parameters =
        tool.parameters !== null && typeof tool.parameters === "object"
          ? (tool.parameters as ToolSpec["parameters"])
          : { type: "object" as const, properties: {}, required: [] };
      return {
        name: tool.name,
        description: typeof tool.description === "string" ? tool.description : "",
        parameters,
      };
    });
  }

  static maxSteps(body: SendRequestBody): number {
    const maxSteps = body.max_steps ?? MAX_STEPS_DEFAULT;
    if (!Number.isInteger(maxSteps) || maxSteps < 1 || maxSteps > MAX_STEPS_MAX) {
      throw invalidField(["body", "max_steps"], `must be an integer from 1 to ${MAX_STEPS_MAX}`);
    }
    return maxSteps;
  }

  static messageOptions(body: SendRequestBody): LettaMessageOptions {
    return {
      useAssistantMessage: body.use_assistant_message ?? true,
      assistantMessageToolName: body.assistant_message_tool_name ?? "send_message",
      assistantMessageToolKwarg: body.assistant_message_tool_kwarg ?? "message",
    };
  }

  /** Sends messages and runs the turn; resolves when the turn is committed and over. */
  async send(
    agentId: string,
    body: SendRequestBody,
    options: SendOptions,
    runCreated?: RunRecord,
  ): Promise<TurnResult> {
    if (options.idempotencyKey !== undefined && runCreated === undefined)
      return this.sendOnce(agentId, body, options, options.idempotencyKey);
    return this.runTurn(agentId, body, options, runCreated, false);
  }

  private async sendOnce(
    agentId: string,
    body: SendRequestBody,
    options: SendOptions,
    key: string,
  ): Promise<TurnResult> {
    const runId = idempotentRunId(agentId, key);
    const inFlight = this.keyed.get(runId);
    if (inFlight !== undefined) return this.replay(await inFlight, options);
    // Validate first: a bad retry is a 4xx like the first attempt was.
    this.parseInput(agentId, body, runId, options.senderId);
    MessageService.maxSteps(body);
    const attempt = (async (): Promise<TurnResult> => {
      const existing = await this.env.storage.getRun(runId);
      if (existing === null) {
        return this.runTurn(agentId, body, options, undefined, false, runId);
      }
      if (existing.agent_id !== agentId) {
        throw new KelpieError("CONFLICT", `Idempotency-Key '${key}' was used for another agent`);
      }
      const records = await this.env.storage.listRunMessages(existing.id, {
        limit: RUN_REPLAY_MESSAGES_MAX,
        order: "asc",
      });
      // A run that failed before committing anything (its model failed, its first step's commit
      // failed) left nothing to replay, the input included: the retry runs it, under the same run
      // id, so that an outbox entry, delivered under one key however often it is tried, is still
      // applied once it can be.
      if (existing.status === "failed" && !wasInterrupted(existing) && records.length === 0)
        return this.runTurn(agentId, body, options, undefined, false, runId);
      const earlier = this.committedResult(existing, records, MessageService.messageOptions(body));
      if (RUN_TERMINAL.has(existing.status) && !wasInterrupted(existing))
        return this.replay(earlier, options);
      // The node running it died after some steps committed (the run may read as interrupted by
      // now): go on from the last one, with the input already in the history.
      for (const message of earlier.messages) options.onEvent?.({ type: "message", message });
      const rest = await this.runTurn(agentId, body, options, existing, true);
      return { ...rest, messages: [...earlier.messages, ...rest.messages] };
    })();
    this.keyed.set(runId, attempt);
    try {
      return await attempt;
    } finally {
      this.keyed.delete(runId);
    }
  }

  /** What a run committed, as its response: its messages (not the input), stop reason and usage. */
  private committedResult(
    run: RunRecord,
    records: MessageRecord[],
    options: LettaMessageOptions,
  ): TurnResult {
    const messages = records
      .filter((m) => m.role !== "user" && m.role !== "system")
      .flatMap((m) => toLettaMessages(m, options));
    return {
      runId: run.id,
      messages,
      stopReason: (run.stop_reason ?? "error") as TurnResult["stopReason"],
      usage: { ...run.usage },
      ...(run.error === null ? {} : { error: new KelpieError("INTERNAL", run.error) }),
    };
  }

  /** A finished result handed to a retry; a streaming retry sees its messages as events. */
  private replay(result: TurnResult, options: SendOptions): TurnResult {
    for (const message of result.messages) options.onEvent?.({ type: "message", message });
    return result;
  }

  private async runTurn(
    agentId: string,
    body: SendRequestBody,
    options: SendOptions,
    runCreated: RunRecord | undefined,
    resume: boolean,
    runIdGiven?: string,
  ): Promise<TurnResult> {
    const runId = runCreated?.id ?? runIdGiven ?? newId("run", this.env.rng);
    const input = resume ? [] : this.parseInput(agentId, body, runId, options.senderId);
    MessageService.maxSteps(body);
    MessageService.clientTools(body);
    const admission = this.admit(agentId, runId, options);
    return this.runAdmitted(agentId, runId, body, options, input, runCreated, admission);
  }

  /**
   * Lets a turn in through its agent's gate and registers it as in flight (so it can be cancelled
   * while it waits). Throws AGENT_BUSY, before anything is registered, when the queue is full.
   */
  private admit(agentId: string, runId: string, options: SendOptions): Admission {
    const controller = new AbortController();
    // Each LLM call of the turn listens on this one signal.
    setMaxListeners(MAX_STEPS_MAX + 16, controller.signal);
    const pass = this.gate.admit({
      agentId,
      runId,
      chain: options.callChain ?? [],
      signal: controller.signal,
    });
    this.active.set(runId, { agentId, controller });
    options.onAdmitted?.();
    // Cancelled while queued: the turn runs no step, and the runner records the run cancelled.
    const entered = pass.catch((err: unknown) => {
      if (controller.signal.aborted) return null;
      throw err;
    });
    return {
      controller,
      entered,
      abandon: () => {
        controller.abort(new KelpieError("CANCELLED", `run ${runId} was not started`));
        void entered.then(
          (p) => p?.release(),
          () => {},
        );
        this.active.delete(runId);
      },
    };
  }

  private async runAdmitted(
    agentId: string,
    runId: string,
    body: SendRequestBody,
    options: SendOptions,
    input: MessageRecord[],
    runCreated: RunRecord | undefined,
    admission: Admission,
  ): Promise<TurnResult> {
    const { controller } = admission;
    let pass: TurnPass | null = null;
    try {
      pass = await admission.entered;
      // Validated before admission: these no longer throw.
      const maxSteps = MessageService.maxSteps(body);
      const messageOptions = MessageService.messageOptions(body);
      const clientTools = MessageService.clientTools(body);
      return await this.turns.run((op) => this.runtime.invoke(agentId, op, "send_message"), {
        agentId,
        runId,
        callDepth: options.callDepth ?? 0,
        callChain: options.callChain ?? [],
        actor: options.actor ?? (options.senderId ? `agent:${options.senderId}` : "anonymous"),
        input,
        maxSteps,
        streamTokens: options.streamTokens,
        messageOptions,
        signal: controller.signal,
        ...(options.onEvent ? { onEvent: options.onEvent } : {}),
        ...(runCreated ? { runCreated } : {}),
        ...(options.conversationId === undefined ? {} : { conversationId: options.conversationId }),
        ...(clientTools.length > 0 ? { clientTools } : {}),
        requestConfig: { max_steps: maxSteps, use_assistant_message: messageOptions.useAssistantMessage },
      });
    } finally {
      pass?.release();
      this.active.delete(runId);
    }
  }

  /** Creates the run record now and runs the turn in the background. */
  async sendAsync(
    agentId: string,
    body: SendRequestBody,
    actor?: string,
    idempotencyKey?: string,
  ): Promise<RunRecord> {
    if (idempotencyKey !== undefined) {
      const existing = await this.env.storage.getRun(idempotentRunId(agentId, idempotencyKey));
      if (existing !== null) return existing;
    }
    const run: RunRecord = {
      id:
        idempotencyKey === undefined ? newId("run", this.env.rng) : idempotentRunId(agentId, idempotencyKey),
      agent_id: agentId,
      status: "created",
      stop_reason: null,
      background: true,
      metadata: {},
      request_config: null,
      usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, step_count: 0 },
      error: null,
      created_at_ms: this.env.clock.nowMs(),
      completed_at_ms: null,
    };
    // Validate before acknowledging anything.
    const input = this.parseInput(agentId, body, run.id);
    MessageService.maxSteps(body);
    MessageService.clientTools(body);
    if ((await this.env.storage.getAgent(agentId)) === null) {
      throw new KelpieError("AGENT_NOT_FOUND", `Agent ${agentId} not found`);
    }
    const options: SendOptions = { streamTokens: false, ...(actor ? { actor } : {}) };
    // Admitted before the run is stored: a busy agent is a 429 now, not a run that never starts.
    const admission = this.admit(agentId, run.id, options);
    try {
      await this.env.storage.commit([{ op: "put_run", run }]);
    } catch (err) {
      admission.abandon();
      throw err;
    }
    void this.runAdmitted(agentId, run.id, body, options, input, run, admission).catch(() => {});
    return run;
  }

  /** Cancels the agent's runs in flight (all, or those named); returns the ids cancelled. */
  cancel(agentId: string, runIds?: string[]): string[] {
    const cancelled: string[] = [];
    for (const [runId, entry] of this.active) {
      if (entry.agentId !== agentId) continue;
      if (runIds !== undefined && !runIds.includes(runId)) continue;
      entry.controller.abort(new KelpieError("CANCELLED", `run ${runId} was cancelled`));
      cancelled.push(runId);
    }
    return cancelled;
  }

  /** Turns waiting behind the agent's running turn on this node. */
  turnsQueued(agentId: string): number {
    return this.gate.queued(agentId);
  }

  activeRunsCount(): number {
    return this.active.size;
  }
}
