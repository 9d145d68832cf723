// The embedded engine: better-sqlite3, WAL, synchronous=FULL by default (a commit is on disk
// before it is acknowledged). Reads run on this thread's connection; commits go to a writer thread
// (sqlite-writer.ts) with its own connection, batched into group commits.
import { Worker } from "node:worker_threads";
import type Database from "better-sqlite3";
import { invalidField, KelpieError } from "../core/errors.ts";
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
import {
  type BatchItem,
  fromWireError,
  type Outcome,
  openSqlite,
  SqliteWriter,
  statementCache,
} from "./sqlite-writer.ts";
import type {
  AgentListQuery,
  AgentRecord,
  ApiKeyRecord,
  AuditRecord,
  BlockListQuery,
  BlockRecord,
  CommitOptions,
  ConversationRecord,
  IdempotentResponse,
  McpServerRecord,
  MessageRecord,
  Mutation,
  OutboxRecord,
  PageQuery,
  RunRecord,
  StepRecord,
  Storage,
  ToolListQuery,
  ToolRecord,
} from "./types.ts";

type StoredAgent = Omit<AgentRecord, "block_ids" | "tool_ids">;
type Statement = Database.Statement<unknown[], unknown>;

interface Pending {
  item: BatchItem;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

export interface SqliteOptions {
  path: string;
  synchronous?: "full" | "normal";
  /**
   * Where commits are applied: on a writer thread with its own connection (the default: the fsync
   * of a group commit does not stall the event loop), or inline on this thread.
   */
  writer?: "thread" | "inline";
}

/** Batches up to this size are applied on this thread when the writer thread is idle. */
const INLINE_BATCH_ITEMS_MAX = 4;
/** ...and only if they write at most this many rows: 500 passages (vectors and full-text rows)
 * applied here held the event loop 70 ms. */
const INLINE_BATCH_ROWS_MAX = 32;
/** A tool's source counts one row per this many characters (a 1 MB source took 20 ms to write). */
const INLINE_ROW_CHARS = 16 * 1024;

/** Commits per batch sent to the writer thread: small enough that answers flow back while it works. */
const WRITER_BATCH_ITEMS_MAX = 256;

/** Bound on the parsed-tool cache; past it the cache starts over. */
const TOOLS_PARSED_ENTRIES_MAX = 4_096;

/** Roughly how many rows a batch writes (an operation is one, a bulk insert one per element). */
function batchRows(batch: Pending[]): number {
  let rows = 0;
  for (const { item } of batch) {
    if (item.kind !== "commit") rows += 1;
    else for (const m of item.mutations) rows += mutationRows(m);
  }
  return rows;
}

function mutationRows(m: Mutation): number {
  if (m.op === "insert_passages") return m.rows.length;
  if (m.op === "put_tool") return 1 + Math.floor((m.tool.source_code?.length ?? 0) / INLINE_ROW_CHARS);
  return 1;
}

const parse = <T>(row: unknown): T => JSON.parse((row as { doc: string }).doc) as T;

export class SqliteStorage implements Storage {
  readonly engine = "sqlite" as const;
  readonly tiers: SqliteTiers;
  private readonly db: Database.Database;
  /** A statement prepared once per SQL text. */
  private readonly sql: (text: string) => Statement;
  private readonly options: SqliteOptions;
  private readonly pending: Pending[] = [];
  /** Batches posted to the writer and not yet answered, by id (it applies them in order). */
  private readonly inFlight = new Map<number, Pending[]>();
  private worker: Worker | null = null;
  private inline: SqliteWriter | null = null;
  private broken: Error | null = null;
  private batchId = 0;
  private flushScheduled = false;
  private idle: (() => void)[] = [];

  constructor(options: SqliteOptions) {
    this.options = options;
    this.db = openSqlite(options.path, options.synchronous);
    this.sql = statementCache(this.db);
    this.tiers = new SqliteTiers(this.db);
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

  /** Waits for every acknowledged-to-be write, stops the writer, closes the connection. */
  async close(): Promise<void> {
    while (this.pending.length > 0 || this.inFlight.size > 0) {
      await new Promise<void>((resolve) => {
        this.idle.push(resolve);
        this.flush();
      });
    }
    const worker = this.worker;
    this.worker = null;
    if (worker !== null) await worker.terminate();
    if (this.db.open) this.db.close();
  }

  /**
   * Group commit: commits issued while the previous batch is being made durable (or in the same
   * turn of the event loop) share one transaction and one fsync, each in its own savepoint, so one
   * failing commit rolls back alone. Each caller is answered only after its batch is durable.
   */
  commit(mutations: Mutation[], options?: CommitOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      this.enqueue({ kind: "commit", mutations, options }, () => resolve(), reject);
    });
  }

  /** Fence tokens ride the group commit too: an activation storm costs one fsync, not one each. */
  acquireFence(agentId: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.enqueue({ kind: "fence", agentId }, resolve as (value: unknown) => void, reject);
    });
  }

  private enqueue(item: BatchItem, resolve: (value: unknown) => void, reject: (err: unknown) => void): void {
    this.pending.push({ item, resolve, reject });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
  }

  private flush(): void {
    if (this.pending.length === 0) {
      if (this.inFlight.size === 0) this.settleIdle();
      return;
    }
    const batch = this.pending.splice(
      0,
      this.options.writer === "inline" ? this.pending.length : WRITER_BATCH_ITEMS_MAX,
    );
    if (!this.db.open || this.broken !== null) {
      const err = new KelpieError(
        "STORAGE_UNAVAILABLE",
        this.broken ? `the SQLite writer failed: ${this.broken.message}` : "the SQLite database is closed",
      );
      for (const p of batch) p.reject(err);
      this.settleIdle();
      return;
    }
    // A small batch with the writer idle is applied right here: a lone request pays no thread hop.
    // (The writer holds no lock when it has nothing in flight, so the two connections never wait.)
    const small =
      this.inFlight.size === 0 &&
      batch.length <= INLINE_BATCH_ITEMS_MAX &&
      batchRows(batch) <= INLINE_BATCH_ROWS_MAX;
    if (this.options.writer === "inline" || small) {
      this.inline ??= new SqliteWriter(this.db);
      this.settle(batch, this.inline.runBatch(batch.map((p) => p.item)));
      return;
    }
    // Post at once, even while earlier batches are being applied: the writer works through them in
    // order while this thread goes on with the agents whose commits are already durable.
    const id = ++this.batchId;
    this.inFlight.set(id, batch);
    const worker = this.startWorker();
    worker.ref();
    worker.postMessage({ id, batch: batch.map((p) => p.item) });
    // The rest goes in further batches: the first agents get their answers (and go on to their next
    // step) while the writer applies the others, instead of everyone waiting for one big batch.
    if (this.pending.length > 0) this.flush();
  }

  private settle(batch: Pending[], outcomes: Outcome[]): void {
    for (const p of batch) {
      if (p.item.kind !== "commit") continue;
      for (const m of p.item.mutations) {
        if (m.op === "put_tool") this.toolsById.delete(m.tool.id);
        else if (m.op === "delete_tool") this.toolsById.delete(m.tool_id);
      }
    }
    batch.forEach((p, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) p.resolve(outcome.value);
      else p.reject(fromWireError(outcome.error));
    });
    this.flush();
  }

  private settleIdle(): void {
    for (const resolve of this.idle.splice(0)) resolve();
  }

  private startWorker(): Worker {
    if (this.worker !== null) return this.worker;
    const worker = new Worker(new URL("./sqlite-writer-worker.mjs", import.meta.url), {
      workerData: { path: this.options.path, synchronous: this.options.synchronous },
    });
    worker.on("message", (message: { id: number; outcomes: Outcome[] }) => {
      const batch = this.inFlight.get(message.id) ?? [];
      this.inFlight.delete(message.id);
      if (this.inFlight.size === 0) worker.unref();
      this.settle(batch, message.outcomes);
    });
    worker.on("error", (err) => {
      // The writer is gone: nothing in flight is known to be durable, and nothing more can be.
      this.broken = err;
      const batch = [...this.inFlight.values()].flat();
      this.inFlight.clear();
      const failure = new KelpieError("STORAGE_UNAVAILABLE", `the SQLite writer failed: ${err.message}`);
      for (const p of [...batch, ...this.pending.splice(0)]) p.reject(failure);
      this.settleIdle();
    });
    this.worker = worker;
    return worker;
  }

  async currentFence(agentId: string): Promise<number> {
    const row = this.sql("SELECT token FROM agent_fences WHERE agent_id = ?").get(agentId) as
      | { token: number }
      | undefined;
    return row?.token ?? 0;
  }

  private relations(agentId: string): { block_ids: string[]; tool_ids: string[] } {
    // One statement for both relations (an agent is read on every step).
    const rows = this.sql(
      `SELECT 0 AS kind, block_id AS id, position FROM agent_blocks WHERE agent_id = ?
       UNION ALL SELECT 1, tool_id, position FROM agent_tools WHERE agent_id = ? ORDER BY kind, position`,
    )
      .raw()
      .all(agentId, agentId) as [number, string, number][];
    const block_ids: string[] = [];
    const tool_ids: string[] = [];
    for (const [kind, id] of rows) (kind === 0 ? block_ids : tool_ids).push(id);
    return { block_ids, tool_ids };
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

  /**
   * Tools are read on every step and rarely change: records stay here by id until a commit that
   * writes or deletes them is acknowledged (reads are synchronous, so none can straddle that).
   */
  private readonly toolsById = new Map<string, ToolRecord>();

  async getTools(ids: string[]): Promise<ToolRecord[]> {
    const missing: string[] = [];
    for (const id of ids) if (!this.toolsById.has(id)) missing.push(id);
    if (missing.length > 0) {
      if (this.toolsById.size + missing.length > TOOLS_PARSED_ENTRIES_MAX) this.toolsById.clear();
      for (const tool of this.byIds<ToolRecord>("tools", missing)) this.toolsById.set(tool.id, tool);
    }
    const out: ToolRecord[] = [];
    for (const id of ids) {
      const tool = this.toolsById.get(id);
      if (tool !== undefined) out.push(tool);
    }
    return out;
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

  async listUnfinishedRuns(agentId: string | undefined, limit: number): Promise<RunRecord[]> {
    // The WHERE matches the partial index runs_unfinished (which SQLite, without statistics, must be
    // told to use when no agent narrows the search).
    const unfinished = "json_extract(doc, '$.status') IN ('created', 'running')";
    const rows =
      agentId === undefined
        ? this.sql(
            `SELECT doc FROM runs INDEXED BY runs_unfinished WHERE ${unfinished} ORDER BY seq LIMIT ?`,
          ).all(limit)
        : this.sql(`SELECT doc FROM runs WHERE ${unfinished} AND agent_id = ? ORDER BY seq LIMIT ?`).all(
            agentId,
            limit,
          );
    return rows.map((row) => parse<RunRecord>(row));
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

  async getOutboxEntry(id: string): Promise<OutboxRecord | null> {
    const row = this.sql("SELECT doc FROM outbox WHERE id = ?").get(id);
    return row === undefined ? null : parse<OutboxRecord>(row);
  }

  async listOutbox(agentId: string, limit: number): Promise<OutboxRecord[]> {
    return this.sql("SELECT doc FROM outbox WHERE agent_id = ? ORDER BY seq LIMIT ?")
      .all(agentId, limit)
      .map((row) => parse<OutboxRecord>(row));
  }

  async countOutbox(agentId: string): Promise<number> {
    return (this.sql("SELECT count(*) AS n FROM outbox WHERE agent_id = ?").get(agentId) as { n: number }).n;
  }

  async listOutboxSenders(limit: number): Promise<string[]> {
    return (
      this.sql("SELECT agent_id FROM outbox GROUP BY agent_id ORDER BY min(seq) LIMIT ?").all(limit) as {
        agent_id: string;
      }[]
    ).map((row) => row.agent_id);
  }

  async getIdempotent(key: string): Promise<IdempotentResponse | null> {
    const row = this.sql(
      "SELECT key, status_code, body, created_at_ms FROM idempotent_responses WHERE key = ?",
    ).get(key) as IdempotentResponse | undefined;
    return row === undefined ? null : { ...row, created_at_ms: Number(row.created_at_ms) };
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
