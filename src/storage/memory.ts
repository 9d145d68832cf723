// The in-memory engine: the reference semantics of the Storage contract, used by tests and the
// simulator. A commit stages every mutation on copies and swaps them in only when all succeed.
// It also keeps cluster membership and agent leases as PostgreSQL does (postgres-cluster.ts), on
// its own clock (the "database's"), so the simulator can run several nodes over one instance.
import { assert } from "../core/assert.ts";
import { SystemClock } from "../core/clock.ts";
import { OUTBOX_ENTRIES_PER_AGENT_MAX } from "../core/constants.ts";
import { invalidField, KelpieError, notFound, outboxFull } from "../core/errors.ts";
import {
  applyTier,
  copyTierTables,
  emptyTierTables,
  MemoryTiers,
  TIER_OPS,
  type TierTables,
} from "./memory-tiers.ts";
import type {
  AgentListQuery,
  AgentRecord,
  ApiKeyRecord,
  AuditRecord,
  BlockListQuery,
  BlockRecord,
  ClusterNode,
  ClusterStore,
  CommitOptions,
  ConversationRecord,
  IdempotentResponse,
  LeaseAcquisition,
  LeaseOwner,
  McpServerRecord,
  MessageRecord,
  Mutation,
  NodeIdentity,
  OutboxRecord,
  PageQuery,
  RunRecord,
  StepRecord,
  Storage,
  ToolListQuery,
  ToolRecord,
} from "./types.ts";

type StoredAgent = Omit<AgentRecord, "block_ids" | "tool_ids">;

interface Row<T> {
  seq: number;
  value: T;
}

interface Tables {
  seq: number;
  agents: Map<string, Row<StoredAgent>>;
  blocks: Map<string, Row<BlockRecord>>;
  tools: Map<string, Row<ToolRecord>>;
  messages: Map<string, Row<MessageRecord>>;
  runs: Map<string, Row<RunRecord>>;
  steps: Map<string, Row<StepRecord>>;
  mcpServers: Map<string, Row<McpServerRecord>>;
  apiKeys: Map<string, Row<ApiKeyRecord>>;
  audit: Map<string, Row<AuditRecord>>;
  idempotent: Map<string, Row<IdempotentResponse>>;
  conversations: Map<string, Row<ConversationRecord>>;
  outbox: Map<string, Row<OutboxRecord>>;
  agentBlocks: Map<string, string[]>;
  agentTools: Map<string, string[]>;
  fences: Map<string, FenceRow>;
  /** Archival and working memory; copied only by commits that change them. */
  tiers: TierTables;
}

/**
 * An agent's fence row (agent_fences): its token and, when a cluster node leases the agent, the
 * holder and the lease's expiry in database time. Rows are replaced, never changed in place.
 */
interface FenceRow {
  token: number;
  node_id: string | null;
  incarnation: number | null;
  lease_expires_at: number | null;
}

/** A membership row (cluster_nodes); times are the database's. */
interface NodeRow {
  node_id: string;
  advertise_url: string;
  incarnation: number;
  heartbeat_at: number;
  started_at: number;
  left_at: number | null;
}

export interface MemoryStorageOptions {
  /** The database's clock for membership and leases (the simulator's global time); default the system's. */
  nowMs?: () => number;
}

const clone = <T>(value: T): T => structuredClone(value);

function copyTables(t: Tables): Tables {
  return {
    seq: t.seq,
    agents: new Map(t.agents),
    blocks: new Map(t.blocks),
    tools: new Map(t.tools),
    messages: new Map(t.messages),
    runs: new Map(t.runs),
    steps: new Map(t.steps),
    mcpServers: new Map(t.mcpServers),
    apiKeys: new Map(t.apiKeys),
    audit: new Map(t.audit),
    idempotent: new Map(t.idempotent),
    conversations: new Map(t.conversations),
    outbox: new Map(t.outbox),
    agentBlocks: new Map(t.agentBlocks),
    agentTools: new Map(t.agentTools),
    fences: new Map(t.fences),
    tiers: t.tiers,
  };
}

/** Orders rows by seq for the query and applies the after/before cursors and the limit. */
export function paginate<T extends { id: string }>(
  rows: Row<T>[],
  query: PageQuery,
  all: Map<string, Row<T>>,
): T[] {
  const sorted = [...rows].sort((a, b) => (query.order === "asc" ? a.seq - b.seq : b.seq - a.seq));
  const cursorSeq = (field: "after" | "before", id: string): number => {
    const row = all.get(id);
    if (row === undefined) throw invalidField(["query", field], `no item with id '${id}'`);
    return row.seq;
  };
  let result = sorted;
  if (query.after !== undefined) {
    const seq = cursorSeq("after", query.after);
    result = result.filter((r) => (query.order === "asc" ? r.seq > seq : r.seq < seq));
  }
  if (query.before !== undefined) {
    const seq = cursorSeq("before", query.before);
    result = result.filter((r) => (query.order === "asc" ? r.seq < seq : r.seq > seq));
  }
  return result.slice(0, query.limit).map((r) => clone(r.value));
}

const includesFolded = (haystack: string | null | undefined, needle: string): boolean =>
  (haystack ?? "").toLowerCase().includes(needle.toLowerCase());

export class MemoryStorage implements Storage {
  readonly engine = "memory" as const;
  /** Membership and leases, as on PostgreSQL; unused (and with no effect) on a single node. */
  readonly cluster: ClusterStore;
  private readonly nowMs: () => number;
  private tables: Tables = {
    seq: 0,
    agents: new Map(),
    blocks: new Map(),
    tools: new Map(),
    messages: new Map(),
    runs: new Map(),
    steps: new Map(),
    mcpServers: new Map(),
    apiKeys: new Map(),
    audit: new Map(),
    idempotent: new Map(),
    conversations: new Map(),
    outbox: new Map(),
    agentBlocks: new Map(),
    agentTools: new Map(),
    fences: new Map(),
    tiers: emptyTierTables(),
  };

  constructor(options: MemoryStorageOptions = {}) {
    const system = new SystemClock();
    this.nowMs = options.nowMs ?? (() => system.nowMs());
    this.cluster = new MemoryCluster(() => this.tables.fences, this.nowMs);
  }

  async migrate(): Promise<void> {}

  async close(): Promise<void> {}

  async commit(mutations: Mutation[], options?: CommitOptions): Promise<void> {
    const t = copyTables(this.tables);
    const fence = options?.fence;
    if (fence !== undefined) {
      const row = t.fences.get(fence.agent_id);
      const stored = row?.token ?? 0;
      if (stored !== fence.token) {
        throw new KelpieError(
          "FENCED",
          `agent ${fence.agent_id}: fencing token ${fence.token} is stale (current ${stored})`,
        );
      }
      // A lease that lapsed fences its holder too, even before anyone takes it over (as on
      // PostgreSQL); a row that never had a lease (a single node's) has no expiry to check.
      if (row !== undefined && row.lease_expires_at !== null && row.lease_expires_at <= this.nowMs()) {
        throw new KelpieError("FENCED", `agent ${fence.agent_id}: the lease of token ${fence.token} lapsed`);
      }
    }
    if (mutations.some((m) => TIER_OPS.has(m.op))) t.tiers = copyTierTables(t.tiers);
    const agentExists = (agentId: string) => t.agents.has(agentId);
    for (const m of mutations) {
      if (m.op !== "delete_agent" && TIER_OPS.has(m.op)) applyTier(t.tiers, m, agentExists);
      else this.apply(t, m);
      if (m.op === "delete_agent") applyTier(t.tiers, m, agentExists);
    }
    this.tables = t;
  }

  readonly tiers = new MemoryTiers(
    () => this.tables.tiers,
    (agentId) => this.tables.agents.get(agentId)?.seq,
  );

  private apply(t: Tables, m: Mutation): void {
    switch (m.op) {
      case "put_agent": {
        const existing = t.agents.get(m.agent.id);
        if (m.create && existing) throw new KelpieError("CONFLICT", `agent ${m.agent.id} already exists`);
        if (!m.create && !existing) throw notFound("agent", m.agent.id);
        t.agents.set(m.agent.id, { seq: existing?.seq ?? ++t.seq, value: clone(m.agent) });
        if (m.create) {
          t.agentBlocks.set(m.agent.id, []);
          t.agentTools.set(m.agent.id, []);
        }
        return;
      }
      case "delete_agent": {
        if (!t.agents.delete(m.agent_id)) throw notFound("agent", m.agent_id);
        t.agentBlocks.delete(m.agent_id);
        t.agentTools.delete(m.agent_id);
        t.fences.delete(m.agent_id);
        for (const [id, row] of t.messages) if (row.value.agent_id === m.agent_id) t.messages.delete(id);
        for (const [id, row] of t.runs) if (row.value.agent_id === m.agent_id) t.runs.delete(id);
        for (const [id, row] of t.steps) if (row.value.agent_id === m.agent_id) t.steps.delete(id);
        for (const [id, row] of t.conversations)
          if (row.value.agent_id === m.agent_id) t.conversations.delete(id);
        for (const [id, row] of t.outbox) if (row.value.agent_id === m.agent_id) t.outbox.delete(id);
        return;
      }
      case "put_block": {
        const existing = t.blocks.get(m.block.id);
        if (m.create && existing) throw new KelpieError("CONFLICT", `block ${m.block.id} already exists`);
        if (!m.create && !existing) throw notFound("block", m.block.id);
        if (existing && m.block.version !== existing.value.version + 1) {
          throw new KelpieError("CONFLICT", `block ${m.block.id} was changed concurrently`);
        }
        t.blocks.set(m.block.id, { seq: existing?.seq ?? ++t.seq, value: clone(m.block) });
        return;
      }
      case "delete_block": {
        if (!t.blocks.delete(m.block_id)) throw notFound("block", m.block_id);
        for (const [agentId, ids] of t.agentBlocks) {
          if (ids.includes(m.block_id))
            t.agentBlocks.set(
              agentId,
              ids.filter((id) => id !== m.block_id),
            );
        }
        return;
      }
      case "put_tool": {
        const existing = t.tools.get(m.tool.id);
        if (m.create && existing) throw new KelpieError("CONFLICT", `tool ${m.tool.id} already exists`);
        if (!m.create && !existing) throw notFound("tool", m.tool.id);
        // MCP tools keep their servers' names (two servers may both have an "echo"); others are unique.
        for (const row of m.tool.tool_type === "external_mcp" ? [] : t.tools.values()) {
          if (
            row.value.name === m.tool.name &&
            row.value.id !== m.tool.id &&
            row.value.tool_type !== "external_mcp"
          ) {
            throw new KelpieError("CONFLICT", `a tool named '${m.tool.name}' already exists`);
          }
        }
        t.tools.set(m.tool.id, { seq: existing?.seq ?? ++t.seq, value: clone(m.tool) });
        return;
      }
      case "delete_tool": {
        if (!t.tools.delete(m.tool_id)) throw notFound("tool", m.tool_id);
        for (const [agentId, ids] of t.agentTools) {
          if (ids.includes(m.tool_id))
            t.agentTools.set(
              agentId,
              ids.filter((id) => id !== m.tool_id),
            );
        }
        return;
      }
      case "attach_block":
      case "detach_block": {
        if (!t.agents.has(m.agent_id)) throw notFound("agent", m.agent_id);
        if (!t.blocks.has(m.block_id)) throw notFound("block", m.block_id);
        const ids = t.agentBlocks.get(m.agent_id) ?? [];
        if (m.op === "attach_block" && !ids.includes(m.block_id))
          t.agentBlocks.set(m.agent_id, [...ids, m.block_id]);
        if (m.op === "detach_block")
          t.agentBlocks.set(
            m.agent_id,
            ids.filter((id) => id !== m.block_id),
          );
        return;
      }
      case "attach_tool":
      case "detach_tool": {
        if (!t.agents.has(m.agent_id)) throw notFound("agent", m.agent_id);
        if (!t.tools.has(m.tool_id)) throw notFound("tool", m.tool_id);
        const ids = t.agentTools.get(m.agent_id) ?? [];
        if (m.op === "attach_tool" && !ids.includes(m.tool_id))
          t.agentTools.set(m.agent_id, [...ids, m.tool_id]);
        if (m.op === "detach_tool")
          t.agentTools.set(
            m.agent_id,
            ids.filter((id) => id !== m.tool_id),
          );
        return;
      }
      case "put_message": {
        if (!t.agents.has(m.message.agent_id)) throw notFound("agent", m.message.agent_id);
        const existing = t.messages.get(m.message.id);
        t.messages.set(m.message.id, { seq: existing?.seq ?? ++t.seq, value: clone(m.message) });
        return;
      }
      case "put_run": {
        if (!t.agents.has(m.run.agent_id)) throw notFound("agent", m.run.agent_id);
        const existing = t.runs.get(m.run.id);
        t.runs.set(m.run.id, { seq: existing?.seq ?? ++t.seq, value: clone(m.run) });
        return;
      }
      case "put_step": {
        const existing = t.steps.get(m.step.id);
        t.steps.set(m.step.id, { seq: existing?.seq ?? ++t.seq, value: clone(m.step) });
        return;
      }
      case "put_mcp_server": {
        const existing = t.mcpServers.get(m.server.id);
        if (m.create && existing)
          throw new KelpieError("CONFLICT", `MCP server ${m.server.id} already exists`);
        if (!m.create && !existing) throw new KelpieError("NOT_FOUND", `MCP server ${m.server.id} not found`);
        for (const row of t.mcpServers.values()) {
          if (row.value.server_name === m.server.server_name && row.value.id !== m.server.id) {
            throw new KelpieError("CONFLICT", `an MCP server named '${m.server.server_name}' already exists`);
          }
        }
        t.mcpServers.set(m.server.id, { seq: existing?.seq ?? ++t.seq, value: clone(m.server) });
        return;
      }
      case "delete_mcp_server": {
        if (!t.mcpServers.delete(m.server_id))
          throw new KelpieError("NOT_FOUND", `MCP server ${m.server_id} not found`);
        return;
      }
      case "put_api_key": {
        for (const row of t.apiKeys.values()) {
          if (row.value.key_sha256 === m.key.key_sha256)
            throw new KelpieError("CONFLICT", "this API key already exists");
        }
        t.apiKeys.set(m.key.id, { seq: ++t.seq, value: clone(m.key) });
        return;
      }
      case "put_idempotent": {
        if (!t.idempotent.has(m.response.key))
          t.idempotent.set(m.response.key, { seq: ++t.seq, value: clone(m.response) });
        return;
      }
      case "put_audit": {
        t.audit.set(m.entry.id, { seq: ++t.seq, value: clone(m.entry) });
        return;
      }
      case "put_conversation": {
        const c = m.conversation;
        const existing = t.conversations.get(c.id);
        if (m.create && existing) throw new KelpieError("CONFLICT", `conversation ${c.id} already exists`);
        if (!m.create && !existing) throw new KelpieError("NOT_FOUND", `Conversation ${c.id} not found`);
        if (!t.agents.has(c.agent_id)) throw notFound("agent", c.agent_id);
        t.conversations.set(c.id, { seq: existing?.seq ?? ++t.seq, value: clone(c) });
        return;
      }
      case "patch_conversation": {
        const row = t.conversations.get(m.conversation_id);
        if (row === undefined)
          throw new KelpieError("NOT_FOUND", `Conversation ${m.conversation_id} not found`);
        const next = { ...clone(row.value), updated_at_ms: m.updated_at_ms };
        if (m.summary !== undefined) next.summary = m.summary;
        if (m.model !== undefined) next.model = m.model;
        t.conversations.set(m.conversation_id, { seq: row.seq, value: next });
        return;
      }
      case "delete_conversation": {
        if (!t.conversations.delete(m.conversation_id)) {
          throw new KelpieError("NOT_FOUND", `Conversation ${m.conversation_id} not found`);
        }
        return;
      }
      case "put_outbox": {
        const e = m.entry;
        const existing = t.outbox.get(e.id);
        if (m.create && existing) throw new KelpieError("CONFLICT", `outbox entry ${e.id} already exists`);
        if (!m.create && !existing) throw new KelpieError("NOT_FOUND", `Outbox entry ${e.id} not found`);
        if (!t.agents.has(e.agent_id)) throw notFound("agent", e.agent_id);
        if (m.create) {
          let held = 0;
          for (const row of t.outbox.values()) if (row.value.agent_id === e.agent_id) held++;
          if (held >= OUTBOX_ENTRIES_PER_AGENT_MAX) throw outboxFull(e.agent_id, held);
        }
        t.outbox.set(e.id, { seq: existing?.seq ?? ++t.seq, value: clone(e) });
        return;
      }
      case "delete_outbox": {
        t.outbox.delete(m.entry_id);
        return;
      }
      case "delete_agent_messages": {
        const keep = new Set(m.except_ids);
        for (const [id, row] of t.messages) {
          if (row.value.agent_id === m.agent_id && !keep.has(id)) t.messages.delete(id);
        }
        return;
      }
    }
  }

  async acquireFence(agentId: string): Promise<number> {
    // As on PostgreSQL: the next token; a lease on the row (if any) is left as it is.
    const row = this.tables.fences.get(agentId);
    const token = (row?.token ?? 0) + 1;
    this.tables.fences.set(agentId, {
      token,
      node_id: row?.node_id ?? null,
      incarnation: row?.incarnation ?? null,
      lease_expires_at: row?.lease_expires_at ?? null,
    });
    return token;
  }

  async currentFence(agentId: string): Promise<number> {
    return this.tables.fences.get(agentId)?.token ?? 0;
  }

  private assembleAgent(row: Row<StoredAgent>): AgentRecord {
    return {
      ...clone(row.value),
      block_ids: [...(this.tables.agentBlocks.get(row.value.id) ?? [])],
      tool_ids: [...(this.tables.agentTools.get(row.value.id) ?? [])],
    };
  }

  async getAgent(id: string): Promise<AgentRecord | null> {
    const row = this.tables.agents.get(id);
    return row ? this.assembleAgent(row) : null;
  }

  async listAgents(query: AgentListQuery): Promise<AgentRecord[]> {
    const rows = [...this.tables.agents.values()].filter(({ value: a }) => {
      if (query.name !== undefined && a.name !== query.name) return false;
      if (query.query_text !== undefined && !includesFolded(a.name, query.query_text)) return false;
      if (query.tags !== undefined && query.tags.length > 0) {
        const has = (tag: string) => a.tags.includes(tag);
        if (query.match_all_tags ? !query.tags.every(has) : !query.tags.some(has)) return false;
      }
      return true;
    });
    const page = paginate(rows, query, this.tables.agents);
    return page.map((a) => this.assembleAgent(this.tables.agents.get(a.id)!));
  }

  async countAgents(): Promise<number> {
    return this.tables.agents.size;
  }

  async getBlock(id: string): Promise<BlockRecord | null> {
    const row = this.tables.blocks.get(id);
    return row ? clone(row.value) : null;
  }

  async getBlocks(ids: string[]): Promise<BlockRecord[]> {
    return ids.flatMap((id) => {
      const row = this.tables.blocks.get(id);
      return row ? [clone(row.value)] : [];
    });
  }

  async listBlocks(query: BlockListQuery): Promise<BlockRecord[]> {
    const rows = [...this.tables.blocks.values()].filter(({ value: b }) => {
      if (query.label !== undefined && b.label !== query.label) return false;
      if (query.templates_only && !b.is_template) return false;
      if (query.name !== undefined && b.template_name !== query.name) return false;
      if (query.label_search !== undefined && !includesFolded(b.label, query.label_search)) return false;
      if (query.value_search !== undefined && !includesFolded(b.value, query.value_search)) return false;
      if (query.description_search !== undefined && !includesFolded(b.description, query.description_search))
        return false;
      return true;
    });
    return paginate(rows, query, this.tables.blocks);
  }

  async countBlocks(): Promise<number> {
    return this.tables.blocks.size;
  }

  async listBlockAgentIds(blockId: string): Promise<string[]> {
    const ids: string[] = [];
    for (const row of [...this.tables.agents.values()].sort((a, b) => a.seq - b.seq)) {
      if (this.tables.agentBlocks.get(row.value.id)?.includes(blockId)) ids.push(row.value.id);
    }
    return ids;
  }

  async getTool(id: string): Promise<ToolRecord | null> {
    const row = this.tables.tools.get(id);
    return row ? clone(row.value) : null;
  }

  async getToolByName(name: string): Promise<ToolRecord | null> {
    const rows = [...this.tables.tools.values()]
      .filter((r) => r.value.name === name)
      .sort(
        (a, b) =>
          Number(a.value.tool_type === "external_mcp") - Number(b.value.tool_type === "external_mcp") ||
          a.seq - b.seq,
      );
    return rows[0] ? clone(rows[0].value) : null;
  }

  async getTools(ids: string[]): Promise<ToolRecord[]> {
    return ids.flatMap((id) => {
      const row = this.tables.tools.get(id);
      return row ? [clone(row.value)] : [];
    });
  }

  async listTools(query: ToolListQuery): Promise<ToolRecord[]> {
    const rows = [...this.tables.tools.values()].filter(({ value: t }) => {
      if (query.name !== undefined && t.name !== query.name) return false;
      if (query.names !== undefined && !query.names.includes(t.name)) return false;
      if (query.tool_ids !== undefined && !query.tool_ids.includes(t.id)) return false;
      if (query.search !== undefined && !includesFolded(t.name, query.search)) return false;
      if (query.tool_types !== undefined && !query.tool_types.includes(t.tool_type)) return false;
      if (query.exclude_tool_types?.includes(t.tool_type)) return false;
      return true;
    });
    return paginate(rows, query, this.tables.tools);
  }

  async countTools(): Promise<number> {
    return this.tables.tools.size;
  }

  async getMessage(id: string): Promise<MessageRecord | null> {
    const row = this.tables.messages.get(id);
    return row ? clone(row.value) : null;
  }

  async getMessages(ids: string[]): Promise<MessageRecord[]> {
    return ids.flatMap((id) => {
      const row = this.tables.messages.get(id);
      return row ? [clone(row.value)] : [];
    });
  }

  async listMessages(agentId: string, query: PageQuery): Promise<MessageRecord[]> {
    const rows = [...this.tables.messages.values()].filter((r) => r.value.agent_id === agentId);
    return paginate(rows, query, this.tables.messages);
  }

  async countMessages(agentId: string): Promise<number> {
    let n = 0;
    for (const row of this.tables.messages.values()) if (row.value.agent_id === agentId) n++;
    return n;
  }

  async listRunMessages(runId: string, query: PageQuery): Promise<MessageRecord[]> {
    const rows = [...this.tables.messages.values()].filter((r) => r.value.run_id === runId);
    return paginate(rows, query, this.tables.messages);
  }

  async getRun(id: string): Promise<RunRecord | null> {
    const row = this.tables.runs.get(id);
    return row ? clone(row.value) : null;
  }

  async listRuns(agentId: string | undefined, query: PageQuery): Promise<RunRecord[]> {
    const rows = [...this.tables.runs.values()].filter(
      (r) => agentId === undefined || r.value.agent_id === agentId,
    );
    return paginate(rows, query, this.tables.runs);
  }

  async listUnfinishedRuns(agentId: string | undefined, limit: number): Promise<RunRecord[]> {
    return [...this.tables.runs.values()]
      .filter(
        (r) =>
          (agentId === undefined || r.value.agent_id === agentId) &&
          (r.value.status === "created" || r.value.status === "running"),
      )
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit)
      .map((r) => clone(r.value));
  }

  async listSteps(runId: string): Promise<StepRecord[]> {
    return [...this.tables.steps.values()]
      .filter((r) => r.value.run_id === runId)
      .sort((a, b) => a.seq - b.seq)
      .map((r) => clone(r.value));
  }

  async getMcpServer(id: string): Promise<McpServerRecord | null> {
    const row = this.tables.mcpServers.get(id);
    return row ? clone(row.value) : null;
  }

  async listMcpServers(): Promise<McpServerRecord[]> {
    return [...this.tables.mcpServers.values()].sort((a, b) => a.seq - b.seq).map((r) => clone(r.value));
  }

  async getConversation(id: string): Promise<ConversationRecord | null> {
    const row = this.tables.conversations.get(id);
    return row === undefined ? null : clone(row.value);
  }

  async listConversations(agentId: string | undefined, query: PageQuery): Promise<ConversationRecord[]> {
    const rows = [...this.tables.conversations.values()].filter(
      (r) => agentId === undefined || r.value.agent_id === agentId,
    );
    return paginate(rows, query, this.tables.conversations).map(clone);
  }

  private outboxRows(agentId: string): Row<OutboxRecord>[] {
    return [...this.tables.outbox.values()].filter((r) => r.value.agent_id === agentId);
  }

  async getOutboxEntry(id: string): Promise<OutboxRecord | null> {
    const row = this.tables.outbox.get(id);
    return row === undefined ? null : clone(row.value);
  }

  async listOutbox(agentId: string, limit: number): Promise<OutboxRecord[]> {
    return this.outboxRows(agentId)
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit)
      .map((r) => clone(r.value));
  }

  async countOutbox(agentId: string): Promise<number> {
    return this.outboxRows(agentId).length;
  }

  async listOutboxSenders(limit: number): Promise<string[]> {
    const senders = new Set<string>();
    for (const row of [...this.tables.outbox.values()].sort((a, b) => a.seq - b.seq))
      senders.add(row.value.agent_id);
    return [...senders].slice(0, limit);
  }

  async getIdempotent(key: string): Promise<IdempotentResponse | null> {
    const row = this.tables.idempotent.get(key);
    return row === undefined ? null : clone(row.value);
  }

  async listApiKeys(): Promise<ApiKeyRecord[]> {
    return [...this.tables.apiKeys.values()].sort((a, b) => a.seq - b.seq).map((r) => clone(r.value));
  }

  async listAudit(query: PageQuery): Promise<AuditRecord[]> {
    return paginate([...this.tables.audit.values()], query, this.tables.audit);
  }

  async coreMemoryChars(): Promise<number> {
    let n = 0;
    for (const row of this.tables.blocks.values()) n += row.value.value.length;
    return n;
  }
}

/**
 * Membership and leases with the semantics of PostgresCluster, statement for statement: every
 * time is the database's `nowMs()`, and each method is one atomic step (the engine is
 * synchronous), so the retry PostgreSQL needs between its two statements never happens here.
 */
class MemoryCluster implements ClusterStore {
  private readonly nodes = new Map<string, NodeRow>();

  constructor(
    private readonly fences: () => Map<string, FenceRow>,
    private readonly nowMs: () => number,
  ) {}

  async registerNode(nodeId: string, advertiseUrl: string): Promise<NodeIdentity> {
    assert(nodeId !== "", "a node id is required");
    const now = this.nowMs();
    const row = this.nodes.get(nodeId);
    const incarnation = row === undefined ? 1 : row.incarnation + 1;
    this.nodes.set(nodeId, {
      node_id: nodeId,
      advertise_url: advertiseUrl,
      incarnation,
      heartbeat_at: now,
      started_at: now,
      left_at: null,
    });
    return { node_id: nodeId, incarnation };
  }

  async heartbeat(node: NodeIdentity, leaseTtlMs: number): Promise<Map<string, number> | null> {
    assert(leaseTtlMs > 0, "lease ttl must be positive");
    const now = this.nowMs();
    const row = this.nodes.get(node.node_id);
    if (row === undefined || row.incarnation !== node.incarnation || row.left_at !== null) return null;
    this.nodes.set(node.node_id, { ...row, heartbeat_at: now });
    const renewed = new Map<string, number>();
    const fences = this.fences();
    for (const [agentId, f] of fences) {
      if (!this.heldBy(f, node) || f.lease_expires_at === null || f.lease_expires_at <= now) continue;
      fences.set(agentId, { ...f, lease_expires_at: now + leaseTtlMs });
      renewed.set(agentId, f.token);
    }
    return renewed;
  }

  async acquireLease(
    agentId: string,
    node: NodeIdentity,
    leaseTtlMs: number,
    nodeDeadAfterMs: number,
  ): Promise<LeaseAcquisition> {
    const now = this.nowMs();
    const fences = this.fences();
    const f = fences.get(agentId);
    const lease = {
      node_id: node.node_id,
      incarnation: node.incarnation,
      lease_expires_at: now + leaseTtlMs,
    };
    if (f === undefined) {
      fences.set(agentId, { token: 1, ...lease });
      return { acquired: true, token: 1 };
    }
    // Taken when free, lapsed, ours, or held by an incarnation that is gone or dead.
    const takeable =
      f.node_id === null ||
      f.lease_expires_at === null ||
      f.lease_expires_at <= now ||
      this.heldBy(f, node) ||
      this.liveMember(f.node_id, f.incarnation, now, nodeDeadAfterMs) === null;
    if (takeable) {
      const token = f.token + 1;
      fences.set(agentId, { token, ...lease });
      return { acquired: true, token };
    }
    const owner = this.ownerOf(agentId, nodeDeadAfterMs, now);
    assert(owner !== null, "a lease that could not be taken has a live holder");
    return { acquired: false, owner };
  }

  async releaseLease(agentId: string, node: NodeIdentity, token: number): Promise<void> {
    const fences = this.fences();
    const f = fences.get(agentId);
    if (f === undefined || f.token !== token || !this.heldBy(f, node)) return;
    fences.set(agentId, { token: f.token, node_id: null, incarnation: null, lease_expires_at: null });
  }

  async leaseOwner(agentId: string, nodeDeadAfterMs: number): Promise<LeaseOwner | null> {
    return this.ownerOf(agentId, nodeDeadAfterMs, this.nowMs());
  }

  async leave(node: NodeIdentity): Promise<void> {
    const now = this.nowMs();
    const fences = this.fences();
    for (const [agentId, f] of fences) {
      if (this.heldBy(f, node))
        fences.set(agentId, { token: f.token, node_id: null, incarnation: null, lease_expires_at: null });
    }
    const row = this.nodes.get(node.node_id);
    if (row !== undefined && row.incarnation === node.incarnation)
      this.nodes.set(node.node_id, { ...row, left_at: now });
  }

  async listNodes(nodeDeadAfterMs: number): Promise<ClusterNode[]> {
    const now = this.nowMs();
    return [...this.nodes.values()]
      .sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : 0))
      .map((r) => ({
        node_id: r.node_id,
        advertise_url: r.advertise_url,
        incarnation: r.incarnation,
        live: r.left_at === null && r.heartbeat_at > now - nodeDeadAfterMs,
      }));
  }

  private heldBy(f: FenceRow, node: NodeIdentity): boolean {
    return f.node_id === node.node_id && f.incarnation === node.incarnation;
  }

  /** The membership row of this incarnation when it has not left and its heartbeat is fresh. */
  private liveMember(
    nodeId: string | null,
    incarnation: number | null,
    now: number,
    nodeDeadAfterMs: number,
  ): NodeRow | null {
    if (nodeId === null) return null;
    const row = this.nodes.get(nodeId);
    if (row === undefined || row.incarnation !== incarnation || row.left_at !== null) return null;
    return row.heartbeat_at > now - nodeDeadAfterMs ? row : null;
  }

  private ownerOf(agentId: string, nodeDeadAfterMs: number, now: number): LeaseOwner | null {
    const f = this.fences().get(agentId);
    if (f === undefined || f.lease_expires_at === null || !(f.lease_expires_at > now)) return null;
    const member = this.liveMember(f.node_id, f.incarnation, now, nodeDeadAfterMs);
    if (member === null) return null;
    return { node_id: member.node_id, incarnation: member.incarnation, advertise_url: member.advertise_url };
  }
}
