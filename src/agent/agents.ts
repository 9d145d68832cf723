// Agents as a resource: create, read, update, delete, and the relations to blocks and tools.
// Changes to an existing agent run as ops in its mailbox and commit with its fencing token.
import type { Env } from "../core/env.ts";
import { invalidField, isKelpieError, KelpieError, notFound } from "../core/errors.ts";
import { checkMetadata, checkName, checkSystemPrompt, checkTags } from "../core/field-limits.ts";
import { newId } from "../core/ids.ts";
import { type BlockFields, newBlock, updatedBlock } from "../memory/blocks.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { AgentRecord, BlockRecord, Mutation, ToolRecord } from "../storage/types.ts";
import { AGENT_TYPES, builtinTool, defaultToolNames } from "../tools/builtins.ts";
import { AGENT_TYPE_DEFAULT, SYSTEM_PROMPT_DEFAULT } from "./defaults.ts";
import { ENV_VAR_FIELDS, envVarsInput } from "./env-vars.ts";

/** Resolves a Letta model handle and/or llm_config (and the same for embeddings) to full configs. */
export interface ModelResolver {
  llmConfig(handle: string | undefined, config: Record<string, unknown> | undefined): Record<string, unknown>;
  embeddingConfig(
    handle: string | undefined,
    config: Record<string, unknown> | undefined,
  ): Record<string, unknown>;
}

export interface CreateAgentInput {
  name?: string;
  description?: string | null;
  system?: string | null;
  agent_type?: string;
  memory_blocks?: BlockFields[];
  block_ids?: string[];
  tool_ids?: string[];
  tools?: string[];
  include_base_tools?: boolean;
  include_multi_agent_tools?: boolean;
  tags?: string[];
  metadata?: Record<string, unknown> | null;
  model?: string | null;
  llm_config?: Record<string, unknown> | null;
  embedding?: string | null;
  embedding_config?: Record<string, unknown> | null;
  tool_rules?: unknown[] | null;
  context_window_limit?: number | null;
  max_tokens?: number | null;
  [extra: string]: unknown;
}

export interface UpdateAgentInput {
  name?: string;
  description?: string | null;
  system?: string;
  tags?: string[];
  metadata?: Record<string, unknown> | null;
  model?: string | null;
  llm_config?: Record<string, unknown> | null;
  embedding?: string | null;
  embedding_config?: Record<string, unknown> | null;
  tool_rules?: unknown[] | null;
  message_ids?: string[];
  tool_ids?: string[];
  block_ids?: string[];
  [extra: string]: unknown;
}

/** An agent with its relations loaded: what the API renders as Letta's AgentState. */
/** What deleting an agent needs of its archives (the archival service). */
export interface AgentArchives {
  /** The archives the agent made for itself: deleted with it unless another agent uses them. */
  ownedArchiveIds(agentId: string): Promise<string[]>;
  /** Drops the indexes of those of the archives that are gone. */
  forgetDeleted(archiveIds: string[]): Promise<void>;
}

export interface AgentView {
  agent: AgentRecord;
  blocks: BlockRecord[];
  tools: ToolRecord[];
}

/** AgentState fields we keep as given when a client sends them. */
export const EXTRA_FIELDS = [
  "timezone",
  "response_format",
  "message_buffer_autoclear",
  "enable_sleeptime",
  "max_files_open",
  "per_file_view_window_char_limit",
  "hidden",
  "project_id",
  "template_id",
  "base_template_id",
  "identity_ids",
  "tool_exec_environment_variables",
  "secrets",
  "model_settings",
  "compaction_settings",
  "parallel_tool_calls",
  "last_run_completion",
  "last_run_duration_ms",
  "last_stop_reason",
] as const;

function pickExtra(
  input: Record<string, unknown>,
  stored: Record<string, unknown> = {},
): Record<string, unknown> {
  const extra: Record<string, unknown> = {};
  for (const key of EXTRA_FIELDS) if (input[key] !== undefined) extra[key] = input[key];
  // Secrets: checked and kept in one form; a masked value sent back keeps the stored one.
  for (const key of ENV_VAR_FIELDS) {
    if (input[key] !== undefined) extra[key] = envVarsInput(input[key], stored[key], ["body", key]);
  }
  return extra;
}

/** The bounded fields of an agent, from a request or an agent file; `loc` is where they sit. */
export function checkAgentFields(
  fields: {
    name?: string | null;
    system?: string | null;
    metadata?: unknown;
    tags?: readonly unknown[] | null;
  },
  loc: (string | number)[],
): void {
  checkName(fields.name, [...loc, "name"]);
  checkSystemPrompt(fields.system, [...loc, "system"]);
  checkMetadata(fields.metadata, [...loc, "metadata"]);
  checkTags(fields.tags, [...loc, "tags"]);
}

function uniqueInOrder(ids: string[]): string[] {
  return [...new Set(ids)];
}

export class AgentService {
  constructor(
    private readonly env: Env,
    private readonly runtime: Runtime,
    readonly models: ModelResolver,
  ) {}

  async create(input: CreateAgentInput): Promise<AgentView> {
    const { clock, rng, storage } = this.env;
    const nowMs = clock.nowMs();
    const agentType = input.agent_type ?? AGENT_TYPE_DEFAULT;
    checkAgentFields(input, ["body"]);
    if (!AGENT_TYPES.includes(agentType)) {
      throw invalidField(["body", "agent_type"], `must be one of ${AGENT_TYPES.join(", ")}`, "enum");
    }
    const newBlocks = (input.memory_blocks ?? []).map((fields, i) =>
      newBlock(fields, nowMs, rng, ["body", "memory_blocks", i]),
    );
    const labels = new Set<string>();
    for (const [i, block] of newBlocks.entries()) {
      if (labels.has(block.label)) {
        throw invalidField(["body", "memory_blocks", i, "label"], `duplicate block label '${block.label}'`);
      }
      labels.add(block.label);
    }
    const existingBlockIds = uniqueInOrder(input.block_ids ?? []);
    const existingBlocks = await storage.getBlocks(existingBlockIds);
    if (existingBlocks.length !== existingBlockIds.length) {
      const found = new Set(existingBlocks.map((b) => b.id));
      throw notFound("block", existingBlockIds.find((id) => !found.has(id))!);
    }
    const toolIds = await this.resolveTools(input, agentType);
    const llmConfig = this.models.llmConfig(
      input.model ?? undefined,
      this.withLlmOverrides(input.llm_config ?? undefined, input),
    );
    const embeddingConfig = this.models.embeddingConfig(
      input.embedding ?? undefined,
      input.embedding_config ?? undefined,
    );
    const agent: Omit<AgentRecord, "block_ids" | "tool_ids"> = {
      id: newId("agent", rng),
      name: input.name ?? `agent-${rng.uuid().slice(0, 8)}`,
      agent_type: agentType,
      system: input.system ?? SYSTEM_PROMPT_DEFAULT,
      description: input.description ?? null,
      metadata: input.metadata ?? {},
      tags: uniqueInOrder(input.tags ?? []),
      llm_config: llmConfig,
      embedding_config: embeddingConfig,
      tool_rules: input.tool_rules ?? [],
      message_ids: [],
      extra: pickExtra(input),
      created_at_ms: nowMs,
      updated_at_ms: nowMs,
    };
    const mutations: Mutation[] = [
      { op: "put_agent", agent, create: true },
      ...newBlocks.map((block): Mutation => ({ op: "put_block", block, create: true })),
      ...[...newBlocks, ...existingBlocks].map(
        (b): Mutation => ({ op: "attach_block", agent_id: agent.id, block_id: b.id }),
      ),
      ...toolIds.map((id): Mutation => ({ op: "attach_tool", agent_id: agent.id, tool_id: id })),
    ];
    await storage.commit(mutations);
    return this.view(agent.id);
  }

  private withLlmOverrides(
    config: Record<string, unknown> | undefined,
    input: CreateAgentInput | UpdateAgentInput,
  ): Record<string, unknown> | undefined {
    const overrides: Record<string, unknown> = {};
    if (typeof input.context_window_limit === "number") overrides.context_window = input.context_window_limit;
    if (typeof input.max_tokens === "number") overrides.max_tokens = input.max_tokens;
    if (Object.keys(overrides).length === 0) return config;
    return { ...(config ?? {}), ...overrides };
  }

  /** Tool ids for a new agent: the defaults for its type, then `tools` by name, then `tool_ids`. */
  private async resolveTools(input: CreateAgentInput, agentType: string): Promise<string[]> {
    const { storage } = this.env;
    const names = defaultToolNames(agentType, {
      includeBaseTools: input.include_base_tools ?? true,
      includeMultiAgentTools: input.include_multi_agent_tools ?? false,
    });
    const ids: string[] = [];
    for (const name of names) {
      const tool = await storage.getToolByName(name);
      if (tool === null) throw new KelpieError("INTERNAL", `built-in tool ${name} is missing from storage`);
      ids.push(tool.id);
    }
    for (const [i, name] of (input.tools ?? []).entries()) {
      const tool = await storage.getToolByName(name);
      if (tool === null) throw invalidField(["body", "tools", i], `no tool named '${name}'`);
      ids.push(tool.id);
    }
    const explicit = input.tool_ids ?? [];
    const found = await storage.getTools(explicit);
    if (found.length !== new Set(explicit).size) {
      const have = new Set(found.map((t) => t.id));
      throw notFound("tool", explicit.find((id) => !have.has(id))!);
    }
    ids.push(...explicit);
    return uniqueInOrder(ids);
  }

  async get(agentId: string): Promise<AgentView> {
    return this.view(agentId);
  }

  /** Loads an agent with its blocks and tools from committed state. */
  async view(agentId: string): Promise<AgentView> {
    const { storage } = this.env;
    const agent = await storage.getAgent(agentId);
    if (agent === null) throw notFound("agent", agentId);
    const [blocks, tools] = await Promise.all([
      storage.getBlocks(agent.block_ids),
      storage.getTools(agent.tool_ids),
    ]);
    return { agent, blocks, tools };
  }

  async views(agents: AgentRecord[]): Promise<AgentView[]> {
    const { storage } = this.env;
    return Promise.all(
      agents.map(async (agent) => {
        const [blocks, tools] = await Promise.all([
          storage.getBlocks(agent.block_ids),
          storage.getTools(agent.tool_ids),
        ]);
        return { agent, blocks, tools };
      }),
    );
  }

  async update(agentId: string, input: UpdateAgentInput): Promise<AgentView> {
    checkAgentFields(input, ["body"]);
    return this.runtime.invoke(
      agentId,
      async (ctx) => {
        const { storage, clock } = this.env;
        const current = await storage.getAgent(agentId);
        if (current === null) throw notFound("agent", agentId);
        const { block_ids: currentBlockIds, tool_ids: currentToolIds, ...stored } = current;
        const next = {
          ...stored,
          extra: { ...stored.extra, ...pickExtra(input, stored.extra) },
          updated_at_ms: clock.nowMs(),
        };
        if (input.name !== undefined) next.name = input.name;
        if (input.description !== undefined) next.description = input.description;
        if (input.system !== undefined) next.system = input.system;
        if (input.tags !== undefined) next.tags = uniqueInOrder(input.tags);
        if (input.metadata !== undefined) next.metadata = input.metadata ?? {};
        if (input.tool_rules !== undefined) next.tool_rules = input.tool_rules ?? [];
        if (input.message_ids !== undefined) next.message_ids = input.message_ids;
        if (
          input.model != null ||
          input.llm_config != null ||
          typeof input.context_window_limit === "number"
        ) {
          next.llm_config = this.models.llmConfig(
            input.model ?? undefined,
            this.withLlmOverrides(
              input.llm_config ?? (input.model ? undefined : (stored.llm_config ?? undefined)),
              input,
            ),
          );
        }
        if (input.embedding != null || input.embedding_config != null) {
          next.embedding_config = this.models.embeddingConfig(
            input.embedding ?? undefined,
            input.embedding_config ?? undefined,
          );
        }
        const mutations: Mutation[] = [{ op: "put_agent", agent: next, create: false }];
        if (input.block_ids !== undefined) {
          mutations.push(
            ...(await this.relink("block", agentId, currentBlockIds, uniqueInOrder(input.block_ids))),
          );
        }
        if (input.tool_ids !== undefined) {
          mutations.push(
            ...(await this.relink("tool", agentId, currentToolIds, uniqueInOrder(input.tool_ids))),
          );
        }
        await storage.commit(mutations, { fence: ctx.fence });
        return this.view(agentId);
      },
      "update_agent",
    );
  }

  private async relink(kind: "block" | "tool", agentId: string, current: string[], wanted: string[]) {
    const { storage } = this.env;
    const found = kind === "block" ? await storage.getBlocks(wanted) : await storage.getTools(wanted);
    if (found.length !== wanted.length) {
      const have = new Set(found.map((r) => r.id));
      throw notFound(kind, wanted.find((id) => !have.has(id))!);
    }
    const keep = new Set(wanted);
    const mutations: Mutation[] = [];
    for (const id of current) {
      if (!keep.has(id)) {
        mutations.push(
          kind === "block"
            ? { op: "detach_block", agent_id: agentId, block_id: id }
            : { op: "detach_tool", agent_id: agentId, tool_id: id },
        );
      }
    }
    const had = new Set(current);
    for (const id of wanted) {
      if (!had.has(id)) {
        mutations.push(
          kind === "block"
            ? { op: "attach_block", agent_id: agentId, block_id: id }
            : { op: "attach_tool", agent_id: agentId, tool_id: id },
        );
      }
    }
    return mutations;
  }

  /**
   * Deletes the agent — its relations, messages, runs, conversations, working memory, archive
   * attachments, and the archives it made for itself that no other agent uses — in one commit,
   * inside its mailbox: all of it or, when the commit fails, none (the error says so).
   */
  async delete(agentId: string, archives?: AgentArchives): Promise<void> {
    const owned = await this.runtime.invoke(
      agentId,
      async (ctx) => {
        const owned = (await archives?.ownedArchiveIds(agentId)) ?? [];
        const mutations: Mutation[] = [{ op: "delete_agent", agent_id: agentId }];
        if (owned.length > 0) mutations.push({ op: "delete_unattached_archives", archive_ids: owned });
        try {
          await this.env.storage.commit(mutations, { fence: ctx.fence });
        } catch (err) {
          if (!isKelpieError(err) || err.code === "AGENT_NOT_FOUND") throw err;
          throw new KelpieError(
            err.code,
            `agent ${agentId} was not deleted (nothing changed): ${err.message}`,
            {
              cause: err,
              ...(err.issues ? { issues: err.issues } : {}),
            },
          );
        }
        ctx.deactivateAfter();
        return owned;
      },
      "delete_agent",
    );
    await archives?.forgetDeleted(owned);
  }

  /** Attaches or detaches a block or tool, in the agent's mailbox. */
  async relation(
    agentId: string,
    kind: "block" | "tool",
    action: "attach" | "detach",
    targetId: string,
  ): Promise<AgentView> {
    return this.runtime.invoke(
      agentId,
      async (ctx) => {
        const op = `${action}_${kind}` as const;
        const mutation: Mutation =
          kind === "block"
            ? { op: op as "attach_block" | "detach_block", agent_id: agentId, block_id: targetId }
            : { op: op as "attach_tool" | "detach_tool", agent_id: agentId, tool_id: targetId };
        await this.env.storage.commit([mutation], { fence: ctx.fence });
        return this.view(agentId);
      },
      `${action}_${kind}`,
    );
  }

  /** The agent's block with this label. */
  async blockByLabel(agentId: string, label: string): Promise<BlockRecord> {
    const { blocks } = await this.view(agentId);
    const block = blocks.find((b) => b.label === label);
    if (block === undefined)
      throw new KelpieError("BLOCK_NOT_FOUND", `Block with label '${label}' not found`);
    return block;
  }

  /** Edits the agent's block with this label, in the agent's mailbox. */
  async updateBlockByLabel(agentId: string, label: string, fields: BlockFields): Promise<BlockRecord> {
    return this.runtime.invoke(
      agentId,
      async (ctx) => {
        const block = await this.blockByLabel(agentId, label);
        const next = updatedBlock(block, fields, this.env.clock.nowMs(), ["body"]);
        await this.env.storage.commit([{ op: "put_block", block: next, create: false }], {
          fence: ctx.fence,
        });
        return next;
      },
      "update_block",
    );
  }

  /** Whether a tool name is a Letta built-in (for schema rendering). */
  isBuiltin(name: string): boolean {
    return builtinTool(name) !== undefined;
  }
}
