// Runs the tool calls of one step. Core-memory tools, send_message and conversation_search run
// here, inside the agent's turn; any other tool goes to a runner registered for its name or
// tool_type (archival memory, sandboxed custom tools, MCP). A failure becomes a tool error that
// the model reads; it never breaks the turn.
import type { Env } from "../core/env.ts";
import { isKelpieError } from "../core/errors.ts";
import type { MessageRecord, ToolRecord } from "../storage/types.ts";
import { type CoreMemory, isMemoryTool, runMemoryTool, ToolError } from "../tools/memory-tools.ts";
import { textOf } from "./history.ts";

/** Letta's RETRIEVAL_QUERY_DEFAULT_PAGE_SIZE. */
export const CONVERSATION_SEARCH_LIMIT_DEFAULT = 5;
export const CONVERSATION_SEARCH_LIMIT_MAX = 100;
/** conversation_search scans at most this many recent messages; the result says so when it stops short. */
export const CONVERSATION_SEARCH_SCAN_MAX = 10_000;

export interface ToolCallContext {
  env: Env;
  agentId: string;
  runId: string;
  memory: CoreMemory;
  tool: ToolRecord | undefined;
  signal: AbortSignal;
  /** How deep in agent-to-agent calls the calling turn is (0 for a client's request). */
  callDepth: number;
}

export interface ToolOutput {
  ok: boolean;
  value: string;
  stdout?: string[];
  stderr?: string[];
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

function parseDateBound(value: unknown, end: boolean, field: string): number | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") throw new ToolError(`Argument '${field}' must be an ISO 8601 date string.`);
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(value);
  const ms = Date.parse(dateOnly ? `${value}T00:00:00Z` : value);
  if (Number.isNaN(ms)) throw new ToolError(`Argument '${field}' is not an ISO 8601 date: '${value}'.`);
  return dateOnly && end ? ms + 86_400_000 - 1 : ms;
}

async function conversationSearch(args: Record<string, unknown>, ctx: ToolCallContext): Promise<string> {
  const query = typeof args.query === "string" ? args.query.toLowerCase() : "";
  const roles = Array.isArray(args.roles) ? (args.roles as string[]) : undefined;
  const limit =
    args.limit === undefined || args.limit === null ? CONVERSATION_SEARCH_LIMIT_DEFAULT : Number(args.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > CONVERSATION_SEARCH_LIMIT_MAX) {
    throw new ToolError(`Argument 'limit' must be an integer from 1 to ${CONVERSATION_SEARCH_LIMIT_MAX}.`);
  }
  const startMs = parseDateBound(args.start_date, false, "start_date");
  const endMs = parseDateBound(args.end_date, true, "end_date");
  const recent = await ctx.env.storage.listMessages(ctx.agentId, {
    limit: CONVERSATION_SEARCH_SCAN_MAX,
    order: "desc",
  });
  const total = await ctx.env.storage.countMessages(ctx.agentId);
  const matches: MessageRecord[] = [];
  for (const m of recent) {
    if (m.role === "system") continue;
    if (roles !== undefined && !roles.includes(m.role)) continue;
    if (startMs !== undefined && m.created_at_ms < startMs) continue;
    if (endMs !== undefined && m.created_at_ms > endMs) continue;
    const text = textOf(m);
    if (query.length > 0 && !text.toLowerCase().includes(query)) continue;
    matches.push(m);
    if (matches.length >= limit) break;
  }
  const note =
    total > recent.length ? ` (searched the ${recent.length} most recent of ${total} messages)` : "";
  if (matches.length === 0) return `No results found.${note}`;
  const results = matches.map((m) => ({
    timestamp: new Date(m.created_at_ms).toISOString(),
    role: m.role,
    content: textOf(m),
  }));
  return `Found ${matches.length} results${note}: ${JSON.stringify(results)}`;
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
    if (name === "conversation_search") return { ok: true, value: await conversationSearch(args, ctx) };
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
