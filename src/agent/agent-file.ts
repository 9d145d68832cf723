// Agent files: importing a Letta .af file as new agents, and exporting an agent as one.
//
// Import gives every agent, block and message a new id and maps the file's ids consistently
// (block_ids, tool_ids, in_context_message_ids; tool-call ids are kept, so calls and their
// results still pair). Tools are matched by name: Letta's built-ins become Kelpie's, a tool the
// server already has is reused (its definition replaced when override_existing_tools), a tool
// with source becomes a custom tool, an MCP tool is tied to a server of the same name (registered
// from the file when missing). Letta keeps its compiled system prompt as the first in-context
// message; Kelpie compiles it for every step from `system` and the blocks, so that message is not
// stored, and export writes a freshly compiled one in its place. What cannot be imported is a
// warning in the result; what is malformed is a 422 naming the field.
import { PAGE_LIMIT_MAX, PASSAGES_PER_BATCH_MAX } from "../core/constants.ts";
import type { Env } from "../core/env.ts";
import { invalidField, isKelpieError, KelpieError } from "../core/errors.ts";
import { checkName } from "../core/field-limits.ts";
import { newId } from "../core/ids.ts";
import { canonicalJson } from "../core/json.ts";
import type { ArchivalService } from "../memory/archival.ts";
import { newBlock } from "../memory/blocks.ts";
import type {
  AgentRecord,
  ArchiveRecord,
  BlockRecord,
  McpServerRecord,
  MessageRecord,
  Mutation,
  ToolRecord,
} from "../storage/types.ts";
import { AGENT_TYPES, builtinTool, builtinToolId } from "../tools/builtins.ts";
import {
  type CustomTools,
  deriveSchema,
  SOURCE_TYPES,
  type SourceType,
  sourceOf,
  type ToolInput,
} from "../tools/custom/service.ts";
import { type McpService, mcpToolId, mcpToolRecord } from "../tools/mcp/service.ts";
import {
  AGENT_FILE_MESSAGES_PER_AGENT_MAX,
  AGENT_FILE_PASSAGES_PER_ARCHIVE_MAX,
  type AgentFileModel,
  type FileAgent,
  type FileArchive,
  type FileMessage,
  type FileTool,
  type ImportWarning,
  ImportWarnings,
  type Loc,
  parseAgentFile,
} from "./agent-file-format.ts";
import { type AgentService, checkAgentFields } from "./agents.ts";
import { SYSTEM_PROMPT_DEFAULT } from "./defaults.ts";
import { isoDate } from "./letta-messages.ts";
import { compileSystemMessage } from "./prompt.ts";

/** Letta's import appends this to agent names unless told not to (append_copy_suffix). */
export const COPY_SUFFIX = "_copy";

export interface ImportOptions {
  appendCopySuffix: boolean;
  overrideExistingTools: boolean;
  stripMessages: boolean;
  name: string | null;
  model: string | null;
  embedding: string | null;
  projectId: string | null;
  /** From env_vars_json and secrets: added to (and overriding) the file's variables. */
  envVars: { key: string; value: string }[];
}

export interface ImportResult {
  agentIds: string[];
  warnings: ImportWarning[];
}

export interface ExportOptions {
  scrubMessages: boolean;
}

export interface AgentFileDeps {
  env: Env;
  agents: AgentService;
  customTools: CustomTools;
  mcp: McpService;
  archival: ArchivalService;
  version: string;
}

/** What becomes of one tool of the file. */
type ToolPlan =
  | { kind: "use"; id: string }
  | { kind: "create"; input: ToolInput; loc: Loc }
  | { kind: "update"; id: string; input: ToolInput; loc: Loc }
  | { kind: "mcp"; serverKey: string | null; serverName: string; toolName: string; tool: FileTool }
  | { kind: "skip" };

// [ \t], not \s: \s* at every line start would span the following blank lines, quadratic in them.
const PYTHON_SOURCE = /^[ \t]*(async[ \t]+)?def[ \t]+\w+[ \t]*\(/m;
/** Parameters Letta fills in itself; they are not for the model to supply. */
const INJECTED_PARAMETERS = ["request_heartbeat", "agent_state"];

/** Runs a service call made for part of the file, naming the file's field (not `body`) when it refuses one. */
async function inFile<T>(loc: Loc, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const issue = isKelpieError(err) && err.code === "VALIDATION" ? err.issues?.[0] : undefined;
    if (issue !== undefined && issue.loc[0] === "body")
      throw invalidField([...loc, ...issue.loc.slice(1)], issue.msg);
    throw err;
  }
}

/** The new agent's name when the request does not name it: the file's, with the copy suffix if asked. */
function agentName(agent: FileAgent, options: ImportOptions): string {
  return `${agent.name}${options.appendCopySuffix ? COPY_SUFFIX : ""}`;
}

function uniqueInOrder<T>(items: T[]): T[] {
  return [...new Set(items)];
}

/** The file's tool schema as Kelpie stores schemas: without the parameters Letta injects. */
function storedSchema(schema: Record<string, unknown>): Record<string, unknown> {
  const parameters = (schema.parameters ?? {}) as Record<string, unknown>;
  const properties = { ...((parameters.properties ?? {}) as Record<string, unknown>) };
  for (const name of INJECTED_PARAMETERS) delete properties[name];
  const required = Array.isArray(parameters.required)
    ? parameters.required.filter((r) => !INJECTED_PARAMETERS.includes(r as string))
    : [];
  return { ...schema, parameters: { type: "object", ...parameters, properties, required } };
}

export class AgentFiles {
  constructor(private readonly deps: AgentFileDeps) {}

  // --- import -------------------------------------------------------------------------------

  async import(bytes: Buffer, options: ImportOptions): Promise<ImportResult> {
    const warnings = new ImportWarnings();
    const file = parseAgentFile(bytes, warnings);
    // Everything that can be checked is checked before the first write.
    const agentsPlanned = file.agents.map((agent) => this.planAgent(agent, options, warnings));
    const blocks = this.blockRecords(file);
    const toolPlans = await this.planTools(file, options, warnings);

    const toolIds = await this.applyTools(file, toolPlans, warnings);
    const created: string[] = [];
    const archives = new Map<string, ArchiveRecord>();
    const blocksWritten = new Set<string>();
    try {
      for (const [i, agent] of file.agents.entries()) {
        created.push(
          await this.createAgent(agent, agentsPlanned[i]!, blocks, blocksWritten, toolIds, options, warnings),
        );
      }
      for (const [i, agent] of file.agents.entries()) {
        await this.importArchives(agent, created[i]!, created, file, archives);
      }
    } catch (err) {
      // Agents are all-or-nothing: undo what this import made (tools stay: they are shared by name).
      for (const id of created) await this.deps.agents.delete(id).catch(() => {});
      for (const key of blocksWritten) {
        const block_id = blocks.get(key)!.id;
        await this.deps.env.storage.commit([{ op: "delete_block", block_id }]).catch(() => {});
      }
      for (const archive of archives.values())
        await this.deps.archival.deleteArchive(archive.id).catch(() => {});
      throw err;
    }
    return { agentIds: created, warnings: warnings.list() };
  }

  /** Resolves models and checks the agent's own fields; returns the records' configs. */
  private planAgent(
    agent: FileAgent,
    options: ImportOptions,
    warnings: ImportWarnings,
  ): { llmConfig: Record<string, unknown>; embeddingConfig: Record<string, unknown> } {
    if (!AGENT_TYPES.includes(agent.agentType)) {
      throw invalidField([...agent.loc, "agent_type"], `must be one of ${AGENT_TYPES.join(", ")}`, "enum");
    }
    checkAgentFields({ system: agent.system, metadata: agent.metadata, tags: agent.tags }, agent.loc);
    if (options.name !== null) checkName(options.name, ["body", "name"]);
    else checkName(agentName(agent, options), [...agent.loc, "name"]);
    if (agent.toolRules.length > 0) {
      warnings.add(
        [...agent.loc, "tool_rules"],
        "tool rules are kept and returned, but Kelpie's agent loop does not enforce them yet",
      );
    }
    const { models } = this.deps.agents;
    const modelHandle = options.model ?? agent.model;
    const overrides: Record<string, unknown> = {};
    if (agent.contextWindowLimit !== null) overrides.context_window = agent.contextWindowLimit;
    if (agent.maxTokens !== null) overrides.max_tokens = agent.maxTokens;
    const llmConfig = this.resolveConfig([...agent.loc, options.model ? "model" : "llm_config"], () => {
      if (modelHandle !== null) {
        // A new model keeps the file's sizes (Letta: "keeping other defaults (e.g., context size)").
        const kept: Record<string, unknown> = {};
        for (const key of ["context_window", "max_tokens", "temperature"]) {
          if (agent.llmConfig?.[key] != null) kept[key] = agent.llmConfig[key];
        }
        return models.llmConfig(modelHandle, { ...kept, ...overrides });
      }
      const given = agent.llmConfig === null ? undefined : { ...agent.llmConfig, ...overrides };
      return models.llmConfig(undefined, given);
    });
    const embeddingHandle = options.embedding ?? agent.embedding;
    const embeddingConfig = this.resolveConfig(
      [...agent.loc, options.embedding ? "embedding" : "embedding_config"],
      () =>
        embeddingHandle !== null
          ? models.embeddingConfig(embeddingHandle, undefined)
          : models.embeddingConfig(undefined, agent.embeddingConfig ?? undefined),
    );
    return { llmConfig, embeddingConfig };
  }

  /** Runs a model resolution, naming the file's field when it is refused. */
  private resolveConfig(loc: Loc, resolve: () => Record<string, unknown>): Record<string, unknown> {
    try {
      return resolve();
    } catch (err) {
      if (isKelpieError(err) && err.code === "VALIDATION") {
        throw invalidField(loc, err.issues?.[0]?.msg ?? err.message);
      }
      throw err;
    }
  }

  /** Decides, for each tool of the file, which server tool stands for it. Reads only. */
  private async planTools(
    file: AgentFileModel,
    options: ImportOptions,
    warnings: ImportWarnings,
  ): Promise<Map<string, ToolPlan>> {
    const { storage } = this.deps.env;
    const plans = new Map<string, ToolPlan>();
    // Two tools of one file with one name are one tool (names are unique on a server).
    const byName = new Map<string, ToolPlan>();
    for (const tool of file.tools.values()) {
      const earlier = byName.get(tool.name);
      if (earlier !== undefined) {
        plans.set(tool.key, earlier);
        continue;
      }
      const plan = await this.planTool(tool, file, options, warnings, storage);
      plans.set(tool.key, plan);
      byName.set(tool.name, plan);
    }
    return plans;
  }

  private async planTool(
    tool: FileTool,
    file: AgentFileModel,
    options: ImportOptions,
    warnings: ImportWarnings,
    storage: Env["storage"],
  ): Promise<ToolPlan> {
    const builtin = builtinTool(tool.name);
    if (tool.toolType.startsWith("letta_") || (builtin !== undefined && tool.toolType !== "external_mcp")) {
      if (builtin === undefined) {
        warnings.add(
          tool.loc,
          `Letta tool '${tool.name}' (${tool.toolType}) does not exist in Kelpie; not attached`,
        );
        return { kind: "skip" };
      }
      if (!tool.toolType.startsWith("letta_")) {
        warnings.add(tool.loc, `tool '${tool.name}' has the name of a Kelpie built-in; the built-in is used`);
      }
      return { kind: "use", id: builtinToolId(tool.name) };
    }
    if (tool.toolType === "external_mcp") return this.planMcpTool(tool, file, warnings);

    if (tool.sourceCode === null || tool.sourceCode.trim() === "") {
      warnings.add(tool.loc, `tool '${tool.name}' (${tool.toolType}) has no source code; not imported`);
      return { kind: "skip" };
    }
    sourceOf(tool.sourceCode, [...tool.loc, "source_code"]); // bounded before anything reads it
    let sourceType = tool.sourceType ?? "python";
    if (!SOURCE_TYPES.includes(sourceType as SourceType)) {
      // Letta writes "json" for tools whose schema was given as JSON; the source is still Python.
      if (PYTHON_SOURCE.test(tool.sourceCode)) {
        warnings.add(
          [...tool.loc, "source_type"],
          `source_type '${sourceType}' was imported as 'python' (the source is Python)`,
        );
        sourceType = "python";
      } else {
        warnings.add(
          [...tool.loc, "source_type"],
          `tool '${tool.name}': source_type '${sourceType}' cannot run in Kelpie (${SOURCE_TYPES.join(", ")}); not imported`,
        );
        return { kind: "skip" };
      }
    }
    if (/\bagent_state\b/.test(tool.sourceCode)) {
      warnings.add(
        [...tool.loc, "source_code"],
        `tool '${tool.name}' reads agent_state, which Kelpie's sandbox does not pass to tools`,
      );
    }
    const existing = await storage.getToolByName(tool.name);
    if (existing !== null && existing.tool_type !== "external_mcp" && existing.tool_type !== "custom") {
      warnings.add(tool.loc, `tool '${tool.name}' exists as a ${existing.tool_type} tool, which is used`);
      return { kind: "use", id: existing.id };
    }
    // The same tool again (a re-import) is used as it is, without parsing its source again.
    const same =
      existing?.tool_type === "custom" &&
      existing.source_code === tool.sourceCode &&
      (tool.jsonSchema === null ||
        canonicalJson(existing.json_schema) ===
          canonicalJson(storedSchema({ ...tool.jsonSchema, name: tool.name })));
    if (same) return { kind: "use", id: existing.id };
    const input = await this.customToolInput(tool, sourceType as SourceType);
    if (existing === null || existing.tool_type === "external_mcp")
      return { kind: "create", input, loc: tool.loc };
    if (options.overrideExistingTools) {
      warnings.add(tool.loc, `tool '${tool.name}' existed with another definition; replaced by the file's`);
      return { kind: "update", id: existing.id, input, loc: tool.loc };
    }
    warnings.add(
      tool.loc,
      `tool '${tool.name}' exists with another definition, which is kept (override_existing_tools is false)`,
    );
    return { kind: "use", id: existing.id };
  }

  /** A custom tool's fields, checked now so that no write happens before a bad tool is found. */
  private async customToolInput(tool: FileTool, sourceType: SourceType): Promise<ToolInput> {
    const at = tool.loc;
    const source = sourceOf(tool.sourceCode, [...at, "source_code"]);
    let derivedName: string;
    try {
      derivedName = (await deriveSchema(source, sourceType)).name;
    } catch (err) {
      if (isKelpieError(err) && err.code === "OVERLOADED") throw err; // the source may be fine: retry
      const msg = isKelpieError(err) ? (err.issues?.[0]?.msg ?? err.message) : String(err);
      throw invalidField([...at, "source_code"], `cannot derive the tool's schema: ${msg}`);
    }
    if (derivedName !== tool.name) {
      throw invalidField([...at, "name"], `is '${tool.name}' but the source defines '${derivedName}'`);
    }
    if (tool.returnCharLimit !== null && tool.returnCharLimit < 1) {
      throw invalidField([...at, "return_char_limit"], "must be a positive integer");
    }
    let jsonSchema: Record<string, unknown> | undefined;
    if (tool.jsonSchema !== null) {
      if (tool.jsonSchema.name !== undefined && tool.jsonSchema.name !== tool.name) {
        throw invalidField([...at, "json_schema", "name"], `must be the tool's name '${tool.name}'`);
      }
      jsonSchema = storedSchema({ ...tool.jsonSchema, name: tool.name });
    }
    return {
      source_code: source,
      source_type: sourceType,
      ...(jsonSchema === undefined ? {} : { json_schema: jsonSchema }),
      args_json_schema: tool.argsJsonSchema,
      ...(tool.description === null ? {} : { description: tool.description }),
      tags: tool.tags,
      ...(tool.returnCharLimit === null ? {} : { return_char_limit: tool.returnCharLimit }),
      pip_requirements: tool.pipRequirements,
      npm_requirements: tool.npmRequirements,
      default_requires_approval: tool.defaultRequiresApproval,
      metadata_: tool.metadata,
    };
  }

  private planMcpTool(tool: FileTool, file: AgentFileModel, warnings: ImportWarnings): ToolPlan {
    const meta = tool.metadata;
    const letta = (meta.mcp ?? {}) as Record<string, unknown>;
    const serverKey = [meta.mcp_server_id, letta.server_id].find((v) => typeof v === "string") as
      | string
      | undefined;
    const fileServer = serverKey === undefined ? undefined : file.mcpServers.get(serverKey);
    const serverName =
      fileServer?.serverName ??
      ([meta.mcp_server_name, letta.server_name].find((v) => typeof v === "string") as string | undefined);
    if (serverName === undefined) {
      warnings.add(tool.loc, `MCP tool '${tool.name}' names no MCP server; not attached`);
      return { kind: "skip" };
    }
    const toolName = typeof meta.mcp_tool_name === "string" ? meta.mcp_tool_name : tool.name;
    return { kind: "mcp", serverKey: fileServer?.key ?? null, serverName, toolName, tool };
  }

  /** Writes the planned tools; returns the server tool id for each file tool key. */
  private async applyTools(
    file: AgentFileModel,
    plans: Map<string, ToolPlan>,
    warnings: ImportWarnings,
  ): Promise<Map<string, string | null>> {
    const ids = new Map<string, string | null>();
    const done = new Map<ToolPlan, string | null>();
    for (const [key, plan] of plans) {
      let id = done.get(plan);
      if (id === undefined) {
        id = await this.applyTool(plan, file, warnings);
        done.set(plan, id);
      }
      ids.set(key, id);
    }
    return ids;
  }

  private async applyTool(
    plan: ToolPlan,
    file: AgentFileModel,
    warnings: ImportWarnings,
  ): Promise<string | null> {
    switch (plan.kind) {
      case "skip":
        return null;
      case "use":
        return plan.id;
      case "create":
        return (await inFile(plan.loc, () => this.deps.customTools.create(plan.input))).id;
      case "update":
        return (await inFile(plan.loc, () => this.deps.customTools.update(plan.id, plan.input))).id;
      case "mcp": {
        const server = await this.mcpServer(plan, file, warnings);
        if (server === null) return null;
        return this.mcpToolRow(server, plan);
      }
    }
  }

  /** The server's MCP server of that name, registered from the file when there is none. */
  private async mcpServer(
    plan: Extract<ToolPlan, { kind: "mcp" }>,
    file: AgentFileModel,
    warnings: ImportWarnings,
  ): Promise<McpServerRecord | null> {
    const existing = (await this.deps.mcp.list()).find((s) => s.server_name === plan.serverName);
    if (existing !== undefined) return existing;
    const fileServer = plan.serverKey === null ? undefined : file.mcpServers.get(plan.serverKey);
    if (fileServer === undefined) {
      warnings.add(
        plan.tool.loc,
        `MCP server '${plan.serverName}' is neither registered here nor described in the file; tool '${plan.tool.name}' not attached`,
      );
      return null;
    }
    // A file never starts a command on this server: its stdio servers are named, not registered.
    if (fileServer.serverType === "stdio") {
      // Said once per server (warnings of the same text are counted, not repeated).
      warnings.add(
        fileServer.loc,
        `MCP server '${fileServer.serverName}' (stdio) was not registered: an agent file never starts a command on this server; register it with POST /v1/mcp-servers/ (if the operator allows stdio servers) and attach its tools`,
      );
      warnings.add(
        plan.tool.loc,
        `MCP tool '${plan.toolName}' of stdio server '${fileServer.serverName}' not attached`,
      );
      return null;
    }
    const config = { mcp_server_type: fileServer.serverType, server_url: fileServer.serverUrl };
    try {
      const server = await this.deps.mcp.create({ server_name: fileServer.serverName, config });
      warnings.add(
        fileServer.loc,
        `MCP server '${fileServer.serverName}' (${fileServer.serverType}) was registered from the file; give it credentials with PATCH /v1/mcp-servers/${server.id} if it needs any`,
      );
      return server;
    } catch (err) {
      if (isKelpieError(err) && err.code === "VALIDATION") {
        const issue = err.issues?.[0];
        throw invalidField([...fileServer.loc, ...(issue?.loc.slice(2) ?? [])], issue?.msg ?? err.message);
      }
      throw err;
    }
  }

  /**
   * The tool row of an MCP tool, made from the file's schema when the server has not been listed
   * yet (no connection is made during an import); the next listing of the server brings it in line.
   */
  private async mcpToolRow(
    server: McpServerRecord,
    plan: Extract<ToolPlan, { kind: "mcp" }>,
  ): Promise<string> {
    const { storage, clock } = this.deps.env;
    const id = mcpToolId(server.id, plan.toolName);
    if ((await storage.getTool(id)) !== null) return id;
    const nowMs = clock.nowMs();
    const description = plan.tool.description ?? "";
    const schema = plan.tool.jsonSchema ?? { name: plan.toolName, description, parameters: {} };
    const inputSchema = storedSchema(schema).parameters as Record<string, unknown>;
    const row = mcpToolRecord(
      server,
      { name: plan.toolName, description, inputSchema },
      id,
      plan.toolName,
      undefined,
      nowMs,
    );
    await storage.commit([{ op: "put_tool", tool: row, create: true }]);
    return id;
  }

  /** A checked record for every block the agents use (one per block of the file, shared by the agents naming it). */
  private blockRecords(file: AgentFileModel): Map<string, BlockRecord> {
    const { env } = this.deps;
    const nowMs = env.clock.nowMs();
    const records = new Map<string, BlockRecord>();
    for (const agent of file.agents) {
      const labels = new Set<string>();
      const fileBlocks = [...agent.blockKeys.map((key) => file.blocks.get(key)!), ...agent.inlineBlocks];
      for (const fileBlock of fileBlocks) {
        let record = records.get(fileBlock.key);
        if (record === undefined) {
          record = newBlock(fileBlock.fields, nowMs, env.rng, fileBlock.loc);
          records.set(fileBlock.key, record);
        }
        if (labels.has(record.label)) {
          throw invalidField(
            [...fileBlock.loc, "label"],
            `duplicate block label '${record.label}' on one agent`,
          );
        }
        labels.add(record.label);
      }
    }
    return records;
  }

  /** Creates one agent with its blocks, tools and messages in one commit; returns its id. */
  private async createAgent(
    agent: FileAgent,
    planned: { llmConfig: Record<string, unknown>; embeddingConfig: Record<string, unknown> },
    blocks: Map<string, BlockRecord>,
    blocksWritten: Set<string>,
    toolIds: Map<string, string | null>,
    options: ImportOptions,
    warnings: ImportWarnings,
  ): Promise<string> {
    const { env } = this.deps;
    const nowMs = env.clock.nowMs();
    const mutations: Mutation[] = [];
    const agentBlocks: BlockRecord[] = [];
    for (const key of [...agent.blockKeys, ...agent.inlineBlocks.map((b) => b.key)]) {
      const record = blocks.get(key)!;
      if (!blocksWritten.has(key)) {
        blocksWritten.add(key);
        mutations.push({ op: "put_block", block: record, create: true });
      }
      agentBlocks.push(record);
    }

    const agentToolIds: string[] = [];
    for (const key of agent.toolKeys) {
      const id = toolIds.get(key);
      if (id != null) agentToolIds.push(id);
    }
    for (const [i, name] of agent.toolNames.entries()) {
      const tool = await env.storage.getToolByName(name);
      if (tool === null)
        warnings.add([...agent.loc, "tools", i], `no tool named '${name}' on this server; not attached`);
      else agentToolIds.push(tool.id);
    }

    const agentId = newId("agent", env.rng);
    const { messages, messageIds } = options.stripMessages
      ? { messages: [], messageIds: [] }
      : this.messagesOf(agent, agentId);

    const envVars = new Map(agent.envVars.map((e) => [e.key, e.value]));
    for (const e of options.envVars) envVars.set(e.key, e.value);
    const extra: Record<string, unknown> = { ...agent.extra };
    if (options.projectId !== null) extra.project_id = options.projectId;
    if (envVars.size > 0) {
      extra.tool_exec_environment_variables = [...envVars].map(([key, value]) => ({ key, value }));
    }
    const name = options.name ?? agentName(agent, options);
    const record: Omit<AgentRecord, "block_ids" | "tool_ids"> = {
      id: agentId,
      name,
      agent_type: agent.agentType,
      system: agent.system ?? SYSTEM_PROMPT_DEFAULT,
      description: agent.description,
      metadata: agent.metadata,
      tags: uniqueInOrder(agent.tags),
      llm_config: planned.llmConfig,
      embedding_config: planned.embeddingConfig,
      tool_rules: agent.toolRules,
      message_ids: messageIds,
      extra,
      created_at_ms: nowMs,
      updated_at_ms: nowMs,
    };
    await env.storage.commit([
      { op: "put_agent", agent: record, create: true },
      ...mutations,
      ...agentBlocks.map((b): Mutation => ({ op: "attach_block", agent_id: agentId, block_id: b.id })),
      ...uniqueInOrder(agentToolIds).map(
        (id): Mutation => ({ op: "attach_tool", agent_id: agentId, tool_id: id }),
      ),
      ...messages.map((message): Mutation => ({ op: "put_message", message })),
    ]);
    return agentId;
  }

  /** The agent's messages with new ids, and its in-context ids mapped to them. */
  private messagesOf(agent: FileAgent, agentId: string): { messages: MessageRecord[]; messageIds: string[] } {
    const { rng } = this.deps.env;
    const byKey = new Map(agent.messages.map((m) => [m.key, m]));
    const head = agent.inContextKeys[0] === undefined ? undefined : byKey.get(agent.inContextKeys[0]);
    // Letta's compiled system prompt: Kelpie compiles its own for every step.
    const systemKey = head?.role === "system" ? head.key : null;
    const ids = new Map<string, string>();
    const messages: MessageRecord[] = [];
    for (const m of agent.messages) {
      if (m.key === systemKey) continue;
      const id = newId("message", rng);
      ids.set(m.key, id);
      messages.push(this.messageRecord(m, id, agentId));
    }
    const messageIds = agent.inContextKeys.filter((k) => k !== systemKey).map((k) => ids.get(k)!);
    return { messages, messageIds };
  }

  private messageRecord(m: FileMessage, id: string, agentId: string): MessageRecord {
    const failed = (m.toolReturns ?? []).some(
      (r) => r !== null && typeof r === "object" && (r as { status?: unknown }).status === "error",
    );
    return {
      id,
      agent_id: agentId,
      role: m.role,
      content: m.content,
      name: m.name,
      tool_calls: m.toolCalls,
      tool_call_id: m.toolCallId,
      tool_returns: m.toolReturns,
      step_id: null,
      run_id: null,
      model: m.model,
      otid: m.otid,
      sender_id: m.senderId,
      group_id: m.groupId,
      is_err: m.role === "tool" && failed ? true : null,
      created_at_ms: m.createdAtMs,
    };
  }

  /** Makes the agent's archives (once per file archive), attaches them and fills in their passages. */
  private async importArchives(
    agent: FileAgent,
    agentId: string,
    agentIds: string[],
    file: AgentFileModel,
    made: Map<string, ArchiveRecord>,
  ): Promise<void> {
    const { archival } = this.deps;
    for (const key of agent.archiveKeys) {
      let archive = made.get(key);
      if (archive === undefined) {
        const fileArchive = file.archives.get(key)!;
        const ownerIndex = file.agents.findIndex((a) => a.key === fileArchive.ownerKey);
        archive = await archival.createArchive(
          {
            name: fileArchive.name,
            description: fileArchive.description,
            embedding_config: fileArchive.embeddingConfig,
            metadata: fileArchive.metadata,
            owner_agent_id: ownerIndex < 0 ? null : agentIds[ownerIndex]!,
          },
          fileArchive.loc,
        );
        made.set(key, archive);
        await this.insertPassages(archive.id, fileArchive);
      }
      await archival.relation(agentId, archive.id, "attach");
    }
  }

  private async insertPassages(archiveId: string, fileArchive: FileArchive): Promise<void> {
    const passages = fileArchive.passages;
    for (let start = 0; start < passages.length; start += PASSAGES_PER_BATCH_MAX) {
      const batch = passages.slice(start, start + PASSAGES_PER_BATCH_MAX);
      await this.deps.archival.insert(
        archiveId,
        batch.map((p) => ({
          text: p.text,
          tags: p.tags,
          metadata: p.metadata,
          ...(p.createdAtMs === null ? {} : { created_at_ms: p.createdAtMs }),
        })),
        [...fileArchive.loc, "passages", start],
      );
    }
  }

  // --- export -------------------------------------------------------------------------------

  /** The agent as a Letta AgentFileSchema (v2) file, with Kelpie's archives extension. */
  async export(agentId: string, options: ExportOptions): Promise<Record<string, unknown>> {
    const { env, agents } = this.deps;
    const { agent, blocks, tools } = await agents.view(agentId);
    const nowMs = env.clock.nowMs();
    const agentKey = "agent-0";
    // The file's ids are positional: the exporting server's ids stay private and files diff well.
    const blockKeys = new Map(blocks.map((b, i) => [b.id, `block-${i}`]));
    const toolKeys = new Map(tools.map((t, i) => [t.id, `tool-${i}`]));

    const serverIds = uniqueInOrder(
      tools.flatMap((t) => (typeof t.metadata.mcp_server_id === "string" ? [t.metadata.mcp_server_id] : [])),
    );
    const servers = (await Promise.all(serverIds.map((id) => env.storage.getMcpServer(id)))).filter(
      (s): s is McpServerRecord => s !== null,
    );
    const serverKeys = new Map(servers.map((s, i) => [s.id, `mcp_server-${i}`]));

    const stored = options.scrubMessages ? [] : await this.allMessages(agentId);
    const recallCount = stored.length;
    const system = compileSystemMessage(agent.system, blocks, {
      nowMs,
      blocksUpdatedAtMs: Math.max(0, ...blocks.map((b) => b.updated_at_ms)),
      recallMessagesCount: recallCount,
      archivalPassagesCount: 0,
    });
    const messageKeys = new Map<string, string>();
    const messages: Record<string, unknown>[] = [];
    if (!options.scrubMessages) {
      messages.push(this.exportMessage(this.systemMessage(agentId, system, nowMs), "message-0", agentKey));
      for (const m of stored) {
        const key = `message-${messages.length}`;
        messageKeys.set(m.id, key);
        messages.push(this.exportMessage(m, key, agentKey));
      }
    }
    const inContext = options.scrubMessages
      ? []
      : [
          "message-0",
          ...agent.message_ids.map((id) => {
            const key = messageKeys.get(id);
            if (key === undefined)
              throw new KelpieError("INTERNAL", `in-context message ${id} is not among the agent's messages`);
            return key;
          }),
        ];

    const archives = await this.exportArchives(agentId, agentKey);
    const extra = agent.extra;
    const envVars = (list: unknown) =>
      Array.isArray(list) && list.length > 0
        ? // Values are secrets: the file names the variables and leaves them empty, as Letta's does.
          Object.fromEntries(list.map((e) => [String((e as { key?: unknown }).key), ""]))
        : null;
    const agentJson: Record<string, unknown> = {
      name: agent.name,
      memory_blocks: [],
      tools: [],
      tool_ids: tools.map((t) => toolKeys.get(t.id)!),
      source_ids: [],
      folder_ids: [],
      block_ids: blocks.map((b) => blockKeys.get(b.id)!),
      tool_rules: agent.tool_rules,
      tags: agent.tags,
      system: agent.system,
      agent_type: agent.agent_type,
      llm_config: agent.llm_config,
      embedding_config: agent.embedding_config,
      initial_message_sequence: null,
      include_base_tools: false,
      include_multi_agent_tools: false,
      include_base_tool_rules: false,
      include_default_source: false,
      description: agent.description,
      metadata: agent.metadata,
      model: null,
      embedding: null,
      context_window_limit: null,
      embedding_chunk_size: null,
      max_tokens: null,
      max_reasoning_tokens: null,
      enable_reasoner: false,
      reasoning: null,
      from_template: null,
      template: false,
      project: null,
      tool_exec_environment_variables: envVars(extra.tool_exec_environment_variables) ?? {},
      secrets: envVars(extra.secrets),
      memory_variables: null,
      project_id: extra.project_id ?? null,
      template_id: extra.template_id ?? null,
      base_template_id: extra.base_template_id ?? null,
      identity_ids: extra.identity_ids ?? null,
      message_buffer_autoclear: extra.message_buffer_autoclear ?? false,
      enable_sleeptime: extra.enable_sleeptime ?? false,
      response_format: extra.response_format ?? null,
      timezone: extra.timezone ?? "UTC",
      max_files_open: extra.max_files_open ?? null,
      per_file_view_window_char_limit: extra.per_file_view_window_char_limit ?? null,
      hidden: extra.hidden ?? null,
      ...(extra.parallel_tool_calls === undefined ? {} : { parallel_tool_calls: extra.parallel_tool_calls }),
      ...(extra.model_settings === undefined ? {} : { model_settings: extra.model_settings }),
      ...(extra.compaction_settings === undefined ? {} : { compaction_settings: extra.compaction_settings }),
      id: agentKey,
      in_context_message_ids: inContext,
      messages,
      files_agents: [],
      group_ids: [],
      ...(archives.length === 0 ? {} : { archive_ids: archives.map((a) => a.id) }),
    };
    return {
      agents: [agentJson],
      groups: [],
      blocks: blocks.map((b) => this.exportBlock(b, blockKeys.get(b.id)!)),
      files: [],
      sources: [],
      tools: tools.map((t) => this.exportTool(t, toolKeys.get(t.id)!, serverKeys)),
      mcp_servers: servers.map((s) => this.exportMcpServer(s, serverKeys.get(s.id)!)),
      skills: [],
      ...(archives.length === 0 ? {} : { archives }),
      metadata: { exported_by: `kelpie ${this.deps.version}` },
      created_at: isoDate(nowMs),
    };
  }

  private systemMessage(agentId: string, text: string, nowMs: number): MessageRecord {
    return {
      id: "",
      agent_id: agentId,
      role: "system",
      content: [{ type: "text", text }],
      name: null,
      tool_calls: null,
      tool_call_id: null,
      tool_returns: null,
      step_id: null,
      run_id: null,
      model: null,
      otid: null,
      sender_id: null,
      group_id: null,
      is_err: null,
      created_at_ms: nowMs,
    };
  }

  /** Every message of the agent, oldest first; an agent too big for one file is refused, not cut. */
  private async allMessages(agentId: string): Promise<MessageRecord[]> {
    const { storage } = this.deps.env;
    const count = await storage.countMessages(agentId);
    if (count > AGENT_FILE_MESSAGES_PER_AGENT_MAX) {
      throw new KelpieError(
        "BAD_REQUEST",
        `agent ${agentId} has ${count} messages; an agent file holds at most ${AGENT_FILE_MESSAGES_PER_AGENT_MAX} (export with scrub_messages=true)`,
      );
    }
    const out: MessageRecord[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await storage.listMessages(agentId, { limit: PAGE_LIMIT_MAX, order: "asc", after });
      out.push(...page);
      if (page.length < PAGE_LIMIT_MAX) break;
      after = page.at(-1)!.id;
    }
    return out;
  }

  private exportMessage(m: MessageRecord, key: string, agentKey: string): Record<string, unknown> {
    return {
      type: "message",
      role: m.role,
      content: m.content,
      name: m.name,
      otid: m.otid,
      sender_id: m.sender_id,
      batch_item_id: null,
      group_id: m.group_id,
      id: key,
      model: m.model,
      agent_id: agentKey,
      tool_calls: m.tool_calls,
      tool_call_id: m.tool_call_id,
      tool_returns: m.tool_returns ?? [],
      created_at: isoDate(m.created_at_ms),
      approve: null,
      approval_request_id: null,
      denial_reason: null,
    };
  }

  private exportBlock(b: BlockRecord, key: string): Record<string, unknown> {
    return {
      value: b.value,
      limit: b.limit,
      project_id: b.project_id,
      template_name: b.template_name,
      is_template: b.is_template,
      template_id: null,
      base_template_id: null,
      deployment_id: null,
      entity_id: null,
      preserve_on_migration: false,
      label: b.label,
      read_only: b.read_only,
      description: b.description,
      metadata: b.metadata,
      hidden: b.hidden,
      tags: b.tags,
      id: key,
    };
  }

  private exportTool(t: ToolRecord, key: string, serverKeys: Map<string, string>): Record<string, unknown> {
    let metadata = t.metadata;
    const serverKey =
      typeof t.metadata.mcp_server_id === "string" ? serverKeys.get(t.metadata.mcp_server_id) : undefined;
    if (serverKey !== undefined) {
      // Kelpie's keys and Letta's (`mcp.server_name`), both naming the file's server.
      metadata = {
        ...t.metadata,
        mcp_server_id: serverKey,
        mcp: { server_name: t.metadata.mcp_server_name, server_id: serverKey },
      };
    }
    return {
      id: key,
      tool_type: t.tool_type,
      description: t.description,
      source_type: t.source_type,
      name: t.name,
      tags: t.tags,
      source_code: t.source_code,
      json_schema: t.json_schema,
      args_json_schema: t.args_json_schema,
      return_char_limit: t.return_char_limit,
      pip_requirements: t.pip_requirements,
      npm_requirements: t.npm_requirements,
      default_requires_approval: t.default_requires_approval,
      enable_parallel_execution: t.enable_parallel_execution,
      created_by_id: null,
      last_updated_by_id: null,
      metadata_: metadata,
      project_id: null,
    };
  }

  private exportMcpServer(s: McpServerRecord, key: string): Record<string, unknown> {
    const c = s.config;
    const env = c.env && typeof c.env === "object" ? (c.env as Record<string, unknown>) : null;
    return {
      id: key,
      server_type: s.mcp_server_type,
      server_name: s.server_name,
      server_url: s.mcp_server_type === "stdio" ? null : (c.server_url ?? null),
      // Credentials (auth tokens, headers, env values) stay on this server.
      stdio_config:
        s.mcp_server_type === "stdio"
          ? {
              command: c.command,
              args: c.args ?? [],
              env: env === null ? null : Object.fromEntries(Object.keys(env).map((k) => [k, ""])),
            }
          : null,
      metadata_: {},
    };
  }

  private async exportArchives(agentId: string, agentKey: string): Promise<Record<string, unknown>[]> {
    const { storage } = this.deps.env;
    const archives = await storage.tiers.listAgentArchives(agentId);
    const out: Record<string, unknown>[] = [];
    for (const [i, archive] of archives.entries()) {
      const count = await storage.tiers.countPassages([archive.id]);
      if (count > AGENT_FILE_PASSAGES_PER_ARCHIVE_MAX) {
        throw new KelpieError(
          "BAD_REQUEST",
          `archive ${archive.id} has ${count} passages; an agent file holds at most ${AGENT_FILE_PASSAGES_PER_ARCHIVE_MAX} per archive`,
        );
      }
      const passages: Record<string, unknown>[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await this.deps.archival.list([archive.id], {
          limit: PAGE_LIMIT_MAX,
          order: "asc",
          after,
        });
        for (const p of page) {
          passages.push({
            text: p.text,
            tags: p.tags,
            metadata: p.metadata,
            created_at: isoDate(p.created_at_ms),
          });
        }
        if (page.length < PAGE_LIMIT_MAX) break;
        after = page.at(-1)!.id;
      }
      out.push({
        id: `archive-${i}`,
        name: archive.name,
        description: archive.description,
        embedding_config: archive.embedding_config,
        metadata: archive.metadata,
        owner_agent_id: archive.owner_agent_id === agentId ? agentKey : null,
        passages,
      });
    }
    return out;
  }
}
