// The embedded engine: better-sqlite3, WAL, synchronous=FULL by default (a commit is on disk
// before it is acknowledged). better-sqlite3 is synchronous; the async interface is kept so that
// every engine is interchangeable.
import Database from "better-sqlite3";
import { SQLITE_BUSY_TIMEOUT_MS } from "../core/constants.ts";
import { invalidField, KelpieError, notFound } from "../core/errors.ts";
import { MIGRATIONS } from "./migrations.ts";
import {
  agentListSql,
  auditListSql,
  blockListSql,
  conversationListSql,
  messageListSql,
  runListSql,
  runMessageListSql,
  type SqlQuery,
  toolListSql,
} from "./sql-queries.ts";
import { SqliteTiers } from "./sqlite-tiers.ts";
import type {
  AgentListQuery,
  AgentRecord,
  ApiKeyRecord,
  AuditRecord,
  BlockListQuery,
  BlockRecord,
  CommitOptions,
  ConversationRecord,
  McpServerRecord,
  MessageRecord,
  Mutation,
  PageQuery,
  RunRecord,
  StepRecord,
  Storage,
  ToolListQuery,
  ToolRecord,
} from "./types.ts";

type StoredAgent = Omit<AgentRecord, "block_ids" | "tool_ids">;
type Statement = Database.Statement<unknown[], unknown>;

/** A write waiting for the next group commit: a commit, or taking an agent's next fencing token. */
type PendingCommit =
  | {
      kind: "commit";
      mutations: Mutation[];
      options: CommitOptions | undefined;
      resolve: (value: unknown) => void;
      reject: (err: unknown) => void;
    }
  | { kind: "fence"; agentId: string; resolve: (value: unknown) => void; reject: (err: unknown) => void };

export interface SqliteOptions {
  path: string;
  synchronous?: "full" | "normal";
}

const SQLITE_CACHE_KIB = 64 * 1024;
const SQLITE_WAL_CHECKPOINT_PAGES = 10_000;

/** Bound on the parsed-tool cache; past it the cache starts over. */
const TOOLS_PARSED_ENTRIES_MAX = 4_096;

const parse = <T>(row: unknown): T => JSON.parse((row as { doc: string }).doc) as T;

export class SqliteStorage implements Storage {
  readonly engine = "sqlite" as const;
  readonly tiers: SqliteTiers;
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Statement>();

  constructor(options: SqliteOptions) {
    this.db = new Database(options.path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma(`synchronous = ${options.synchronous === "normal" ? "NORMAL" : "FULL"}`);
    this.db.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
    this.db.pragma("foreign_keys = ON");
    // A page cache that holds the working set, and checkpoints that run every ~40 MB of WAL rather
    // than every 4 MB: busy servers write a lot per group commit, and each checkpoint costs an fsync.
    this.db.pragma(`cache_size = -${SQLITE_CACHE_KIB}`);
    this.db.pragma(`wal_autocheckpoint = ${SQLITE_WAL_CHECKPOINT_PAGES}`);
    this.tiers = new SqliteTiers(this.db);
    this.transactionOfBatch = this.db.transaction(
      (batch: PendingCommit[], outcomes: { ok: boolean; value: unknown }[]) => this.runBatch(batch, outcomes),
    );
    this.commitOne = this.db.transaction((mutations: Mutation[], options: CommitOptions | undefined) =>
      this.runOne(mutations, options),
    );
  }

  /** A statement prepared once per SQL text. */
  private sql(text: string): Statement {
    let statement = this.statements.get(text);
    if (statement === undefined) {
      statement = this.db.prepare(text);
      this.statements.set(text, statement);
    }
    return statement;
  }

  async migrate(): Promise<void> {
    this.db.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    );
    const applied = new Set(
      (this.db.prepare("SELECT version FROM schema_migrations").all() as { version: number }[]).map(
        (r) => r.version,
      ),
    );
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      this.db.transaction(() => {
        this.db.exec(migration.sqlite);
        this.db
          .prepare("INSERT INTO schema_migrations (version, name) VALUES (?, ?)")
          .run(migration.version, migration.name);
      })();
    }
  }

  async close(): Promise<void> {
    this.flush();
    if (this.db.open) this.db.close();
  }

  /**
   * Group commit: commits issued in the same turn of the event loop share one transaction (one
   * fsync), each inside its own savepoint, so one failing commit rolls back alone. Each caller is
   * answered only after the shared transaction is durable.
   */
  commit(mutations: Mutation[], options?: CommitOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      this.enqueue({ kind: "commit", mutations, options, resolve: () => resolve(), reject });
    });
  }

  private enqueue(item: PendingCommit): void {
    this.pending.push(item);
    if (this.pending.length === 1) setImmediate(() => this.flush());
  }

  private flush(): void {
    const batch = this.pending.splice(0);
    if (batch.length === 0) return;
    if (!this.db.open) {
      for (const item of batch)
        item.reject(new KelpieError("STORAGE_UNAVAILABLE", "the SQLite database is closed"));
      return;
    }
    const outcomes: { ok: boolean; value: unknown }[] = [];
    try {
      this.transactionOfBatch(batch, outcomes);
    } catch (err) {
      for (const item of batch) item.reject(err);
      return;
    }
    batch.forEach((item, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) item.resolve(outcome.value);
      else item.reject(outcome.value);
    });
  }

  private readonly pending: PendingCommit[] = [];

  private readonly transactionOfBatch: (
    batch: PendingCommit[],
    outcomes: { ok: boolean; value: unknown }[],
  ) => void;
  private readonly commitOne: (mutations: Mutation[], options: CommitOptions | undefined) => void;

  private runBatch(batch: PendingCommit[], outcomes: { ok: boolean; value: unknown }[]): void {
    for (const item of batch) {
      try {
        if (item.kind === "fence") {
          outcomes.push({ ok: true, value: this.nextFence(item.agentId) });
        } else {
          this.commitOne(item.mutations, item.options);
          outcomes.push({ ok: true, value: undefined });
        }
      } catch (err) {
        outcomes.push({ ok: false, value: err });
      }
    }
  }

  /** One commit; run inside the batch's transaction it is a savepoint (better-sqlite3 nests them so). */
  private runOne(mutations: Mutation[], options: CommitOptions | undefined): void {
    const fence = options?.fence;
    if (fence !== undefined) {
      const row = this.sql("SELECT token FROM agent_fences WHERE agent_id = ?").get(fence.agent_id) as
        | { token: number }
        | undefined;
      const stored = row?.token ?? 0;
      if (stored !== fence.token) {
        throw new KelpieError(
          "FENCED",
          `agent ${fence.agent_id}: fencing token ${fence.token} is stale (current ${stored})`,
        );
      }
    }
    for (const m of mutations) this.apply(m);
  }

  /** Runs a write whose foreign key names an agent; a missing agent is AGENT_NOT_FOUND. */
  private withAgentKey(agentId: string, write: () => unknown): void {
    try {
      write();
    } catch (err) {
      if ((err as { code?: string }).code === "SQLITE_CONSTRAINT_FOREIGNKEY")
        throw notFound("agent", agentId);
      throw err;
    }
  }

  private exists(table: "agents" | "blocks" | "tools" | "messages" | "runs", id: string): boolean {
    return this.sql(`SELECT 1 FROM ${table} WHERE id = ?`).get(id) !== undefined;
  }

  private apply(m: Mutation): void {
    switch (m.op) {
      case "put_agent": {
        const a = m.agent;
        const doc = JSON.stringify(a);
        if (m.create) {
          if (this.exists("agents", a.id)) throw new KelpieError("CONFLICT", `agent ${a.id} already exists`);
          this.sql(
            "INSERT INTO agents (id, name, created_at_ms, updated_at_ms, doc) VALUES (?, ?, ?, ?, ?)",
          ).run(a.id, a.name, a.created_at_ms, a.updated_at_ms, doc);
        } else {
          const { changes } = this.sql(
            "UPDATE agents SET name = ?, created_at_ms = ?, updated_at_ms = ?, doc = ? WHERE id = ?",
          ).run(a.name, a.created_at_ms, a.updated_at_ms, doc, a.id);
          if (changes === 0) throw notFound("agent", a.id);
          const stored = this.sql("SELECT tag FROM agent_tags WHERE agent_id = ? ORDER BY tag")
            .pluck()
            .all(a.id);
          if (JSON.stringify(stored) === JSON.stringify([...new Set(a.tags)].sort())) return;
          this.sql("DELETE FROM agent_tags WHERE agent_id = ?").run(a.id);
        }
        const insertTag = this.sql("INSERT OR IGNORE INTO agent_tags (agent_id, tag) VALUES (?, ?)");
        for (const tag of a.tags) insertTag.run(a.id, tag);
        return;
      }
      case "delete_agent": {
        const { changes } = this.sql("DELETE FROM agents WHERE id = ?").run(m.agent_id);
        if (changes === 0) throw notFound("agent", m.agent_id);
        this.sql("DELETE FROM agent_fences WHERE agent_id = ?").run(m.agent_id);
        return;
      }
      case "put_block": {
        const b = m.block;
        const row = this.sql("SELECT version FROM blocks WHERE id = ?").get(b.id) as
          | { version: number }
          | undefined;
        if (m.create && row) throw new KelpieError("CONFLICT", `block ${b.id} already exists`);
        if (!m.create && !row) throw notFound("block", b.id);
        if (row && b.version !== row.version + 1) {
          throw new KelpieError("CONFLICT", `block ${b.id} was changed concurrently`);
        }
        const doc = JSON.stringify(b);
        if (row) {
          this.sql(
            "UPDATE blocks SET label = ?, is_template = ?, template_name = ?, version = ?, doc = ? WHERE id = ?",
          ).run(b.label, b.is_template ? 1 : 0, b.template_name, b.version, doc, b.id);
        } else {
          this.sql(
            "INSERT INTO blocks (id, label, is_template, template_name, version, doc) VALUES (?, ?, ?, ?, ?, ?)",
          ).run(b.id, b.label, b.is_template ? 1 : 0, b.template_name, b.version, doc);
        }
        return;
      }
      case "delete_block": {
        const { changes } = this.sql("DELETE FROM blocks WHERE id = ?").run(m.block_id);
        if (changes === 0) throw notFound("block", m.block_id);
        return;
      }
      case "put_tool": {
        const t = m.tool;
        const exists = this.exists("tools", t.id);
        if (m.create && exists) throw new KelpieError("CONFLICT", `tool ${t.id} already exists`);
        if (!m.create && !exists) throw notFound("tool", t.id);
        // MCP tools keep their servers' names (two servers may both have an "echo"); others are unique.
        const clash =
          t.tool_type === "external_mcp"
            ? undefined
            : this.sql("SELECT id FROM tools WHERE name = ? AND id <> ? AND tool_type <> 'external_mcp'").get(
                t.name,
                t.id,
              );
        if (clash !== undefined) throw new KelpieError("CONFLICT", `a tool named '${t.name}' already exists`);
        const doc = JSON.stringify(t);
        if (exists) {
          this.sql("UPDATE tools SET name = ?, tool_type = ?, doc = ? WHERE id = ?").run(
            t.name,
            t.tool_type,
            doc,
            t.id,
          );
        } else {
          this.sql("INSERT INTO tools (id, name, tool_type, doc) VALUES (?, ?, ?, ?)").run(
            t.id,
            t.name,
            t.tool_type,
            doc,
          );
        }
        return;
      }
      case "delete_tool": {
        const { changes } = this.sql("DELETE FROM tools WHERE id = ?").run(m.tool_id);
        if (changes === 0) throw notFound("tool", m.tool_id);
        return;
      }
      case "attach_block":
      case "detach_block": {
        if (!this.exists("agents", m.agent_id)) throw notFound("agent", m.agent_id);
        if (!this.exists("blocks", m.block_id)) throw notFound("block", m.block_id);
        if (m.op === "attach_block") {
          this.sql(
            `INSERT OR IGNORE INTO agent_blocks (agent_id, block_id, position)
             VALUES (?, ?, (SELECT coalesce(max(position), 0) + 1 FROM agent_blocks WHERE agent_id = ?))`,
          ).run(m.agent_id, m.block_id, m.agent_id);
        } else {
          this.sql("DELETE FROM agent_blocks WHERE agent_id = ? AND block_id = ?").run(
            m.agent_id,
            m.block_id,
          );
        }
        return;
      }
      case "attach_tool":
      case "detach_tool": {
        if (!this.exists("agents", m.agent_id)) throw notFound("agent", m.agent_id);
        if (!this.exists("tools", m.tool_id)) throw notFound("tool", m.tool_id);
        if (m.op === "attach_tool") {
          this.sql(
            `INSERT OR IGNORE INTO agent_tools (agent_id, tool_id, position)
             VALUES (?, ?, (SELECT coalesce(max(position), 0) + 1 FROM agent_tools WHERE agent_id = ?))`,
          ).run(m.agent_id, m.tool_id, m.agent_id);
        } else {
          this.sql("DELETE FROM agent_tools WHERE agent_id = ? AND tool_id = ?").run(m.agent_id, m.tool_id);
        }
        return;
      }
      case "put_message": {
        const msg = m.message;
        // One upsert; the foreign key rejects a message for a missing agent.
        this.withAgentKey(msg.agent_id, () =>
          this.sql(
            `INSERT INTO messages (id, agent_id, run_id, created_at_ms, doc) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET agent_id = excluded.agent_id, run_id = excluded.run_id,
               created_at_ms = excluded.created_at_ms, doc = excluded.doc`,
          ).run(msg.id, msg.agent_id, msg.run_id, msg.created_at_ms, JSON.stringify(msg)),
        );
        return;
      }
      case "put_run": {
        const run = m.run;
        this.withAgentKey(run.agent_id, () =>
          this.sql(
            "INSERT INTO runs (id, agent_id, doc) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
          ).run(run.id, run.agent_id, JSON.stringify(run)),
        );
        return;
      }
      case "put_step": {
        const step = m.step;
        this.withAgentKey(step.agent_id, () =>
          this.sql(
            "INSERT INTO steps (id, run_id, agent_id, doc) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
          ).run(step.id, step.run_id, step.agent_id, JSON.stringify(step)),
        );
        return;
      }
      case "put_mcp_server": {
        const server = m.server;
        const exists = this.sql("SELECT 1 FROM mcp_servers WHERE id = ?").get(server.id) !== undefined;
        if (m.create && exists) throw new KelpieError("CONFLICT", `MCP server ${server.id} already exists`);
        if (!m.create && !exists) throw new KelpieError("NOT_FOUND", `MCP server ${server.id} not found`);
        const clash = this.sql("SELECT 1 FROM mcp_servers WHERE server_name = ? AND id <> ?").get(
          server.server_name,
          server.id,
        );
        if (clash !== undefined) {
          throw new KelpieError("CONFLICT", `an MCP server named '${server.server_name}' already exists`);
        }
        const doc = JSON.stringify(server);
        if (exists) {
          this.sql("UPDATE mcp_servers SET server_name = ?, doc = ? WHERE id = ?").run(
            server.server_name,
            doc,
            server.id,
          );
        } else {
          this.sql("INSERT INTO mcp_servers (id, server_name, doc) VALUES (?, ?, ?)").run(
            server.id,
            server.server_name,
            doc,
          );
        }
        return;
      }
      case "delete_mcp_server": {
        const { changes } = this.sql("DELETE FROM mcp_servers WHERE id = ?").run(m.server_id);
        if (changes === 0) throw new KelpieError("NOT_FOUND", `MCP server ${m.server_id} not found`);
        return;
      }
      case "put_api_key": {
        const clash = this.sql("SELECT 1 FROM api_keys WHERE key_sha256 = ?").get(m.key.key_sha256);
        if (clash !== undefined) throw new KelpieError("CONFLICT", "this API key already exists");
        this.sql("INSERT INTO api_keys (id, key_sha256, doc) VALUES (?, ?, ?)").run(
          m.key.id,
          m.key.key_sha256,
          JSON.stringify(m.key),
        );
        return;
      }
      case "put_conversation": {
        const c = m.conversation;
        const exists = this.sql("SELECT 1 FROM conversations WHERE id = ?").get(c.id) !== undefined;
        if (m.create && exists) throw new KelpieError("CONFLICT", `conversation ${c.id} already exists`);
        if (!m.create && !exists) throw new KelpieError("NOT_FOUND", `Conversation ${c.id} not found`);
        if (exists) {
          this.sql("UPDATE conversations SET doc = ? WHERE id = ?").run(JSON.stringify(c), c.id);
        } else {
          this.withAgentKey(c.agent_id, () =>
            this.sql("INSERT INTO conversations (id, agent_id, doc) VALUES (?, ?, ?)").run(
              c.id,
              c.agent_id,
              JSON.stringify(c),
            ),
          );
        }
        return;
      }
      case "delete_conversation": {
        const { changes } = this.sql("DELETE FROM conversations WHERE id = ?").run(m.conversation_id);
        if (changes === 0) throw new KelpieError("NOT_FOUND", `Conversation ${m.conversation_id} not found`);
        return;
      }
      case "put_audit": {
        this.sql("INSERT INTO audit_log (id, at_ms, doc) VALUES (?, ?, ?)").run(
          m.entry.id,
          m.entry.at_ms,
          JSON.stringify(m.entry),
        );
        return;
      }
      case "delete_agent_messages": {
        const keep = JSON.stringify(m.except_ids);
        this.sql(
          "DELETE FROM messages WHERE agent_id = ? AND id NOT IN (SELECT value FROM json_each(?))",
        ).run(m.agent_id, keep);
        return;
      }
    }
  }

  /** Fence tokens ride the group commit too: an activation storm costs one fsync, not one each. */
  acquireFence(agentId: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.enqueue({ kind: "fence", agentId, resolve: resolve as (value: unknown) => void, reject });
    });
  }

  private nextFence(agentId: string): number {
    const row = this.sql(
      `INSERT INTO agent_fences (agent_id, token) VALUES (?, 1)
       ON CONFLICT (agent_id) DO UPDATE SET token = token + 1 RETURNING token`,
    ).get(agentId) as { token: number };
    return row.token;
  }

  async currentFence(agentId: string): Promise<number> {
    const row = this.sql("SELECT token FROM agent_fences WHERE agent_id = ?").get(agentId) as
      | { token: number }
      | undefined;
    return row?.token ?? 0;
  }

  private relations(agentId: string): { block_ids: string[]; tool_ids: string[] } {
    const blocks = this.sql("SELECT block_id FROM agent_blocks WHERE agent_id = ? ORDER BY position")
      .pluck()
      .all(agentId) as string[];
    const tools = this.sql("SELECT tool_id FROM agent_tools WHERE agent_id = ? ORDER BY position")
      .pluck()
      .all(agentId) as string[];
    return { block_ids: blocks, tool_ids: tools };
  }

  private assemble(stored: StoredAgent): AgentRecord {
    return { ...stored, ...this.relations(stored.id) };
  }

  /** Checks cursors, then runs a listing query. */
  private list<T>(table: string, q: PageQuery, query: SqlQuery): T[] {
    for (const field of ["after", "before"] as const) {
      const id = q[field];
      if (id !== undefined && this.sql(`SELECT 1 FROM ${table} WHERE id = ?`).get(id) === undefined) {
        throw invalidField(["query", field], `no item with id '${id}'`);
      }
    }
    return this.sql(query.text)
      .all(...query.params)
      .map((row) => parse<T>(row));
  }

  async getAgent(id: string): Promise<AgentRecord | null> {
    const row = this.sql("SELECT doc FROM agents WHERE id = ?").get(id);
    return row === undefined ? null : this.assemble(parse<StoredAgent>(row));
  }

  async listAgents(query: AgentListQuery): Promise<AgentRecord[]> {
    return this.list<StoredAgent>("agents", query, agentListSql("sqlite", query)).map((a) =>
      this.assemble(a),
    );
  }

  async countAgents(): Promise<number> {
    return (this.sql("SELECT count(*) AS n FROM agents").get() as { n: number }).n;
  }

  async getBlock(id: string): Promise<BlockRecord | null> {
    const row = this.sql("SELECT doc FROM blocks WHERE id = ?").get(id);
    return row === undefined ? null : parse<BlockRecord>(row);
  }

  async getBlocks(ids: string[]): Promise<BlockRecord[]> {
    return this.byIds<BlockRecord>("blocks", ids);
  }

  /**
   * Tool rows are large (JSON schemas) and read on every agent step, yet rarely change: parsed
   * tools are kept keyed by their exact stored text, so a changed row is simply a new key.
   * Callers treat records as read-only.
   */
  private readonly toolsParsed = new Map<string, unknown>();

  private parseTool<T>(row: unknown): T {
    const doc = (row as { doc: string }).doc;
    let parsed = this.toolsParsed.get(doc);
    if (parsed === undefined) {
      parsed = JSON.parse(doc);
      if (this.toolsParsed.size >= TOOLS_PARSED_ENTRIES_MAX) this.toolsParsed.clear();
      this.toolsParsed.set(doc, parsed);
    }
    return parsed as T;
  }

  private byIds<T extends { id: string }>(table: "blocks" | "tools" | "messages", ids: string[]): T[] {
    if (ids.length === 0) return [];
    if (ids.length === 1) {
      const row = this.sql(`SELECT doc FROM ${table} WHERE id = ?`).get(ids[0]);
      return row === undefined ? [] : [parse<T>(row)];
    }
    // One statement for the whole list; rows come back in any order, so put them in the order asked.
    const rows = this.sql(`SELECT doc FROM ${table} WHERE id IN (SELECT value FROM json_each(?))`).all(
      JSON.stringify(ids),
    );
    const byId = new Map<string, T>();
    for (const row of rows) {
      const record = table === "tools" ? this.parseTool<T>(row) : parse<T>(row);
      byId.set(record.id, record);
    }
    return ids.flatMap((id) => {
      const record = byId.get(id);
      return record === undefined ? [] : [record];
    });
  }

  async listBlocks(query: BlockListQuery): Promise<BlockRecord[]> {
    return this.list<BlockRecord>("blocks", query, blockListSql("sqlite", query));
  }

  async countBlocks(): Promise<number> {
    return (this.sql("SELECT count(*) AS n FROM blocks").get() as { n: number }).n;
  }

  async listBlockAgentIds(blockId: string): Promise<string[]> {
    return this.sql(
      "SELECT ab.agent_id FROM agent_blocks ab JOIN agents a ON a.id = ab.agent_id WHERE ab.block_id = ? ORDER BY a.seq",
    )
      .pluck()
      .all(blockId) as string[];
  }

  async getTool(id: string): Promise<ToolRecord | null> {
    const row = this.sql("SELECT doc FROM tools WHERE id = ?").get(id);
    return row === undefined ? null : parse<ToolRecord>(row);
  }

  async getToolByName(name: string): Promise<ToolRecord | null> {
    const row = this.sql(
      "SELECT doc FROM tools WHERE name = ? ORDER BY (tool_type = 'external_mcp'), seq LIMIT 1",
    ).get(name);
    return row === undefined ? null : parse<ToolRecord>(row);
  }

  async getTools(ids: string[]): Promise<ToolRecord[]> {
    return this.byIds<ToolRecord>("tools", ids);
  }

  async listTools(query: ToolListQuery): Promise<ToolRecord[]> {
    return this.list<ToolRecord>("tools", query, toolListSql("sqlite", query));
  }

  async countTools(): Promise<number> {
    return (this.sql("SELECT count(*) AS n FROM tools").get() as { n: number }).n;
  }

  async getMessage(id: string): Promise<MessageRecord | null> {
    const row = this.sql("SELECT doc FROM messages WHERE id = ?").get(id);
    return row === undefined ? null : parse<MessageRecord>(row);
  }

  async getMessages(ids: string[]): Promise<MessageRecord[]> {
    return this.byIds<MessageRecord>("messages", ids);
  }

  async listMessages(agentId: string, query: PageQuery): Promise<MessageRecord[]> {
    return this.list<MessageRecord>("messages", query, messageListSql(agentId, query));
  }

  async countMessages(agentId: string): Promise<number> {
    return (this.sql("SELECT count(*) AS n FROM messages WHERE agent_id = ?").get(agentId) as { n: number })
      .n;
  }

  async listRunMessages(runId: string, query: PageQuery): Promise<MessageRecord[]> {
    return this.list<MessageRecord>("messages", query, runMessageListSql(runId, query));
  }

  async getRun(id: string): Promise<RunRecord | null> {
    const row = this.sql("SELECT doc FROM runs WHERE id = ?").get(id);
    return row === undefined ? null : parse<RunRecord>(row);
  }

  async listRuns(agentId: string | undefined, query: PageQuery): Promise<RunRecord[]> {
    return this.list<RunRecord>("runs", query, runListSql(agentId, query));
  }

  async listSteps(runId: string): Promise<StepRecord[]> {
    return this.sql("SELECT doc FROM steps WHERE run_id = ? ORDER BY seq")
      .all(runId)
      .map((row) => parse<StepRecord>(row));
  }

  async getMcpServer(id: string): Promise<McpServerRecord | null> {
    const row = this.sql("SELECT doc FROM mcp_servers WHERE id = ?").get(id);
    return row === undefined ? null : parse<McpServerRecord>(row);
  }

  async listMcpServers(): Promise<McpServerRecord[]> {
    return this.sql("SELECT doc FROM mcp_servers ORDER BY seq")
      .all()
      .map((row) => parse<McpServerRecord>(row));
  }

  async getConversation(id: string): Promise<ConversationRecord | null> {
    const row = this.sql("SELECT doc FROM conversations WHERE id = ?").get(id);
    return row === undefined ? null : parse<ConversationRecord>(row);
  }

  async listConversations(agentId: string | undefined, query: PageQuery): Promise<ConversationRecord[]> {
    return this.list<ConversationRecord>("conversations", query, conversationListSql(agentId, query));
  }

  async listApiKeys(): Promise<ApiKeyRecord[]> {
    return this.sql("SELECT doc FROM api_keys ORDER BY seq")
      .all()
      .map((row) => parse<ApiKeyRecord>(row));
  }

  async listAudit(query: PageQuery): Promise<AuditRecord[]> {
    return this.list<AuditRecord>("audit_log", query, auditListSql(query));
  }

  async coreMemoryChars(): Promise<number> {
    const row = this.sql(
      "SELECT coalesce(sum(length(json_extract(doc, '$.value'))), 0) AS n FROM blocks",
    ).get() as {
      n: number;
    };
    return row.n;
  }
}
