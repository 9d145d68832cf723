// MCP servers as a resource, and their tools as Letta tool rows (tool_type "external_mcp") with
// stable ids derived from the server id and the tool name, so an agent can attach one by id and
// the loop can route its calls to the right server.
import { createHash } from "node:crypto";
import type { ToolCallContext, ToolOutput, ToolRunner } from "../../agent/tool-calls.ts";
import type { Env } from "../../core/env.ts";
import { invalidField, KelpieError } from "../../core/errors.ts";
import { newId } from "../../core/ids.ts";
import { canonicalJson } from "../../core/json.ts";
import { unmaskSecret, unmaskSecretValues } from "../../core/secrets.ts";
import type { McpServerRecord, Mutation, ToolRecord } from "../../storage/types.ts";
import { FUNCTION_RETURN_CHARS_MAX } from "../builtins.ts";
import { ToolError } from "../memory-tools.ts";
import type { McpConnections, McpToolInfo } from "./connections.ts";

export const MCP_SERVER_TYPES = ["stdio", "sse", "streamable_http"] as const;
export type McpServerType = (typeof MCP_SERVER_TYPES)[number];
export const MCP_SERVER_NAME_LENGTH_MAX = 256;

export interface McpServerInput {
  server_name?: unknown;
  config?: unknown;
}

/** A tool id that every node derives the same way from the server and the tool name. */
export function mcpToolId(serverId: string, toolName: string): string {
  const bytes = createHash("sha1").update(`kelpie-mcp-tool:${serverId}:${toolName}`).digest().subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `tool-${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Checks a Letta MCP server config (the `config` of CreateMCPServerRequest); returns its type and fields. */
export function checkMcpConfig(
  config: unknown,
  loc: (string | number)[],
): { type: McpServerType; config: Record<string, unknown> } {
  if (config === null || typeof config !== "object" || Array.isArray(config))
    throw invalidField(loc, "must be an object");
  const c = config as Record<string, unknown>;
  const type = c.mcp_server_type ?? c.type ?? (typeof c.command === "string" ? "stdio" : undefined);
  if (!MCP_SERVER_TYPES.includes(type as McpServerType)) {
    throw invalidField([...loc, "mcp_server_type"], `must be one of ${MCP_SERVER_TYPES.join(", ")}`, "enum");
  }
  const strings = (field: string, value: unknown) => {
    if (
      value !== undefined &&
      value !== null &&
      (typeof value !== "object" ||
        Array.isArray(value) ||
        Object.values(value).some((v) => typeof v !== "string"))
    ) {
      throw invalidField([...loc, field], "must be an object of strings");
    }
  };
  if (type === "stdio") {
    if (typeof c.command !== "string" || c.command.length === 0)
      throw invalidField([...loc, "command"], "field required", "missing");
    // It runs in a sandbox whose working directory is empty: a relative path could name nothing.
    if (c.command.includes("/") && !c.command.startsWith("/"))
      throw invalidField(
        [...loc, "command"],
        "must be a command name (looked up on PATH) or an absolute path",
      );
    if (c.command.includes("\0")) throw invalidField([...loc, "command"], "must not contain NUL");
    const args = c.args ?? [];
    if (!Array.isArray(args) || args.some((a) => typeof a !== "string"))
      throw invalidField([...loc, "args"], "must be a list of strings");
    const nul = (args as string[]).findIndex((a) => a.includes("\0"));
    if (nul >= 0) throw invalidField([...loc, "args", nul], "must not contain NUL");
    strings("env", c.env);
    for (const [name, value] of Object.entries((c.env ?? {}) as Record<string, string>)) {
      if (name.length === 0 || name.includes("=") || name.includes("\0") || value.includes("\0"))
        throw invalidField(
          [...loc, "env", name],
          "must be a variable name without '=' or NUL, with a value without NUL",
        );
    }
    return { type: "stdio", config: { command: c.command, args, env: c.env ?? null } };
  }
  if (typeof c.server_url !== "string")
    throw invalidField([...loc, "server_url"], "field required", "missing");
  try {
    const url = new URL(c.server_url);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("not http(s)");
  } catch {
    throw invalidField([...loc, "server_url"], "must be an http(s) URL");
  }
  strings("custom_headers", c.custom_headers);
  for (const field of ["auth_header", "auth_token"]) {
    if (c[field] !== undefined && c[field] !== null && typeof c[field] !== "string")
      throw invalidField([...loc, field], "must be a string");
  }
  return {
    type: type as McpServerType,
    config: {
      server_url: c.server_url,
      auth_header: c.auth_header ?? null,
      auth_token: c.auth_token ?? null,
      custom_headers: c.custom_headers ?? null,
    },
  };
}

/** A checked config with masked secrets (auth token, header and env values) standing for the stored ones. */
function unmaskConfig(
  config: Record<string, unknown>,
  stored: Record<string, unknown>,
  loc: (string | number)[],
): Record<string, unknown> {
  const out = { ...config };
  if ("auth_token" in out)
    out.auth_token = unmaskSecret(out.auth_token, stored.auth_token, [...loc, "auth_token"]);
  for (const field of ["custom_headers", "env"]) {
    if (field in out) out[field] = unmaskSecretValues(out[field], stored[field], [...loc, field]);
  }
  return out;
}

export class McpService implements ToolRunner {
  constructor(
    private readonly env: Env,
    readonly connections: McpConnections,
  ) {}

  async create(input: McpServerInput): Promise<McpServerRecord> {
    if (typeof input.server_name !== "string" || input.server_name.length === 0) {
      throw invalidField(["body", "server_name"], "field required", "missing");
    }
    if (input.server_name.length > MCP_SERVER_NAME_LENGTH_MAX) {
      throw invalidField(["body", "server_name"], `must be at most ${MCP_SERVER_NAME_LENGTH_MAX} characters`);
    }
    const checked = checkMcpConfig(input.config, ["body", "config"]);
    const { type } = checked;
    this.refuseStdio(checked);
    const config = unmaskConfig(checked.config, {}, ["body", "config"]);
    const nowMs = this.env.clock.nowMs();
    const server: McpServerRecord = {
      id: newId("mcp_server", this.env.rng),
      server_name: input.server_name,
      mcp_server_type: type,
      config,
      created_at_ms: nowMs,
      updated_at_ms: nowMs,
    };
    await this.env.storage.commit([{ op: "put_mcp_server", server, create: true }]);
    return server;
  }

  /** A stdio server whose command the operator has not allowed is refused (403) before it is stored. */
  private refuseStdio(checked: { type: McpServerType; config: Record<string, unknown> }): void {
    if (checked.type !== "stdio") return;
    const refusal = this.connections.stdioRefusal(String(checked.config.command));
    if (refusal !== null) throw refusal;
  }

  async get(serverId: string): Promise<McpServerRecord> {
    const server = await this.env.storage.getMcpServer(serverId);
    if (server === null) throw new KelpieError("NOT_FOUND", `MCP server ${serverId} not found`);
    return server;
  }

  async byName(name: string): Promise<McpServerRecord> {
    const server = (await this.env.storage.listMcpServers()).find((s) => s.server_name === name);
    if (server === undefined) throw new KelpieError("NOT_FOUND", `MCP server '${name}' not found`);
    return server;
  }

  list(): Promise<McpServerRecord[]> {
    return this.env.storage.listMcpServers();
  }

  async update(serverId: string, input: McpServerInput): Promise<McpServerRecord> {
    const server = await this.get(serverId);
    const next: McpServerRecord = { ...server, updated_at_ms: this.env.clock.nowMs() };
    if (input.server_name !== undefined && input.server_name !== null) {
      if (typeof input.server_name !== "string" || input.server_name.length === 0) {
        throw invalidField(["body", "server_name"], "must be a non-empty string");
      }
      next.server_name = input.server_name;
    }
    if (input.config !== undefined && input.config !== null) {
      const merged = {
        mcp_server_type: server.mcp_server_type,
        ...server.config,
        ...(input.config as object),
      };
      const checked = checkMcpConfig(merged, ["body", "config"]);
      this.refuseStdio(checked);
      next.mcp_server_type = checked.type;
      next.config = unmaskConfig(checked.config, server.config, ["body", "config"]);
    }
    await this.env.storage.commit([{ op: "put_mcp_server", server: next, create: false }]);
    await this.connections.close(serverId);
    return next;
  }

  /** Deletes the server, its tool rows (detaching them from agents), and closes its connection. */
  async delete(serverId: string): Promise<void> {
    await this.get(serverId);
    const tools = await this.storedTools(serverId);
    await this.env.storage.commit([
      ...tools.map((t): Mutation => ({ op: "delete_tool", tool_id: t.id })),
      { op: "delete_mcp_server", server_id: serverId },
    ]);
    await this.connections.close(serverId);
  }

  private async storedTools(serverId: string): Promise<ToolRecord[]> {
    const tools = await this.env.storage.listTools({
      limit: 10_000,
      order: "asc",
      tool_types: ["external_mcp"],
    });
    return tools.filter((t) => t.metadata.mcp_server_id === serverId);
  }

  /** Lists the server's tools live and brings the tool rows in line: new, changed and vanished tools. */
  async syncTools(serverId: string): Promise<ToolRecord[]> {
    const server = await this.get(serverId);
    const live = await this.connections.listTools(server);
    const stored = new Map((await this.storedTools(serverId)).map((t) => [t.id, t]));
    const nowMs = this.env.clock.nowMs();
    const mutations: Mutation[] = [];
    const rows: ToolRecord[] = [];
    for (const tool of live) {
      const id = mcpToolId(serverId, tool.name);
      const before = stored.get(id);
      stored.delete(id);
      const row = mcpToolRecord(server, tool, id, tool.name, before, nowMs);
      rows.push(row);
      if (before === undefined) mutations.push({ op: "put_tool", tool: row, create: true });
      else if (
        canonicalJson({ ...before, updated_at_ms: 0 }) !== canonicalJson({ ...row, updated_at_ms: 0 })
      ) {
        mutations.push({ op: "put_tool", tool: row, create: false });
      } else rows[rows.length - 1] = before;
    }
    for (const gone of stored.values()) mutations.push({ op: "delete_tool", tool_id: gone.id });
    if (mutations.length > 0) await this.env.storage.commit(mutations);
    return rows;
  }

  /** The tool row of a server's tool, syncing once if it is not known yet. */
  async tool(serverId: string, toolId: string): Promise<ToolRecord> {
    let tool = await this.env.storage.getTool(toolId);
    if (tool === null || tool.metadata.mcp_server_id !== serverId) {
      await this.syncTools(serverId);
      tool = await this.env.storage.getTool(toolId);
    }
    if (tool === null || tool.metadata.mcp_server_id !== serverId) {
      throw new KelpieError("TOOL_NOT_FOUND", `Tool ${toolId} not found on MCP server ${serverId}`);
    }
    return tool;
  }

  /** Runs a server's tool directly (Letta's ToolExecutionResult shape). */
  async runTool(
    serverId: string,
    toolName: string,
    args: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    const server = await this.get(serverId);
    const result = await this.connections.callTool(server, toolName, args);
    return {
      status: result.isError ? "error" : "success",
      func_return: result.text,
      stdout: [],
      stderr: [],
      agent_state: null,
    };
  }

  /** The agent loop's runner for tool_type external_mcp: errors reach the model as tool errors. */
  async run(name: string, args: Record<string, unknown>, ctx: ToolCallContext): Promise<ToolOutput> {
    const meta = ctx.tool?.metadata ?? {};
    const serverId = meta.mcp_server_id;
    const toolName = typeof meta.mcp_tool_name === "string" ? meta.mcp_tool_name : name;
    if (typeof serverId !== "string") throw new ToolError(`Tool '${name}' names no MCP server.`);
    const server = await this.env.storage.getMcpServer(serverId);
    if (server === null) throw new ToolError(`The MCP server of tool '${name}' was deleted.`);
    try {
      const result = await this.connections.callTool(server, toolName, args, ctx.signal);
      return { ok: !result.isError, value: result.text };
    } catch (err) {
      throw new ToolError(err instanceof Error ? err.message : String(err));
    }
  }
}

/** The tool row of one MCP tool (its server's name as a tag; where to route calls in metadata). */
export function mcpToolRecord(
  server: McpServerRecord,
  tool: McpToolInfo,
  id: string,
  name: string,
  before: ToolRecord | undefined,
  nowMs: number,
): ToolRecord {
  const parameters = { type: "object", properties: {}, required: [], ...tool.inputSchema };
  return {
    id,
    name,
    tool_type: "external_mcp",
    description: tool.description,
    source_type: "python",
    source_code: null,
    json_schema: { name, description: tool.description, parameters },
    args_json_schema: null,
    tags: [`mcp:${server.server_name}`],
    return_char_limit: FUNCTION_RETURN_CHARS_MAX,
    pip_requirements: null,
    npm_requirements: null,
    default_requires_approval: null,
    enable_parallel_execution: false,
    metadata: { mcp_server_id: server.id, mcp_server_name: server.server_name, mcp_tool_name: tool.name },
    created_at_ms: before?.created_at_ms ?? nowMs,
    updated_at_ms: nowMs,
  };
}
