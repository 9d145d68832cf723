// The in-memory engine: the reference executor of the Storage contract, used by tests and the
// simulator. A commit runs the planner's plans (planner.ts) against copies of the tables and swaps
// them in only when all succeed; the row operations here are the plainest reading of each.
// It also keeps cluster membership and agent leases as PostgreSQL does (postgres-cluster.ts), on
// its own clock (the "database's"), so the simulator can run several nodes over one instance.
import { assert, unreachable } from "../core/assert.ts";
import { SystemClock } from "../core/clock.ts";
import { invalidField } from "../core/errors.ts";
import { copyTierTables, emptyTierTables, MemoryTiers, type TierTables } from "./memory-tiers.ts";
import {
  type FenceState,
  type KeyedTable,
  type Relation,
  type RowOp,
  runCommitSync,
  type WorkingUsage,
  type WriteMode,
} from "./planner.ts";
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
    // Staged on copies, swapped in only when every mutation's plan ran to its end.
    const t = copyTables(this.tables);
    runCommitSync(memoryExecutor(t, this.nowMs), mutations, options);
    this.tables = t;
  }

  readonly tiers = new MemoryTiers(
    () => this.tables.tiers,
    (agentId) => this.tables.agents.get(agentId)?.seq,
  );

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

/** Removes `id` from every agent's list in a relation map (a copy is made of each list changed). */
function removeTarget(relation: Map<string, string[]>, id: string): void {
  for (const [agentId, ids] of relation) {
    if (ids.includes(id))
      relation.set(
        agentId,
        ids.filter((x) => x !== id),
      );
  }
}

function deleteWhere<T>(rows: Map<string, Row<T>>, match: (value: T) => boolean): void {
  for (const [id, row] of rows) if (match(row.value)) rows.delete(id);
}

/**
 * The memory engine's row operations on a commit's staged tables: the planner (planner.ts) has
 * checked every precondition, so each operation only reads or writes rows. The tier tables are
 * copied on the commit's first write to them.
 */
function memoryExecutor(t: Tables, nowMs: () => number): (op: RowOp) => unknown {
  let tiersCopied = false;
  const tiers = (): TierTables => {
    if (!tiersCopied) {
      t.tiers = copyTierTables(t.tiers);
      tiersCopied = true;
    }
    return t.tiers;
  };
  const keyed = (table: Exclude<KeyedTable, "passages">): Map<string, Row<{ id: string }>> => {
    switch (table) {
      case "agents":
        return t.agents;
      case "blocks":
        return t.blocks;
      case "tools":
        return t.tools;
      case "mcp_servers":
        return t.mcpServers;
      case "conversations":
        return t.conversations;
      case "outbox":
        return t.outbox;
      case "archives":
        return t.tiers.archives;
    }
  };
  const relation = (r: Relation, write: boolean): Map<string, string[]> =>
    r === "agent_blocks"
      ? t.agentBlocks
      : r === "agent_tools"
        ? t.agentTools
        : (write ? tiers() : t.tiers).agentArchives;
  const put = <T>(rows: Map<string, Row<T>>, key: string, value: T, mode: WriteMode, seq: () => number) => {
    const existing = rows.get(key);
    if (mode === "insert_if_absent" && existing !== undefined) return;
    assert(mode !== "update" || existing !== undefined, "an update writes a row that exists");
    rows.set(key, { seq: mode === "insert" ? seq() : (existing?.seq ?? seq()), value: clone(value) });
  };
  const nextSeq = () => ++t.seq;
  const nextTierSeq = () => ++tiers().seq;

  return (op: RowOp): unknown => {
    switch (op.kind) {
      case "read_fence": {
        const row = t.fences.get(op.agent_id);
        // A row that never had a lease (a single node's) has no expiry to check.
        const lapsed = row !== undefined && row.lease_expires_at !== null && row.lease_expires_at <= nowMs();
        return { token: row?.token ?? 0, lapsed } satisfies FenceState;
      }
      case "exists":
        return op.table === "passages" ? t.tiers.passages.has(op.id) : keyed(op.table).has(op.id);
      case "block_version":
        return t.blocks.get(op.id)?.value.version ?? null;
      case "taken": {
        if (op.index === "api_key_sha256")
          return [...t.apiKeys.values()].some((r) => r.value.key_sha256 === op.value);
        if (op.index === "mcp_server_name")
          return [...t.mcpServers.values()].some(
            (r) => r.value.server_name === op.value && r.value.id !== op.except_id,
          );
        return [...t.tools.values()].some(
          (r) =>
            r.value.name === op.value && r.value.id !== op.except_id && r.value.tool_type !== "external_mcp",
        );
      }
      case "count_outbox": {
        let n = 0;
        for (const row of t.outbox.values()) if (row.value.agent_id === op.agent_id) n++;
        return n;
      }
      case "working_usage": {
        const usage: WorkingUsage = { keys: 0, bytes: 0 };
        for (const e of t.tiers.working.get(op.agent_id)?.values() ?? []) {
          if (e.key === op.except_key || (e.expires_at_ms !== null && e.expires_at_ms <= op.at_ms)) continue;
          usage.keys += 1;
          usage.bytes += e.size_bytes;
        }
        return usage;
      }
      case "existing_passages":
        return op.ids.filter((id) => t.tiers.passages.has(id));
      case "unattached_archives": {
        const attached = new Set([...t.tiers.agentArchives.values()].flat());
        return op.ids.filter((id) => t.tiers.archives.has(id) && !attached.has(id));
      }
      case "write": {
        switch (op.table) {
          case "agents":
            return put(t.agents, op.record.id, op.record, op.mode, nextSeq);
          case "blocks":
            return put(t.blocks, op.record.id, op.record, op.mode, nextSeq);
          case "tools":
            return put(t.tools, op.record.id, op.record, op.mode, nextSeq);
          case "messages":
            return put(t.messages, op.record.id, op.record, op.mode, nextSeq);
          case "runs":
            return put(t.runs, op.record.id, op.record, op.mode, nextSeq);
          case "steps":
            return put(t.steps, op.record.id, op.record, op.mode, nextSeq);
          case "mcp_servers":
            return put(t.mcpServers, op.record.id, op.record, op.mode, nextSeq);
          case "api_keys":
            return put(t.apiKeys, op.record.id, op.record, op.mode, nextSeq);
          case "audit_log":
            return put(t.audit, op.record.id, op.record, op.mode, nextSeq);
          case "idempotent_responses":
            return put(t.idempotent, op.record.key, op.record, op.mode, nextSeq);
          case "conversations":
            return put(t.conversations, op.record.id, op.record, op.mode, nextSeq);
          case "outbox":
            return put(t.outbox, op.record.id, op.record, op.mode, nextSeq);
          case "archives":
            return put(tiers().archives, op.record.id, op.record, op.mode, nextTierSeq);
          case "working_memory": {
            const e = op.record;
            const entries = new Map(tiers().working.get(e.agent_id));
            entries.set(e.key, clone(e));
            t.tiers.working.set(e.agent_id, entries);
            return;
          }
        }
        return unreachable(op);
      }
      case "insert_passages": {
        const w = tiers();
        for (const { passage, vector } of op.rows) {
          const seq = ++w.seq;
          w.passages.set(passage.id, { seq, value: clone(passage), vector: new Float32Array(vector) });
          w.passagesBySeq.set(seq, passage.id);
        }
        return;
      }
      case "patch": {
        const rows = op.table === "archives" ? tiers().archives : t.conversations;
        const row = rows.get(op.id) as Row<object> | undefined;
        if (row === undefined) return 0;
        rows.set(op.id, { seq: row.seq, value: { ...clone(row.value), ...op.set } } as never);
        return 1;
      }
      case "delete": {
        if (op.table !== "passages") {
          const rows = op.table === "archives" ? tiers().archives : keyed(op.table);
          return rows.delete(op.id) ? 1 : 0;
        }
        const w = tiers();
        const row = w.passages.get(op.id);
        if (row === undefined) return 0;
        w.passages.delete(op.id);
        w.passagesBySeq.delete(row.seq);
        return 1;
      }
      case "delete_children": {
        const parent = op.parent_id;
        switch (op.table) {
          case "agent_blocks":
          case "agent_tools":
          case "agent_archives":
            if (op.column === "agent_id") relation(op.table, true).delete(parent);
            else removeTarget(relation(op.table, true), parent);
            return;
          case "messages":
            return deleteWhere(t.messages, (v) => v.agent_id === parent);
          case "runs":
            return deleteWhere(t.runs, (v) => v.agent_id === parent);
          case "steps":
            return deleteWhere(t.steps, (v) => v.agent_id === parent);
          case "conversations":
            return deleteWhere(t.conversations, (v) => v.agent_id === parent);
          case "outbox":
            return deleteWhere(t.outbox, (v) => v.agent_id === parent);
          case "working_memory":
            if (t.tiers.working.has(parent)) tiers().working.delete(parent);
            return;
          case "passages": {
            const w = tiers();
            for (const [id, row] of w.passages) {
              if (row.value.archive_id !== parent) continue;
              w.passages.delete(id);
              w.passagesBySeq.delete(row.seq);
            }
            return;
          }
        }
        return unreachable(op);
      }
      case "attach":
      case "detach": {
        const rel = relation(op.relation, true);
        const ids = rel.get(op.agent_id) ?? [];
        if (op.kind === "attach" && !ids.includes(op.target_id)) rel.set(op.agent_id, [...ids, op.target_id]);
        if (op.kind === "detach" && ids.includes(op.target_id))
          rel.set(
            op.agent_id,
            ids.filter((id) => id !== op.target_id),
          );
        return;
      }
      case "delete_messages_except": {
        const keep = new Set(op.except_ids);
        return deleteWhere(t.messages, (v) => v.agent_id === op.agent_id && !keep.has(v.id));
      }
      case "delete_working": {
        const entries = t.tiers.working.get(op.agent_id);
        if (entries === undefined || !entries.has(op.key)) return;
        const next = new Map(entries);
        next.delete(op.key);
        tiers().working.set(op.agent_id, next);
        return;
      }
      case "delete_fence":
        t.fences.delete(op.agent_id);
        return;
    }
    return unreachable(op);
  };
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
