// Letta's multi-agent tools, run through the actor runtime: the other agent's turn runs in its own
// mailbox. These calls run outside the caller's mailbox (see agent/turn.ts), and a caller that
// waits passes its run down the call chain, so the turn gate lets a call back into it (A asks B,
// B asks A) instead of deadlocking (runtime/turn-gate.ts); a depth limit stops runaway chains. An
// async send is an outbox entry, committed with the sender's step and delivered after it
// (agent/outbox.ts).
import type { MessageService } from "../agent/message-service.ts";
import type { ToolCallContext, ToolOutput, ToolRunner, ToolRunners } from "../agent/tool-calls.ts";
import { newId } from "../core/ids.ts";
import type { OutboxRecord, Storage } from "../storage/types.ts";
import { ToolError } from "./memory-tools.ts";

/** How many agent-to-agent hops one client request may cause. */
export const AGENT_CALL_DEPTH_MAX = 4;
/** send_message_to_agents_matching_tags reaches at most this many agents. */
export const AGENTS_MATCHING_TAGS_MAX = 50;

export const MULTI_AGENT_TOOL_NAMES = [
  "send_message_to_agent_and_wait_for_reply",
  "send_message_to_agent_async",
  "send_message_to_agents_matching_tags",
] as const;

function text(args: Record<string, unknown>, name: string): string {
  const value = args[name];
  if (typeof value !== "string" || value.length === 0)
    throw new ToolError(`Missing required argument '${name}'.`);
  return value;
}

function tags(args: Record<string, unknown>, name: string): string[] {
  const value = args[name] ?? [];
  if (!Array.isArray(value) || value.some((t) => typeof t !== "string")) {
    throw new ToolError(`Argument '${name}' must be a list of strings.`);
  }
  return value as string[];
}

const ASYNC_NOTE =
  "to reply to this message, make sure to use the 'send_message_to_agent_async' tool, or the agent will not receive your message";

/** The message a target gets from another agent, with Letta's note on how to answer. */
function incomingText(senderId: string, note: string, message: string): string {
  return `[Incoming message from agent with ID '${senderId}' - ${note}] ${message}`;
}

/** An async message as an outbox entry of the sending agent, delivered after its step commits. */
function asyncEntry(targetId: string, message: string, ctx: ToolCallContext): OutboxRecord {
  const nowMs = ctx.env.clock.nowMs();
  return {
    id: newId("outbox", ctx.env.rng),
    agent_id: ctx.agentId,
    target_agent_id: targetId,
    text: incomingText(ctx.agentId, ASYNC_NOTE, message),
    call_depth: ctx.callDepth,
    attempts: 0,
    last_error: null,
    next_attempt_at_ms: nowMs,
    created_at_ms: nowMs,
  };
}

/** The chain of a call the calling turn waits for: its own, then the calling run. */
function waitingChain(ctx: ToolCallContext): readonly string[] {
  return [...ctx.callChain, ctx.runId];
}

export class MultiAgentTools implements ToolRunner {
  constructor(
    private readonly messages: MessageService,
    private readonly storage: Storage,
  ) {}

  register(runners: ToolRunners): void {
    for (const name of MULTI_AGENT_TOOL_NAMES) runners.registerName(name, this);
  }

  async run(name: string, args: Record<string, unknown>, ctx: ToolCallContext): Promise<ToolOutput> {
    if (ctx.callDepth + 1 > AGENT_CALL_DEPTH_MAX) {
      throw new ToolError(
        `Agent call depth limit reached (${AGENT_CALL_DEPTH_MAX} nested agent-to-agent messages); answer without asking another agent.`,
      );
    }
    const message = text(args, "message");
    switch (name) {
      case "send_message_to_agent_and_wait_for_reply": {
        const other = text(args, "other_agent_id");
        const replies = await this.ask(
          other,
          message,
          ctx,
          "your response will be delivered to the sender agent",
          waitingChain(ctx),
        );
        return { ok: true, value: JSON.stringify(replies) };
      }
      case "send_message_to_agent_async": {
        const other = text(args, "other_agent_id");
        await this.requireAgent(other);
        // Said to the model only once the step commits the entry with this answer (agent/outbox.ts).
        return { ok: true, value: "Successfully sent message", outbox: [asyncEntry(other, message, ctx)] };
      }
      case "send_message_to_agents_matching_tags": {
        const matchAll = tags(args, "match_all");
        const matchSome = tags(args, "match_some");
        const candidates = await this.storage.listAgents({
          limit: AGENTS_MATCHING_TAGS_MAX + 1,
          order: "asc",
          ...(matchAll.length > 0 ? { tags: matchAll, match_all_tags: true } : {}),
        });
        const targets = candidates.filter(
          (a) =>
            a.id !== ctx.agentId && (matchSome.length === 0 || matchSome.some((t) => a.tags.includes(t))),
        );
        if (candidates.length > AGENTS_MATCHING_TAGS_MAX) {
          throw new ToolError(`More than ${AGENTS_MATCHING_TAGS_MAX} agents match; narrow the tags.`);
        }
        const results = await Promise.all(
          targets.map(async (a) => ({
            agent_id: a.id,
            response: await this.ask(
              a.id,
              message,
              ctx,
              "your response will be delivered to the sender agent",
              waitingChain(ctx),
            ),
          })),
        );
        return { ok: true, value: JSON.stringify(results) };
      }
      default:
        throw new ToolError(`Unknown multi-agent tool '${name}'.`);
    }
  }

  private async requireAgent(agentId: string): Promise<void> {
    if ((await this.storage.getAgent(agentId)) === null)
      throw new ToolError(`No agent with id '${agentId}'.`);
  }

  /** Sends a message to another agent as the calling agent and returns what it said. */
  private async ask(
    otherAgentId: string,
    message: string,
    ctx: ToolCallContext,
    note: string,
    callChain: readonly string[],
  ): Promise<string[]> {
    await this.requireAgent(otherAgentId);
    const result = await this.messages.send(
      otherAgentId,
      {
        messages: [
          {
            role: "user",
            content: incomingText(ctx.agentId, note, message),
          },
        ],
      },
      { streamTokens: false, senderId: ctx.agentId, callDepth: ctx.callDepth + 1, callChain },
    );
    if (result.error) throw new ToolError(`Agent ${otherAgentId} failed to answer: ${result.error.message}`);
    return result.messages
      .filter((m) => m.message_type === "assistant_message")
      .map((m) => String((m as { content?: unknown }).content ?? ""));
  }
}
