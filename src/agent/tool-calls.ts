// Runs the tool calls of one step. Core-memory tools and send_message run here; any other tool
// goes to a runner registered for its name or tool_type (conversation search, archival and
// working memory, sandboxed custom tools, MCP). conversation_search still runs inside the turn. A failure becomes a tool error that
// the model reads; it never breaks the turn.
import type { Env } from "../core/env.ts";
import { isKelpieError } from "../core/errors.ts";
import type { Fence, OutboxRecord, ToolRecord } from "../storage/types.ts";
import { type CoreMemory, isMemoryTool, runMemoryTool, ToolError } from "../tools/memory-tools.ts";

export interface ToolCallContext {
  env: Env;
  agentId: string;
  runId: string;
  memory: CoreMemory;
  tool: ToolRecord | undefined;
  signal: AbortSignal;
  /** How deep in agent-to-agent calls the calling turn is (0 for a client's request). */
  callDepth: number;
  /** Run ids of the turns suspended waiting for the calling turn, outermost first. */
  callChain: readonly string[];
  /**
   * The agent's fence when the tool runs inside its mailbox (the turn holds it): the tool's own
   * writes then commit with it. Absent: the tool runs outside, and its writes queue in the mailbox.
   */
  fence?: Fence | undefined;
}

export interface ToolOutput {
  ok: boolean;
  value: string;
  stdout?: string[];
  stderr?: string[];
  /** Async messages to other agents: committed with the step (its answer is not given before). */
  outbox?: OutboxRecord[];
}

export interface ToolRunner {
  run(name: string, args: Record<string, unknown>, ctx: ToolCallContext): Promise<ToolOutput>;
}

/** Runners for tools this module does not run itself, by exact name first, then by tool_type. */
export class ToolRunners {
  private readonly byName = new Map<string, ToolRunner>();
  private readonly byType = new Map<string, ToolRunner>();

  registerName(name: string, runner: ToolRunner): void {
    this.byName.set(name, runner);
  }

  registerType(toolType: string, runner: ToolRunner): void {
    this.byType.set(toolType, runner);
  }

  find(name: string, tool: ToolRecord | undefined): ToolRunner | undefined {
    return this.byName.get(name) ?? (tool ? this.byType.get(tool.tool_type) : undefined);
  }
}

/** Tools that run inside the agent's turn (they touch only the agent's own state). */
export function isInTurnTool(name: string): boolean {
  return isMemoryTool(name) || name === "send_message" || name === "conversation_search";
}

/** Runs one call; the args are already parsed. */
export async function runToolCall(
  name: string,
  args: Record<string, unknown>,
  ctx: ToolCallContext,
  runners: ToolRunners,
): Promise<ToolOutput> {
  try {
    if (ctx.tool === undefined) {
      throw new ToolError(`Tool '${name}' is not attached to this agent.`);
    }
    const { request_heartbeat: _heartbeat, ...callArgs } = args;
    args = callArgs;
    if (isMemoryTool(name)) {
      const result = runMemoryTool(ctx.memory, name, args);
      return { ok: true, value: result ?? "None" };
    }
    if (name === "send_message") {
      if (typeof args.message !== "string") throw new ToolError("Missing required argument 'message'.");
      return { ok: true, value: "None" };
    }
    const runner = runners.find(name, ctx.tool);
    if (runner === undefined) {
      throw new ToolError(`Tool '${name}' (${ctx.tool.tool_type}) cannot be executed on this server.`);
    }
    return await runner.run(name, args, ctx);
  } catch (err) {
    if (err instanceof ToolError) return { ok: false, value: err.message };
    if (isKelpieError(err) && err.code === "CANCELLED") throw err;
    const message = err instanceof Error ? err.message : String(err);
    return { ok: false, value: `${name} failed: ${message}` };
  }
}
