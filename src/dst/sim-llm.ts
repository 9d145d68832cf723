// The scripted LLM: it reads the plan the workload wrote into the user's message
// ("dst op=17 token=t17 plan=append,archival,sandbox,send") and makes the agent carry it out, one
// tool call per step, in the same way for the same history. It answers after a seeded latency on
// the calling node's clock, and, inside fault windows, fails, hangs until its call times out, or
// sends a tool call whose arguments are not JSON (the agent loop must report that back, not crash).
import { KelpieError } from "../core/errors.ts";
import type { Rng } from "../core/rng.ts";
import {
  type ChatEvent,
  type ChatMessage,
  type ChatRequest,
  type ChatResult,
  LLM_SPEC,
  type LlmProvider,
  type ToolCall,
} from "../llm/types.ts";
import type { ActiveFaults, FaultCounters, FaultType } from "./faults.ts";
import type { NodeClock } from "./scheduler.ts";

export const LLM_LATENCY_MS_MIN = 20;
export const LLM_LATENCY_MS_MAX = 400;
/** A hung call is abandoned after this long (the provider's own timeout). */
export const LLM_CALL_TIMEOUT_MS = 3_000;
export const LLM_FAULT_PROBABILITY = 0.3;

export const PLAN_STEPS = ["append", "archival", "sandbox", "send"] as const;
export type PlanStep = (typeof PLAN_STEPS)[number];

export const LOG_BLOCK_LABEL = "log";
export const SCRATCH_BLOCK_LABEL = "scratch";
export const SANDBOX_TOOL_NAME = "dst_sandbox_echo";

/** The user message that carries a plan. */
export function planMessage(opId: number, token: string, plan: PlanStep[]): string {
  return `dst op=${opId} token=${token} plan=${plan.join(",")}`;
}

interface ParsedPlan {
  opId: number;
  token: string;
  plan: PlanStep[];
}

const PLAN_PATTERN = /^dst op=(\d+) token=(\S+) plan=(\S*)$/;

function parsePlan(text: string): ParsedPlan | null {
  const match = PLAN_PATTERN.exec(text);
  if (match === null) return null;
  const plan = match[3]!
    .split(",")
    .filter((s): s is PlanStep => (PLAN_STEPS as readonly string[]).includes(s));
  return { opId: Number(match[1]), token: match[2]!, plan };
}

function argsParse(call: ToolCall): boolean {
  try {
    JSON.parse(call.argsJson);
    return true;
  } catch {
    return false;
  }
}

/** The plan in the newest user message: what a turn's first call is asked to do. */
function newestPlan(messages: ChatMessage[]): ParsedPlan | null {
  const last = messages.at(-1);
  return last?.role === "user" ? parsePlan(last.text) : null;
}

/**
 * One turn as the model sees it. Turns of one agent may interleave in its history (a step's
 * external tool runs outside the mailbox, and a retried request runs beside the original), so the
 * model keeps, per turn, the plan it was given and the calls it made; a step counts as taken once
 * its call is in the history with arguments that parse (a botched call is made again).
 */
interface TurnScript {
  plan: ParsedPlan;
  callIds: string[];
}

function stepsTaken(turn: TurnScript, messages: ChatMessage[]): number {
  const mine = new Set(turn.callIds);
  let taken = 0;
  for (const m of messages) {
    if (m.role === "assistant" && m.toolCalls.some((c) => mine.has(c.id)) && m.toolCalls.every(argsParse))
      taken++;
  }
  return taken;
}

export interface SimLlmDeps {
  clock: NodeClock;
  rng: Rng;
  faults: ActiveFaults;
  counters: FaultCounters;
  nowMs: () => number;
  trace: (line: string) => void;
}

export class SimLlm implements LlmProvider {
  readonly spec = LLM_SPEC;
  readonly name = "dst-scripted";
  private callsCount = 0;
  /** The turns in flight, by the abort signal each run passes to every call it makes. */
  private readonly turns = new WeakMap<AbortSignal, TurnScript>();

  constructor(private readonly deps: SimLlmDeps) {}

  private fault(type: FaultType): boolean {
    const { deps } = this;
    if (!deps.faults.isOpen(type, deps.nowMs()) || deps.rng.next() >= LLM_FAULT_PROBABILITY) return false;
    deps.counters.count(type);
    return true;
  }

  async complete(req: ChatRequest, signal: AbortSignal): Promise<ChatResult> {
    const { deps } = this;
    const callId = ++this.callsCount;
    const latencyMs = LLM_LATENCY_MS_MIN + deps.rng.int(LLM_LATENCY_MS_MAX - LLM_LATENCY_MS_MIN);
    if (this.fault("llm_timeout")) {
      deps.trace(`fault llm_timeout call ${callId}`);
      await deps.clock.sleepMs(LLM_CALL_TIMEOUT_MS, signal);
      throw new KelpieError("LLM_ERROR", `model call timed out after ${LLM_CALL_TIMEOUT_MS} ms`);
    }
    await deps.clock.sleepMs(latencyMs, signal);
    if (this.fault("llm_error")) {
      deps.trace(`fault llm_error call ${callId}`);
      throw new KelpieError("LLM_ERROR", "the model provider answered 503");
    }
    const usage = { inputTokens: 100, outputTokens: 20, totalTokens: 120 };
    const base = { warnings: [], modelId: req.model, usage };
    // A summarization request (no tools) gets a summary.
    if (req.tools.length === 0) {
      return {
        ...base,
        text: "summary of earlier messages",
        toolCalls: [],
        finishReason: { unified: "stop" },
      };
    }
    let turn = this.turns.get(signal);
    if (turn === undefined) {
      const plan = newestPlan(req.messages);
      turn = { plan: plan ?? { opId: 0, token: "none", plan: [] }, callIds: [] };
      this.turns.set(signal, turn);
    }
    const step: PlanStep = turn.plan.plan[stepsTaken(turn, req.messages)] ?? "send";
    const token = turn.plan.token;
    const id = `call_${turn.plan.opId}_${step}_${callId}`;
    turn.callIds.push(id);
    const heartbeat = step !== "send";
    const args: Record<string, unknown> =
      step === "append"
        ? { label: LOG_BLOCK_LABEL, content: `${token};` }
        : step === "archival"
          ? { content: `passage ${token}`, tags: [token] }
          : step === "sandbox"
            ? { input: token }
            : { message: `done ${token}` };
    if (heartbeat) args.request_heartbeat = true;
    const name =
      step === "append"
        ? "core_memory_append"
        : step === "archival"
          ? "archival_memory_insert"
          : step === "sandbox"
            ? SANDBOX_TOOL_NAME
            : "send_message";
    let argsJson = JSON.stringify(args);
    if (this.fault("llm_malformed_tool_call")) {
      deps.trace(`fault llm_malformed_tool_call call ${callId} ${name}`);
      argsJson = argsJson.slice(0, Math.max(1, argsJson.length - 3));
    }
    return {
      ...base,
      text: `step ${step}`,
      toolCalls: [{ id, name, argsJson }],
      finishReason: { unified: "tool-calls", raw: "tool_calls" },
    };
  }

  async *stream(req: ChatRequest, signal: AbortSignal): AsyncIterable<ChatEvent> {
    const r = await this.complete(req, signal);
    if (r.text.length > 0) yield { type: "text-delta", delta: r.text };
    for (const [index, call] of r.toolCalls.entries()) {
      yield { type: "tool-call", index, id: call.id, toolName: call.name, argsJson: call.argsJson };
    }
    yield { type: "finish", finishReason: r.finishReason, usage: r.usage, warnings: [], modelId: r.modelId };
  }
}
