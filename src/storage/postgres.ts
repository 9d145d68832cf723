// The PostgreSQL engine (postgres.js), for several nodes sharing one database. A commit is one
// transaction; the fencing check locks the agent's fence row, so two commits with different
// tokens cannot both pass.
import postgres from "postgres";
import {
  OUTBOX_ENTRIES_PER_AGENT_MAX,
  POSTGRES_IDLE_IN_TRANSACTION_MS,
  POSTGRES_POOL_CONNECTIONS_MAX,
} from "../core/constants.ts";
import { invalidField, isKelpieError, KelpieError, notFound, outboxFull } from "../core/errors.ts";
import { MIGRATIONS } from "./migrations.ts";
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
import { passageDoc, vectorBytes, workingLimitError } from "./tier-codec.ts";
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

  async commit(mutations: Mutation[], options?: CommitOptions): Promise<void> {
    await this.guard(() =>
      this.sql.begin(async (tx) => {
        const fence = options?.fence;
        if (fence !== undefined) {
          // A lease that lapsed fences its holder too, even before anyone takes it over: so a node
          // cut off from the database for a lease TTL can no longer commit when it reconnects.
          // FOR KEY SHARE holds off every token bump (they lock FOR UPDATE) but not the holder's
          // heartbeat renewing the lease, which would otherwise queue behind every commit in flight.
          // Deleting the agent deletes the row: that takes FOR UPDATE from the start (no upgrade,
          // so no deadlock with a takeover queued on the row).
          const deletes = mutations.some((m) => m.op === "delete_agent" && m.agent_id === fence.agent_id);
          const rows = deletes
            ? await tx`SELECT token, lease_expires_at IS NOT NULL AND lease_expires_at <= now() AS lapsed
              FROM agent_fences WHERE agent_id = ${fence.agent_id} FOR UPDATE`
            : await tx`SELECT token, lease_expires_at IS NOT NULL AND lease_expires_at <= now() AS lapsed
              FROM agent_fences WHERE agent_id = ${fence.agent_id} FOR KEY SHARE`;
          const stored = rows.length === 0 ? 0 : Number(rows[0]!.token);
          if (stored !== fence.token) {
            throw new KelpieError(
              "FENCED",
              `agent ${fence.agent_id}: fencing token ${fence.token} is stale (current ${stored})`,
            );
          }
          if (rows[0]!.lapsed === true) {
            throw new KelpieError(
              "FENCED",
              `agent ${fence.agent_id}: the lease of token ${fence.token} lapsed`,
            );
          }
        }
        for (const m of mutations) {
          try {
            await this.apply(tx, m);
          } catch (err) {
            if (isUniqueViolation(err))
              throw new KelpieError("CONFLICT", `${m.op}: ${(err as Error).message}`);
            throw err;
          }
        }
      }),
    );
  }

  private async exists(tx: Sql, table: "agents" | "blocks" | "tools", id: string): Promise<boolean> {
    return (await tx.unsafe(`SELECT 1 FROM ${table} WHERE id = $1`, [id])).length > 0;
  }

  private async apply(tx: Sql, m: Mutation): Promise<void> {
    switch (m.op) {
      case "put_agent": {
        const a = m.agent;
        if (m.create) {
          if (await this.exists(tx, "agents", a.id))
            throw new KelpieError("CONFLICT", `agent ${a.id} already exists`);
          await tx`INSERT INTO agents (id, name, created_at_ms, updated_at_ms, doc)
                   VALUES (${a.id}, ${a.name}, ${a.created_at_ms}, ${a.updated_at_ms}, ${tx.json(a as never)})`;
        } else {
          const r = await tx`UPDATE agents SET name = ${a.name}, created_at_ms = ${a.created_at_ms},
                             updated_at_ms = ${a.updated_at_ms}, doc = ${tx.json(a as never)} WHERE id = ${a.id}`;
          if (r.count === 0) throw notFound("agent", a.id);
          await tx`DELETE FROM agent_tags WHERE agent_id = ${a.id}`;
        }
        for (const tag of a.tags) {
          await tx`INSERT INTO agent_tags (agent_id, tag) VALUES (${a.id}, ${tag}) ON CONFLICT DO NOTHING`;
        }
        return;
      }
      case "delete_agent": {
        const r = await tx`DELETE FROM agents WHERE id = ${m.agent_id}`;
        if (r.count === 0) throw notFound("agent", m.agent_id);
        await tx`DELETE FROM agent_fences WHERE agent_id = ${m.agent_id}`;
        return;
      }
      case "put_block": {
        const b = m.block;
        const rows = await tx`SELECT version FROM blocks WHERE id = ${b.id} FOR UPDATE`;
        const stored = rows.length === 0 ? undefined : Number(rows[0]!.version);
        if (m.create && stored !== undefined)
          throw new KelpieError("CONFLICT", `block ${b.id} already exists`);
        if (!m.create && stored === undefined) throw notFound("block", b.id);
        if (stored !== undefined && b.version !== stored + 1) {
          throw new KelpieError("CONFLICT", `block ${b.id} was changed concurrently`);
        }
        if (stored !== undefined) {
          await tx`UPDATE blocks SET label = ${b.label}, is_template = ${b.is_template},
                   template_name = ${b.template_name}, version = ${b.version}, doc = ${tx.json(b as never)}
                   WHERE id = ${b.id}`;
        } else {
          await tx`INSERT INTO blocks (id, label, is_template, template_name, version, doc)
                   VALUES (${b.id}, ${b.label}, ${b.is_template}, ${b.template_name}, ${b.version}, ${tx.json(b as never)})`;
        }
        return;
      }
      case "delete_block": {
        const r = await tx`DELETE FROM blocks WHERE id = ${m.block_id}`;
        if (r.count === 0) throw notFound("block", m.block_id);
        return;
      }
      case "put_tool": {
        const t = m.tool;
        const exists = await this.exists(tx, "tools", t.id);
        if (m.create && exists) throw new KelpieError("CONFLICT", `tool ${t.id} already exists`);
        if (!m.create && !exists) throw notFound("tool", t.id);
        // MCP tools keep their servers' names (two servers may both have an "echo"); others are unique.
        const clash =
          t.tool_type === "external_mcp"
            ? []
            : await tx`SELECT id FROM tools WHERE name = ${t.name} AND id <> ${t.id} AND tool_type <> 'external_mcp'`;
        if (clash.length > 0) throw new KelpieError("CONFLICT", `a tool named '${t.name}' already exists`);
        if (exists) {
          await tx`UPDATE tools SET name = ${t.name}, tool_type = ${t.tool_type}, doc = ${tx.json(t as never)}
                   WHERE id = ${t.id}`;
        } else {
          await tx`INSERT INTO tools (id, name, tool_type, doc)
                   VALUES (${t.id}, ${t.name}, ${t.tool_type}, ${tx.json(t as never)})`;
        }
        return;
      }
      case "delete_tool": {
        const r = await tx`DELETE FROM tools WHERE id = ${m.tool_id}`;
        if (r.count === 0) throw notFound("tool", m.tool_id);
        return;
      }
      case "attach_block":
      case "detach_block": {
        if (!(await this.exists(tx, "agents", m.agent_id))) throw notFound("agent", m.agent_id);
        if (!(await this.exists(tx, "blocks", m.block_id))) throw notFound("block", m.block_id);
        if (m.op === "attach_block") {
          await tx`INSERT INTO agent_blocks (agent_id, block_id, position)
                   VALUES (${m.agent_id}, ${m.block_id},
                           (SELECT coalesce(max(position), 0) + 1 FROM agent_blocks WHERE agent_id = ${m.agent_id}))
                   ON CONFLICT DO NOTHING`;
        } else {
          await tx`DELETE FROM agent_blocks WHERE agent_id = ${m.agent_id} AND block_id = ${m.block_id}`;
        }
        return;
      }
      case "attach_tool":
      case "detach_tool": {
        if (!(await this.exists(tx, "agents", m.agent_id))) throw notFound("agent", m.agent_id);
        if (!(await this.exists(tx, "tools", m.tool_id))) throw notFound("tool", m.tool_id);
        if (m.op === "attach_tool") {
          await tx`INSERT INTO agent_tools (agent_id, tool_id, position)
                   VALUES (${m.agent_id}, ${m.tool_id},
                           (SELECT coalesce(max(position), 0) + 1 FROM agent_tools WHERE agent_id = ${m.agent_id}))
                   ON CONFLICT DO NOTHING`;
        } else {
          await tx`DELETE FROM agent_tools WHERE agent_id = ${m.agent_id} AND tool_id = ${m.tool_id}`;
        }
        return;
      }
      case "put_message": {
        const msg = m.message;
        if (!(await this.exists(tx, "agents", msg.agent_id))) throw notFound("agent", msg.agent_id);
        await tx`INSERT INTO messages (id, agent_id, run_id, created_at_ms, doc)
                 VALUES (${msg.id}, ${msg.agent_id}, ${msg.run_id}, ${msg.created_at_ms}, ${tx.json(msg as never)})
                 ON CONFLICT (id) DO UPDATE SET agent_id = EXCLUDED.agent_id, run_id = EXCLUDED.run_id,
                   created_at_ms = EXCLUDED.created_at_ms, doc = EXCLUDED.doc`;
        return;
      }
      case "delete_agent_messages": {
        await tx`DELETE FROM messages WHERE agent_id = ${m.agent_id} AND NOT (id = ANY(${m.except_ids}::text[]))`;
        return;
      }
      case "put_run": {
        const run = m.run;
        if (!(await this.exists(tx, "agents", run.agent_id))) throw notFound("agent", run.agent_id);
        await tx`INSERT INTO runs (id, agent_id, doc) VALUES (${run.id}, ${run.agent_id}, ${tx.json(run as never)})
                 ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc`;
        return;
      }
      case "put_mcp_server": {
        const server = m.server;
        const exists = (await tx`SELECT 1 FROM mcp_servers WHERE id = ${server.id}`).length > 0;
        if (m.create && exists) throw new KelpieError("CONFLICT", `MCP server ${server.id} already exists`);
        if (!m.create && !exists) throw new KelpieError("NOT_FOUND", `MCP server ${server.id} not found`);
        const clash =
          await tx`SELECT 1 FROM mcp_servers WHERE server_name = ${server.server_name} AND id <> ${server.id}`;
        if (clash.length > 0)
          throw new KelpieError("CONFLICT", `an MCP server named '${server.server_name}' already exists`);
        if (exists) {
          await tx`UPDATE mcp_servers SET server_name = ${server.server_name}, doc = ${tx.json(server as never)}
                   WHERE id = ${server.id}`;
        } else {
          await tx`INSERT INTO mcp_servers (id, server_name, doc)
                   VALUES (${server.id}, ${server.server_name}, ${tx.json(server as never)})`;
        }
        return;
      }
      case "delete_mcp_server": {
        const r = await tx`DELETE FROM mcp_servers WHERE id = ${m.server_id}`;
        if (r.count === 0) throw new KelpieError("NOT_FOUND", `MCP server ${m.server_id} not found`);
        return;
      }
      case "put_api_key": {
        const clash = await tx`SELECT 1 FROM api_keys WHERE key_sha256 = ${m.key.key_sha256}`;
        if (clash.length > 0) throw new KelpieError("CONFLICT", "this API key already exists");
        await tx`INSERT INTO api_keys (id, key_sha256, doc) VALUES (${m.key.id}, ${m.key.key_sha256}, ${tx.json(m.key as never)})`;
        return;
      }
      case "put_conversation": {
        const c = m.conversation;
        const exists = (await tx`SELECT 1 FROM conversations WHERE id = ${c.id}`).length > 0;
        if (m.create && exists) throw new KelpieError("CONFLICT", `conversation ${c.id} already exists`);
        if (!m.create && !exists) throw new KelpieError("NOT_FOUND", `Conversation ${c.id} not found`);
        if (exists) {
          await tx`UPDATE conversations SET doc = ${tx.json(c as never)} WHERE id = ${c.id}`;
        } else {
          if (!(await this.exists(tx, "agents", c.agent_id))) throw notFound("agent", c.agent_id);
          await tx`INSERT INTO conversations (id, agent_id, doc) VALUES (${c.id}, ${c.agent_id}, ${tx.json(c as never)})`;
        }
        return;
      }
      case "patch_conversation": {
        // Only the patched keys are merged into the stored document, under the row's lock.
        const set: Record<string, unknown> = { updated_at_ms: m.updated_at_ms };
        if (m.summary !== undefined) set.summary = m.summary;
        if (m.model !== undefined) set.model = m.model;
        const r = await tx`UPDATE conversations SET doc = doc || ${JSON.stringify(set)}::text::jsonb
                           WHERE id = ${m.conversation_id}`;
        if (r.count === 0) throw new KelpieError("NOT_FOUND", `Conversation ${m.conversation_id} not found`);
        return;
      }
      case "delete_conversation": {
        const r = await tx`DELETE FROM conversations WHERE id = ${m.conversation_id}`;
        if (r.count === 0) throw new KelpieError("NOT_FOUND", `Conversation ${m.conversation_id} not found`);
        return;
      }
      case "put_outbox": {
        const e = m.entry;
        const exists = (await tx`SELECT 1 FROM outbox WHERE id = ${e.id}`).length > 0;
        if (m.create && exists) throw new KelpieError("CONFLICT", `outbox entry ${e.id} already exists`);
        if (!m.create && !exists) throw new KelpieError("NOT_FOUND", `Outbox entry ${e.id} not found`);
        if (exists) {
          await tx`UPDATE outbox SET doc = ${tx.json(e as never)} WHERE id = ${e.id}`;
          return;
        }
        // The sender's row, locked: two commits adding to one outbox count one after the other.
        if ((await tx`SELECT 1 FROM agents WHERE id = ${e.agent_id} FOR NO KEY UPDATE`).length === 0)
          throw notFound("agent", e.agent_id);
        const held = Number(
          (await tx`SELECT count(*) AS n FROM outbox WHERE agent_id = ${e.agent_id}`)[0]!.n,
        );
        if (held >= OUTBOX_ENTRIES_PER_AGENT_MAX) throw outboxFull(e.agent_id, held);
        await tx`INSERT INTO outbox (id, agent_id, doc) VALUES (${e.id}, ${e.agent_id}, ${tx.json(e as never)})`;
        return;
      }
      case "delete_outbox": {
        await tx`DELETE FROM outbox WHERE id = ${m.entry_id}`;
        return;
      }
      case "put_idempotent": {
        const r = m.response;
        await tx`INSERT INTO idempotent_responses (key, status_code, body, created_at_ms)
                 VALUES (${r.key}, ${r.status_code}, ${r.body}, ${r.created_at_ms}) ON CONFLICT (key) DO NOTHING`;
        return;
      }
      case "put_audit": {
        await tx`INSERT INTO audit_log (id, at_ms, doc) VALUES (${m.entry.id}, ${m.entry.at_ms}, ${tx.json(m.entry as never)})`;
        return;
      }
      case "put_step": {
        const step = m.step;
        await tx`INSERT INTO steps (id, run_id, agent_id, doc)
                 VALUES (${step.id}, ${step.run_id}, ${step.agent_id}, ${tx.json(step as never)})
                 ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc`;
        return;
      }
      default:
        await this.applyTier(tx, m);
    }
  }

  /** Archival and working memory (postgres-tiers.ts reads them). */
  private async applyTier(tx: Sql, m: Mutation): Promise<void> {
    switch (m.op) {
      case "put_working": {
        const e = m.entry;
        // The agent row's lock serializes puts to one agent: two cannot both count, then both write.
        const agent = await tx`SELECT 1 FROM agents WHERE id = ${e.agent_id} FOR NO KEY UPDATE`;
        if (agent.length === 0) throw notFound("agent", e.agent_id);
        const [live] =
          await tx`SELECT count(*) AS n, coalesce(sum(size_bytes), 0) AS bytes FROM working_memory
          WHERE agent_id = ${e.agent_id} AND key <> ${e.key}
            AND (expires_at_ms IS NULL OR expires_at_ms > ${e.updated_at_ms})`;
        const bytes = Number(live!.bytes) + e.size_bytes;
        const over = workingLimitError(e.agent_id, Number(live!.n), bytes, m.limits);
        if (over !== null) throw over;
        // The value goes as JSON text cast to jsonb: the driver's json parameter sends a JSON
        // `null` as SQL NULL, which the NOT NULL column refuses.
        await tx`INSERT INTO working_memory (agent_id, key, size_bytes, expires_at_ms, updated_at_ms, value)
          VALUES (${e.agent_id}, ${e.key}, ${e.size_bytes}, ${e.expires_at_ms}, ${e.updated_at_ms},
                  ${JSON.stringify(e.value)}::text::jsonb)
          ON CONFLICT (agent_id, key) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,
            expires_at_ms = EXCLUDED.expires_at_ms, updated_at_ms = EXCLUDED.updated_at_ms, value = EXCLUDED.value`;
        return;
      }
      case "delete_working": {
        await tx`DELETE FROM working_memory WHERE agent_id = ${m.agent_id} AND key = ${m.key}`;
        return;
      }
      case "put_archive": {
        const a = m.archive;
        const exists = (await tx`SELECT 1 FROM archives WHERE id = ${a.id} FOR UPDATE`).length > 0;
        if (m.create && exists) throw new KelpieError("CONFLICT", `archive ${a.id} already exists`);
        if (!m.create && !exists) throw new KelpieError("NOT_FOUND", `Archive ${a.id} not found`);
        if (exists) {
          await tx`UPDATE archives SET name = ${a.name}, doc = ${tx.json(a as never)} WHERE id = ${a.id}`;
        } else {
          await tx`INSERT INTO archives (id, name, created_at_ms, doc)
                   VALUES (${a.id}, ${a.name}, ${a.created_at_ms}, ${tx.json(a as never)})`;
        }
        return;
      }
      case "patch_archive": {
        const set: Record<string, unknown> = { updated_at_ms: m.updated_at_ms };
        if (m.name !== undefined) set.name = m.name;
        if (m.description !== undefined) set.description = m.description;
        const r = await tx`UPDATE archives SET name = coalesce(${m.name ?? null}, name),
                           doc = doc || ${JSON.stringify(set)}::text::jsonb WHERE id = ${m.archive_id}`;
        if (r.count === 0) throw new KelpieError("NOT_FOUND", `Archive ${m.archive_id} not found`);
        return;
      }
      case "delete_archive": {
        const r = await tx`DELETE FROM archives WHERE id = ${m.archive_id}`;
        if (r.count === 0) throw new KelpieError("NOT_FOUND", `Archive ${m.archive_id} not found`);
        return;
      }
      case "delete_unattached_archives": {
        // The archive rows are locked first, so an attach in flight (it takes FOR KEY SHARE on its
        // archive) is either seen here or waits and then finds the archive gone.
        const ids = m.archive_ids;
        await tx`SELECT 1 FROM archives WHERE id = ANY(${ids}::text[]) ORDER BY id FOR UPDATE`;
        await tx`DELETE FROM archives WHERE id = ANY(${ids}::text[])
                 AND NOT EXISTS (SELECT 1 FROM agent_archives aa WHERE aa.archive_id = archives.id)`;
        return;
      }
      case "attach_archive":
      case "detach_archive": {
        if (!(await this.exists(tx, "agents", m.agent_id))) throw notFound("agent", m.agent_id);
        const archive = await tx`SELECT 1 FROM archives WHERE id = ${m.archive_id} FOR KEY SHARE`;
        if (archive.length === 0) throw new KelpieError("NOT_FOUND", `Archive ${m.archive_id} not found`);
        if (m.op === "attach_archive") {
          await tx`INSERT INTO agent_archives (agent_id, archive_id, position)
                   VALUES (${m.agent_id}, ${m.archive_id},
                     (SELECT coalesce(max(position), 0) + 1 FROM agent_archives WHERE agent_id = ${m.agent_id}))
                   ON CONFLICT DO NOTHING`;
        } else {
          await tx`DELETE FROM agent_archives WHERE agent_id = ${m.agent_id} AND archive_id = ${m.archive_id}`;
        }
        return;
      }
      case "insert_passages": {
        for (const id of new Set(m.rows.map((r) => r.passage.archive_id))) {
          if ((await tx`SELECT 1 FROM archives WHERE id = ${id} FOR KEY SHARE`).length === 0)
            throw new KelpieError("NOT_FOUND", `Archive ${id} not found`);
        }
        for (const { passage, vector } of m.rows) {
          await tx`INSERT INTO passages (id, archive_id, created_at_ms, text, doc, embedding)
            VALUES (${passage.id}, ${passage.archive_id}, ${passage.created_at_ms}, ${passage.text},
                    ${tx.json(passageDoc(passage) as never)}, ${vectorBytes(vector)})`;
        }
        return;
      }
      case "delete_passage": {
        const r = await tx`DELETE FROM passages WHERE id = ${m.passage_id}`;
        if (r.count === 0) throw new KelpieError("NOT_FOUND", `Passage ${m.passage_id} not found`);
        return;
      }
      default:
        throw new KelpieError("INTERNAL", `no PostgreSQL executor for mutation ${m.op}`);
    }
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
