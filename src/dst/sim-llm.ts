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

export const PLAN_STEPS = ["append", "archival", "sandbox", "newblock", "ask", "tell", "send"] as const;
export type PlanStep = (typeof PLAN_STEPS)[number];

export const LOG_BLOCK_LABEL = "log";
export const SCRATCH_BLOCK_LABEL = "scratch";
export const SANDBOX_TOOL_NAME = "dst_sandbox_echo";

/** The label of the block a plan's `newblock` step creates with the memory tool. */
export function newBlockLabel(token: string): string {
  return `nb_${token}`;
}

/** What an `ask` (sync) or `tell` (async) step says to the peer agent. */
export function peerMessage(step: "ask" | "tell", token: string): string {
  return `${step} ${token}`;
}

/** The user message that carries a plan; `peer` is the agent its ask and tell steps message. */
export function planMessage(opId: number, token: string, plan: PlanStep[], peer?: string): string {
  return `dst op=${opId} token=${token} plan=${plan.join(",")}${peer === undefined ? "" : ` peer=${peer}`}`;
}

interface ParsedPlan {
  opId: number;
  token: string;
  plan: PlanStep[];
  peer: string | null;
}

const PLAN_PATTERN = /^dst op=(\d+) token=(\S+) plan=(\S*)(?: peer=(\S+))?$/;

function parsePlan(text: string): ParsedPlan | null {
  const match = PLAN_PATTERN.exec(text);
  if (match === null) return null;
  const plan = match[3]!
    .split(",")
    .filter((s): s is PlanStep => (PLAN_STEPS as readonly string[]).includes(s));
  return { opId: Number(match[1]), token: match[2]!, plan, peer: match[4] ?? null };
}

/**
 * What of another turn this turn's model call sees after its own input (nothing, when turns are
 * serial per agent): another plan, or a tool call another op's turn made. One exception is by
 * design: while the turn waits in an `ask` step, a synchronous call back into its agent along the
 * chain it waits on runs at once (reentrancy, runtime/turn-gate.ts); its messages come just before
 * the ask's own.
 */
function foreignMessage(turn: TurnScript, messages: ChatMessage[]): string | null {
  let start = -1;
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i]!;
    if (m.role === "user" && parsePlan(m.text)?.token === turn.plan.token) {
      start = i;
      break;
    }
  }
  if (start < 0) return null; // its input left the context (summarized): nothing to compare
  const mine = `call_${turn.plan.opId}_`;
  // Stretches of other turns' messages, each ended by this turn's next call (or by the end).
  let seen: string | null = null;
  let syncCall = false;
  for (const m of messages.slice(start + 1)) {
    if (m.role === "assistant" && m.toolCalls.some((c) => c.id.startsWith(mine))) {
      const ask = m.toolCalls.some((c) => c.id.startsWith(`${mine}ask_`));
      if (seen !== null && !(ask && syncCall)) return seen;
      seen = null;
      continue;
    }
    if (seen !== null) continue;
    if (m.role === "user") {
      const other = parsePlan(m.text);
      if (other !== null && other.token !== turn.plan.token) seen = `the input of ${other.token}`;
      else if (isSyncCall(m.text)) seen = `the call '${m.text.slice(-12)}'`;
      syncCall = seen !== null && isSyncCall(m.text);
    } else if (m.role === "assistant") {
      const call = m.toolCalls.find((c) => /^call_\d+_/.test(c.id));
      if (call !== undefined) {
        seen = `the tool call ${call.id}`;
        syncCall = false;
      }
    }
  }
  return seen;
}

/** Whether a user message is another agent's synchronous call (its sender waits for the answer). */
function isSyncCall(text: string): boolean {
  return text.startsWith("[Incoming message from agent") && / ask t\d+$/.test(text);
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
 * One turn as the model sees it: the plan it was given and the calls it made; a step counts as
 * taken once its call is in the history with arguments that parse (a botched call is made again).
 * Turns are serial per agent, so after its input a turn's model sees only its own calls; seeing
 * another turn's is a violation.
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
  /** A broken guarantee the model can see (another turn's messages inside its own). */
  violation: (text: string) => void;
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
      turn = { plan: plan ?? { opId: 0, token: "none", plan: [], peer: null }, callIds: [] };
      this.turns.set(signal, turn);
    }
    if (turn.plan.opId !== 0) {
      const foreign = foreignMessage(turn, req.messages);
      if (foreign !== null)
        deps.violation(`two turns interleaved: the turn of ${turn.plan.token} saw ${foreign} mid-turn`);
    }
    const step: PlanStep = turn.plan.plan[stepsTaken(turn, req.messages)] ?? "send";
    const token = turn.plan.token;
    const id = `call_${turn.plan.opId}_${step}_${callId}`;
    turn.callIds.push(id);
    const heartbeat = step !== "send";
    const { name, args } = toolCallOf(step, token, turn.plan.peer);
    if (heartbeat) args.request_heartbeat = true;
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

/** The tool call a plan step makes. */
function toolCallOf(
  step: PlanStep,
  token: string,
  peer: string | null,
): { name: string; args: Record<string, unknown> } {
  switch (step) {
    case "append":
      return { name: "core_memory_append", args: { label: LOG_BLOCK_LABEL, content: `${token};` } };
    case "archival":
      return { name: "archival_memory_insert", args: { content: `passage ${token}`, tags: [token] } };
    case "sandbox":
      return { name: SANDBOX_TOOL_NAME, args: { input: token } };
    case "newblock":
      return {
        name: "memory",
        args: { command: "create", path: `/memories/${newBlockLabel(token)}`, file_text: token },
      };
    case "ask":
      return {
        name: "send_message_to_agent_and_wait_for_reply",
        args: { message: peerMessage("ask", token), other_agent_id: peer ?? "agent-none" },
      };
    case "tell":
      return {
        name: "send_message_to_agent_async",
        args: { message: peerMessage("tell", token), other_agent_id: peer ?? "agent-none" },
      };
    case "send":
      return { name: "send_message", args: { message: `done ${token}` } };
  }
}
