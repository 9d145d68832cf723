// The PostgreSQL engine (postgres.js), for several nodes sharing one database. A commit is one
// transaction running the planner's plans (planner.ts); the fencing check locks the agent's fence
// row, so two commits with different tokens cannot both pass.
import postgres from "postgres";
import { unreachable } from "../core/assert.ts";
import { POSTGRES_IDLE_IN_TRANSACTION_MS, POSTGRES_POOL_CONNECTIONS_MAX } from "../core/constants.ts";
import { invalidField, isKelpieError, KelpieError } from "../core/errors.ts";
import { MIGRATIONS } from "./migrations.ts";
import {
  type FenceState,
  type Lock,
  type Relation,
  type RowOp,
  runCommitAsync,
  type WorkingUsage,
} from "./planner.ts";
import { PostgresCluster } from "./postgres-cluster.ts";
import { PostgresTiers } from "./postgres-tiers.ts";
import {
  agentListSql,
  auditListSql,
  blockListSql,
  conversationListSql,
  messageListSql,
  numbered,
  runListSql,
  runMessageListSql,
  type SqlQuery,
  toolListSql,
} from "./sql-queries.ts";
import { passageDoc, vectorBytes } from "./tier-codec.ts";
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
type Sql = postgres.Sql | postgres.TransactionSql;

export interface PostgresOptions {
  url: string;
  maxConnections?: number;
}

/** Advisory lock key that serializes migrations between nodes starting at once. */
const MIGRATION_LOCK_KEY = 0x6b656c70; // "kelp"

/** The row lock each `Lock` takes (see planner.ts). */
const ROW_LOCKS: Record<Lock, string> = {
  none: "",
  share: "FOR KEY SHARE",
  serialize: "FOR NO KEY UPDATE",
  update: "FOR UPDATE",
};

/** Each relation's table and its target column. */
const RELATION_COLUMNS: Record<Relation, [string, string]> = {
  agent_blocks: ["agent_blocks", "block_id"],
  agent_tools: ["agent_tools", "tool_id"],
  agent_archives: ["agent_archives", "archive_id"],
};

function isUniqueViolation(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { code?: string }).code === "23505";
}

function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return (
    code === "ECONNREFUSED" ||
    code === "ECONNRESET" ||
    code === "ETIMEDOUT" ||
    code === "CONNECTION_CLOSED" ||
    code === "CONNECTION_ENDED" ||
    code === "CONNECTION_DESTROYED" ||
    code === "CONNECT_TIMEOUT"
  );
}

export class PostgresStorage implements Storage {
  readonly engine = "postgres" as const;
  readonly tiers: PostgresTiers;
  readonly cluster: PostgresCluster;
  private readonly sql: postgres.Sql;

  constructor(options: PostgresOptions) {
    this.sql = postgres(options.url, {
      max: options.maxConnections ?? POSTGRES_POOL_CONNECTIONS_MAX,
      onnotice: () => {},
      // A transaction left open by a node that vanished (kill -9, partition) would keep its fence
      // row locked, and so block the takeover: the server ends such a session after this long.
      connection: { idle_in_transaction_session_timeout: POSTGRES_IDLE_IN_TRANSACTION_MS },
      types: { bigint: postgres.BigInt },
    });
    this.tiers = new PostgresTiers(this.sql, (fn) => this.guard(fn));
    this.cluster = new PostgresCluster(this.sql, (fn) => this.guard(fn));
  }

  /** Runs a storage call, turning connection failures into STORAGE_UNAVAILABLE. */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isKelpieError(err)) throw err;
      if (isConnectionError(err)) {
        throw new KelpieError("STORAGE_UNAVAILABLE", `PostgreSQL is unreachable: ${(err as Error).message}`, {
          cause: err,
        });
      }
      throw err;
    }
  }

  private async query<T>(sql: Sql, q: SqlQuery): Promise<T[]> {
    return (await sql.unsafe(
      numbered(q.text),
      q.params as postgres.ParameterOrJSON<never>[],
    )) as unknown as T[];
  }

  async migrate(): Promise<void> {
    await this.guard(() =>
      this.sql.begin(async (tx) => {
        await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`;
        await tx`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)`;
        const applied = new Set(
          (await tx`SELECT version FROM schema_migrations`).map((r) => Number(r.version)),
        );
        for (const migration of MIGRATIONS) {
          if (applied.has(migration.version)) continue;
          await tx.unsafe(migration.postgres);
          await tx`INSERT INTO schema_migrations (version, name) VALUES (${migration.version}, ${migration.name})`;
        }
      }),
    );
  }

  async close(): Promise<void> {
    await this.sql.end({ timeout: 5 });
  }

  /**
   * One transaction running the planner's plans (planner.ts). The fencing check locks the agent's
   * fence row first; rows a plan reads to check a precondition are locked as it asks (see `Lock`).
   */
  async commit(mutations: Mutation[], options?: CommitOptions): Promise<void> {
    await this.guard(() =>
      this.sql.begin((tx) =>
        runCommitAsync(
          (op) => this.execute(tx, op),
          mutations,
          options,
          (err, m) =>
            isUniqueViolation(err) ? new KelpieError("CONFLICT", `${m.op}: ${(err as Error).message}`) : err,
        ),
      ),
    );
  }

  /** PostgreSQL's row operations, inside a commit's transaction. */
  private async execute(tx: Sql, op: RowOp): Promise<unknown> {
    switch (op.kind) {
      case "read_fence": {
        // A lease that lapsed fences its holder too, even before anyone takes it over: so a node
        // cut off from the database for a lease TTL can no longer commit when it reconnects.
        // FOR KEY SHARE holds off every token bump (they lock FOR UPDATE) but not the holder's
        // heartbeat renewing the lease, which would otherwise queue behind every commit in flight.
        const rows = await tx.unsafe(
          `SELECT token, lease_expires_at IS NOT NULL AND lease_expires_at <= now() AS lapsed
           FROM agent_fences WHERE agent_id = $1 ${ROW_LOCKS[op.lock]}`,
          [op.agent_id],
        );
        if (rows.length === 0) return { token: 0, lapsed: false } satisfies FenceState;
        return { token: Number(rows[0]!.token), lapsed: rows[0]!.lapsed === true } satisfies FenceState;
      }
      case "exists":
        return (
          (await tx.unsafe(`SELECT 1 FROM ${op.table} WHERE id = $1 ${ROW_LOCKS[op.lock]}`, [op.id])).length >
          0
        );
      case "block_version": {
        const rows = await tx`SELECT version FROM blocks WHERE id = ${op.id} FOR UPDATE`;
        return rows.length === 0 ? null : Number(rows[0]!.version);
      }
      case "taken": {
        const rows =
          op.index === "tool_name"
            ? await tx`SELECT 1 FROM tools WHERE name = ${op.value} AND id <> ${op.except_id} AND tool_type <> 'external_mcp'`
            : op.index === "mcp_server_name"
              ? await tx`SELECT 1 FROM mcp_servers WHERE server_name = ${op.value} AND id <> ${op.except_id}`
              : await tx`SELECT 1 FROM api_keys WHERE key_sha256 = ${op.value} AND id <> ${op.except_id}`;
        return rows.length > 0;
      }
      case "count_outbox":
        return Number((await tx`SELECT count(*) AS n FROM outbox WHERE agent_id = ${op.agent_id}`)[0]!.n);
      case "working_usage": {
        const [row] = await tx`SELECT count(*) AS n, coalesce(sum(size_bytes), 0) AS bytes FROM working_memory
          WHERE agent_id = ${op.agent_id} AND key <> ${op.except_key}
            AND (expires_at_ms IS NULL OR expires_at_ms > ${op.at_ms})`;
        return { keys: Number(row!.n), bytes: Number(row!.bytes) } satisfies WorkingUsage;
      }
      case "existing_passages":
        return (await tx`SELECT id FROM passages WHERE id = ANY(${op.ids}::text[])`).map(
          (r) => r.id as string,
        );
      case "unattached_archives": {
        // The archive rows are locked first, so an attach in flight (it takes FOR KEY SHARE on its
        // archive) is either seen here or waits and then finds the archive gone.
        await tx`SELECT 1 FROM archives WHERE id = ANY(${op.ids}::text[]) ORDER BY id FOR UPDATE`;
        return (
          await tx`SELECT id FROM archives WHERE id = ANY(${op.ids}::text[])
                   AND NOT EXISTS (SELECT 1 FROM agent_archives aa WHERE aa.archive_id = archives.id)`
        ).map((r) => r.id as string);
      }
      case "write":
        return this.write(tx, op);
      case "insert_passages": {
        for (const { passage, vector } of op.rows) {
          await tx`INSERT INTO passages (id, archive_id, created_at_ms, text, doc, embedding)
            VALUES (${passage.id}, ${passage.archive_id}, ${passage.created_at_ms}, ${passage.text},
                    ${tx.json(passageDoc(passage) as never)}, ${vectorBytes(vector)})`;
        }
        return;
      }
      case "patch": {
        // Only the given keys are merged into the stored document, under the row's lock.
        const set = JSON.stringify(op.set);
        const r =
          op.table === "conversations"
            ? await tx`UPDATE conversations SET doc = doc || ${set}::text::jsonb WHERE id = ${op.id}`
            : await tx`UPDATE archives SET name = coalesce(${(op.set.name as string | undefined) ?? null}, name),
                       doc = doc || ${set}::text::jsonb WHERE id = ${op.id}`;
        return r.count;
      }
      case "delete":
        return (await tx.unsafe(`DELETE FROM ${op.table} WHERE id = $1`, [op.id])).count;
      case "delete_children":
        await tx.unsafe(`DELETE FROM ${op.table} WHERE ${op.column} = $1`, [op.parent_id]);
        return;
      case "attach": {
        const [rel, column] = RELATION_COLUMNS[op.relation];
        await tx.unsafe(
          `INSERT INTO ${rel} (agent_id, ${column}, position)
           VALUES ($1, $2, (SELECT coalesce(max(position), 0) + 1 FROM ${rel} WHERE agent_id = $1))
           ON CONFLICT DO NOTHING`,
          [op.agent_id, op.target_id],
        );
        return;
      }
      case "detach": {
        const [rel, column] = RELATION_COLUMNS[op.relation];
        await tx.unsafe(`DELETE FROM ${rel} WHERE agent_id = $1 AND ${column} = $2`, [
          op.agent_id,
          op.target_id,
        ]);
        return;
      }
      case "delete_messages_except":
        await tx`DELETE FROM messages WHERE agent_id = ${op.agent_id} AND NOT (id = ANY(${op.except_ids}::text[]))`;
        return;
      case "delete_working":
        await tx`DELETE FROM working_memory WHERE agent_id = ${op.agent_id} AND key = ${op.key}`;
        return;
      case "delete_fence":
        await tx`DELETE FROM agent_fences WHERE agent_id = ${op.agent_id}`;
        return;
    }
    return unreachable(op);
  }

  /** Writes one record's row (and the index rows kept beside it, an agent's tags). */
  private async write(tx: Sql, op: Extract<RowOp, { kind: "write" }>): Promise<void> {
    const update = op.mode === "update";
    switch (op.table) {
      case "agents": {
        const a = op.record;
        if (update) {
          await tx`UPDATE agents SET name = ${a.name}, created_at_ms = ${a.created_at_ms},
                   updated_at_ms = ${a.updated_at_ms}, doc = ${tx.json(a as never)} WHERE id = ${a.id}`;
          await tx`DELETE FROM agent_tags WHERE agent_id = ${a.id}`;
        } else {
          await tx`INSERT INTO agents (id, name, created_at_ms, updated_at_ms, doc)
                   VALUES (${a.id}, ${a.name}, ${a.created_at_ms}, ${a.updated_at_ms}, ${tx.json(a as never)})`;
        }
        for (const tag of a.tags) {
          await tx`INSERT INTO agent_tags (agent_id, tag) VALUES (${a.id}, ${tag}) ON CONFLICT DO NOTHING`;
        }
        return;
      }
      case "blocks": {
        const b = op.record;
        if (update)
          await tx`UPDATE blocks SET label = ${b.label}, is_template = ${b.is_template},
                   template_name = ${b.template_name}, version = ${b.version}, doc = ${tx.json(b as never)}
                   WHERE id = ${b.id}`;
        else
          await tx`INSERT INTO blocks (id, label, is_template, template_name, version, doc)
                   VALUES (${b.id}, ${b.label}, ${b.is_template}, ${b.template_name}, ${b.version}, ${tx.json(b as never)})`;
        return;
      }
      case "tools": {
        const t = op.record;
        if (update)
          await tx`UPDATE tools SET name = ${t.name}, tool_type = ${t.tool_type}, doc = ${tx.json(t as never)}
                   WHERE id = ${t.id}`;
        else
          await tx`INSERT INTO tools (id, name, tool_type, doc)
                   VALUES (${t.id}, ${t.name}, ${t.tool_type}, ${tx.json(t as never)})`;
        return;
      }
      case "messages": {
        const msg = op.record;
        await tx`INSERT INTO messages (id, agent_id, run_id, created_at_ms, doc)
                 VALUES (${msg.id}, ${msg.agent_id}, ${msg.run_id}, ${msg.created_at_ms}, ${tx.json(msg as never)})
                 ON CONFLICT (id) DO UPDATE SET agent_id = EXCLUDED.agent_id, run_id = EXCLUDED.run_id,
                   created_at_ms = EXCLUDED.created_at_ms, doc = EXCLUDED.doc`;
        return;
      }
      case "runs": {
        const run = op.record;
        await tx`INSERT INTO runs (id, agent_id, doc) VALUES (${run.id}, ${run.agent_id}, ${tx.json(run as never)})
                 ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc`;
        return;
      }
      case "steps": {
        const step = op.record;
        await tx`INSERT INTO steps (id, run_id, agent_id, doc)
                 VALUES (${step.id}, ${step.run_id}, ${step.agent_id}, ${tx.json(step as never)})
                 ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc`;
        return;
      }
      case "mcp_servers": {
        const server = op.record;
        if (update)
          await tx`UPDATE mcp_servers SET server_name = ${server.server_name}, doc = ${tx.json(server as never)}
                   WHERE id = ${server.id}`;
        else
          await tx`INSERT INTO mcp_servers (id, server_name, doc)
                   VALUES (${server.id}, ${server.server_name}, ${tx.json(server as never)})`;
        return;
      }
      case "api_keys": {
        const k = op.record;
        await tx`INSERT INTO api_keys (id, key_sha256, doc) VALUES (${k.id}, ${k.key_sha256}, ${tx.json(k as never)})`;
        return;
      }
      case "audit_log": {
        const e = op.record;
        await tx`INSERT INTO audit_log (id, at_ms, doc) VALUES (${e.id}, ${e.at_ms}, ${tx.json(e as never)})`;
        return;
      }
      case "idempotent_responses": {
        const r = op.record;
        await tx`INSERT INTO idempotent_responses (key, status_code, body, created_at_ms)
                 VALUES (${r.key}, ${r.status_code}, ${r.body}, ${r.created_at_ms}) ON CONFLICT (key) DO NOTHING`;
        return;
      }
      case "conversations": {
        const c = op.record;
        if (update) await tx`UPDATE conversations SET doc = ${tx.json(c as never)} WHERE id = ${c.id}`;
        else
          await tx`INSERT INTO conversations (id, agent_id, doc) VALUES (${c.id}, ${c.agent_id}, ${tx.json(c as never)})`;
        return;
      }
      case "outbox": {
        const e = op.record;
        if (update) await tx`UPDATE outbox SET doc = ${tx.json(e as never)} WHERE id = ${e.id}`;
        else
          await tx`INSERT INTO outbox (id, agent_id, doc) VALUES (${e.id}, ${e.agent_id}, ${tx.json(e as never)})`;
        return;
      }
      case "archives": {
        const a = op.record;
        if (update)
          await tx`UPDATE archives SET name = ${a.name}, doc = ${tx.json(a as never)} WHERE id = ${a.id}`;
        else
          await tx`INSERT INTO archives (id, name, created_at_ms, doc)
                   VALUES (${a.id}, ${a.name}, ${a.created_at_ms}, ${tx.json(a as never)})`;
        return;
      }
      case "working_memory": {
        const e = op.record;
        // The value goes as JSON text cast to jsonb: the driver's json parameter sends a JSON
        // `null` as SQL NULL, which the NOT NULL column refuses.
        await tx`INSERT INTO working_memory (agent_id, key, size_bytes, expires_at_ms, updated_at_ms, value)
          VALUES (${e.agent_id}, ${e.key}, ${e.size_bytes}, ${e.expires_at_ms}, ${e.updated_at_ms},
                  ${JSON.stringify(e.value)}::text::jsonb)
          ON CONFLICT (agent_id, key) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,
            expires_at_ms = EXCLUDED.expires_at_ms, updated_at_ms = EXCLUDED.updated_at_ms, value = EXCLUDED.value`;
        return;
      }
    }
    unreachable(op);
  }

  async acquireFence(agentId: string): Promise<number> {
    return this.guard(async () => {
      // Naming the key column makes the update lock the row FOR UPDATE, so it waits for a commit
      // in flight (which holds FOR KEY SHARE on the row).
      const rows = await this.sql`INSERT INTO agent_fences (agent_id, token) VALUES (${agentId}, 1)
        ON CONFLICT (agent_id) DO UPDATE SET agent_id = EXCLUDED.agent_id, token = agent_fences.token + 1
        RETURNING token`;
      return Number(rows[0]!.token);
    });
  }

  async currentFence(agentId: string): Promise<number> {
    return this.guard(async () => {
      const rows = await this.sql`SELECT token FROM agent_fences WHERE agent_id = ${agentId}`;
      return rows.length === 0 ? 0 : Number(rows[0]!.token);
    });
  }

  private async assemble(stored: StoredAgent): Promise<AgentRecord> {
    const [blocks, tools] = await Promise.all([
      this.sql`SELECT block_id FROM agent_blocks WHERE agent_id = ${stored.id} ORDER BY position`,
      this.sql`SELECT tool_id FROM agent_tools WHERE agent_id = ${stored.id} ORDER BY position`,
    ]);
    return {
      ...stored,
      block_ids: blocks.map((r) => r.block_id as string),
      tool_ids: tools.map((r) => r.tool_id as string),
    };
  }

  private async list<T>(table: string, q: PageQuery, query: SqlQuery): Promise<T[]> {
    return this.guard(async () => {
      for (const field of ["after", "before"] as const) {
        const id = q[field];
        if (
          id !== undefined &&
          (await this.sql.unsafe(`SELECT 1 FROM ${table} WHERE id = $1`, [id])).length === 0
        ) {
          throw invalidField(["query", field], `no item with id '${id}'`);
        }
      }
      return (await this.query<{ doc: T }>(this.sql, query)).map((r) => r.doc);
    });
  }

  private async one<T>(text: string, param: string): Promise<T | null> {
    return this.guard(async () => {
      const rows = await this.sql.unsafe(text, [param]);
      return rows.length === 0 ? null : (rows[0]!.doc as T);
    });
  }

  private async byIds<T extends { id: string }>(
    table: "blocks" | "tools" | "messages",
    ids: string[],
  ): Promise<T[]> {
    if (ids.length === 0) return [];
    return this.guard(async () => {
      const rows = await this.sql.unsafe(`SELECT doc FROM ${table} WHERE id = ANY($1::text[])`, [ids]);
      const byId = new Map(rows.map((r) => [(r.doc as T).id, r.doc as T]));
      return ids.flatMap((id) => {
        const found = byId.get(id);
        return found === undefined ? [] : [found];
      });
    });
  }

  private async count(text: string, params: string[] = []): Promise<number> {
    return this.guard(async () => Number((await this.sql.unsafe(text, params))[0]!.n));
  }

  async getAgent(id: string): Promise<AgentRecord | null> {
    const stored = await this.one<StoredAgent>("SELECT doc FROM agents WHERE id = $1", id);
    return stored === null ? null : this.guard(() => this.assemble(stored));
  }

  async listAgents(query: AgentListQuery): Promise<AgentRecord[]> {
    const stored = await this.list<StoredAgent>("agents", query, agentListSql("postgres", query));
    return this.guard(() => Promise.all(stored.map((a) => this.assemble(a))));
  }

  countAgents(): Promise<number> {
    return this.count("SELECT count(*) AS n FROM agents");
  }

  getBlock(id: string): Promise<BlockRecord | null> {
    return this.one<BlockRecord>("SELECT doc FROM blocks WHERE id = $1", id);
  }

  getBlocks(ids: string[]): Promise<BlockRecord[]> {
    return this.byIds<BlockRecord>("blocks", ids);
  }

  listBlocks(query: BlockListQuery): Promise<BlockRecord[]> {
    return this.list<BlockRecord>("blocks", query, blockListSql("postgres", query));
  }

  countBlocks(): Promise<number> {
    return this.count("SELECT count(*) AS n FROM blocks");
  }

  async listBlockAgentIds(blockId: string): Promise<string[]> {
    return this.guard(async () =>
      (
        await this
          .sql`SELECT ab.agent_id FROM agent_blocks ab JOIN agents a ON a.id = ab.agent_id WHERE ab.block_id = ${blockId} ORDER BY a.seq`
      ).map((r) => r.agent_id as string),
    );
  }

  getTool(id: string): Promise<ToolRecord | null> {
    return this.one<ToolRecord>("SELECT doc FROM tools WHERE id = $1", id);
  }

  getToolByName(name: string): Promise<ToolRecord | null> {
    return this.one<ToolRecord>(
      "SELECT doc FROM tools WHERE name = $1 ORDER BY (tool_type = 'external_mcp'), seq LIMIT 1",
      name,
    );
  }

  getTools(ids: string[]): Promise<ToolRecord[]> {
    return this.byIds<ToolRecord>("tools", ids);
  }

  listTools(query: ToolListQuery): Promise<ToolRecord[]> {
    return this.list<ToolRecord>("tools", query, toolListSql("postgres", query));
  }

  countTools(): Promise<number> {
    return this.count("SELECT count(*) AS n FROM tools");
  }

  getMessage(id: string): Promise<MessageRecord | null> {
    return this.one<MessageRecord>("SELECT doc FROM messages WHERE id = $1", id);
  }

  getMessages(ids: string[]): Promise<MessageRecord[]> {
    return this.byIds<MessageRecord>("messages", ids);
  }

  listMessages(agentId: string, query: PageQuery): Promise<MessageRecord[]> {
    return this.list<MessageRecord>("messages", query, messageListSql(agentId, query));
  }

  countMessages(agentId: string): Promise<number> {
    return this.count("SELECT count(*) AS n FROM messages WHERE agent_id = $1", [agentId]);
  }

  listRunMessages(runId: string, query: PageQuery): Promise<MessageRecord[]> {
    return this.list<MessageRecord>("messages", query, runMessageListSql(runId, query));
  }

  getRun(id: string): Promise<RunRecord | null> {
    return this.one<RunRecord>("SELECT doc FROM runs WHERE id = $1", id);
  }

  listRuns(agentId: string | undefined, query: PageQuery): Promise<RunRecord[]> {
    return this.list<RunRecord>("runs", query, runListSql(agentId, query));
  }

  listUnfinishedRuns(agentId: string | undefined, limit: number): Promise<RunRecord[]> {
    // The WHERE matches the partial index runs_unfinished.
    const unfinished = "doc->>'status' IN ('created', 'running')";
    return this.guard(async () => {
      const rows =
        agentId === undefined
          ? await this.sql.unsafe(`SELECT doc FROM runs WHERE ${unfinished} ORDER BY seq LIMIT $1`, [limit])
          : await this.sql.unsafe(
              `SELECT doc FROM runs WHERE ${unfinished} AND agent_id = $1 ORDER BY seq LIMIT $2`,
              [agentId, limit],
            );
      return rows.map((r) => r.doc as RunRecord);
    });
  }

  async listSteps(runId: string): Promise<StepRecord[]> {
    return this.guard(async () =>
      (await this.sql`SELECT doc FROM steps WHERE run_id = ${runId} ORDER BY seq`).map(
        (r) => r.doc as StepRecord,
      ),
    );
  }

  getOutboxEntry(id: string): Promise<OutboxRecord | null> {
    return this.one<OutboxRecord>("SELECT doc FROM outbox WHERE id = $1", id);
  }

  async listOutbox(agentId: string, limit: number): Promise<OutboxRecord[]> {
    return this.guard(async () =>
      (await this.sql`SELECT doc FROM outbox WHERE agent_id = ${agentId} ORDER BY seq LIMIT ${limit}`).map(
        (r) => r.doc as OutboxRecord,
      ),
    );
  }

  async countOutbox(agentId: string): Promise<number> {
    return this.guard(async () =>
      Number((await this.sql`SELECT count(*) AS n FROM outbox WHERE agent_id = ${agentId}`)[0]!.n),
    );
  }

  async listOutboxSenders(limit: number): Promise<string[]> {
    return this.guard(async () =>
      (await this.sql`SELECT agent_id FROM outbox GROUP BY agent_id ORDER BY min(seq) LIMIT ${limit}`).map(
        (r) => r.agent_id as string,
      ),
    );
  }

  getMcpServer(id: string): Promise<McpServerRecord | null> {
    return this.one<McpServerRecord>("SELECT doc FROM mcp_servers WHERE id = $1", id);
  }

  async listMcpServers(): Promise<McpServerRecord[]> {
    return this.guard(async () =>
      (await this.sql`SELECT doc FROM mcp_servers ORDER BY seq`).map((r) => r.doc as McpServerRecord),
    );
  }

  async getConversation(id: string): Promise<ConversationRecord | null> {
    return this.one<ConversationRecord>("SELECT doc FROM conversations WHERE id = $1", id);
  }

  async listConversations(agentId: string | undefined, query: PageQuery): Promise<ConversationRecord[]> {
    return this.list<ConversationRecord>("conversations", query, conversationListSql(agentId, query));
  }

  async getIdempotent(key: string): Promise<IdempotentResponse | null> {
    return this.guard(async () => {
      const rows = await this
        .sql`SELECT key, status_code, body, created_at_ms FROM idempotent_responses WHERE key = ${key}`;
      if (rows.length === 0) return null;
      const r = rows[0]!;
      return {
        key: String(r.key),
        status_code: Number(r.status_code),
        body: String(r.body),
        created_at_ms: Number(r.created_at_ms),
      };
    });
  }

  async listApiKeys(): Promise<ApiKeyRecord[]> {
    return this.guard(async () =>
      (await this.sql`SELECT doc FROM api_keys ORDER BY seq`).map((r) => r.doc as ApiKeyRecord),
    );
  }

  listAudit(query: PageQuery): Promise<AuditRecord[]> {
    return this.list<AuditRecord>("audit_log", query, auditListSql(query));
  }

  coreMemoryChars(): Promise<number> {
    return this.count("SELECT coalesce(sum(length(doc->>'value')), 0) AS n FROM blocks");
  }
}
