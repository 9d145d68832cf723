// The write half of the SQLite engine: applies batches of commits (and fencing-token grants) in
// one transaction, each commit in its own savepoint. It runs on its own thread with its own
// connection (see sqlite-writer-worker.mjs), so the fsync of a group commit never stalls the event
// loop: the next batch gathers while this one is made durable.
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { OUTBOX_ENTRIES_PER_AGENT_MAX, SQLITE_BUSY_TIMEOUT_MS } from "../core/constants.ts";
import { type FieldIssue, KelpieError, notFound, outboxFull } from "../core/errors.ts";
import { passageDoc, vectorBytes, workingLimitError } from "./tier-codec.ts";
import type { CommitOptions, Mutation } from "./types.ts";

type Statement = Database.Statement<unknown[], unknown>;

export const SQLITE_CACHE_KIB = 64 * 1024;
export const SQLITE_WAL_CHECKPOINT_PAGES = 10_000;

/** One write waiting for the next group commit: a commit, or taking an agent's next fencing token. */
export type BatchItem =
  | { kind: "commit"; mutations: Mutation[]; options: CommitOptions | undefined }
  | { kind: "fence"; agentId: string };

/** An error as it crosses threads: typed errors keep their code and field issues. */
export interface WireError {
  kelpie: boolean;
  code: string;
  message: string;
  issues?: FieldIssue[] | undefined;
}

export type Outcome = { ok: true; value: unknown } | { ok: false; error: WireError };

export function toWireError(err: unknown): WireError {
  if (err instanceof KelpieError)
    return { kelpie: true, code: err.code, message: err.message, issues: err.issues };
  const e = err as { code?: unknown; message?: unknown };
  return {
    kelpie: false,
    code: typeof e.code === "string" ? e.code : "INTERNAL",
    message: String(e.message ?? err),
  };
}

export function fromWireError(w: WireError): Error {
  if (w.kelpie)
    return new KelpieError(w.code as never, w.message, w.issues ? { issues: w.issues } : undefined);
  return Object.assign(new Error(w.message), { code: w.code });
}

/** A function that prepares each SQL text once per connection and hands back the same statement. */
export function statementCache(db: Database.Database): (text: string) => Statement {
  const statements = new Map<string, Statement>();
  return (text) => {
    let statement = statements.get(text);
    if (statement === undefined) {
      statement = db.prepare(text);
      statements.set(text, statement);
    }
    return statement;
  };
}

/** Opens a connection with the engine's settings (WAL, fsync per commit unless "normal"). */
export function openSqlite(path: string, synchronous: "full" | "normal" | undefined): Database.Database {
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  db.pragma(`synchronous = ${synchronous === "normal" ? "NORMAL" : "FULL"}`);
  db.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
  db.pragma("foreign_keys = ON");
  // A page cache that holds the working set, and checkpoints every ~40 MB of WAL rather than every
  // 4 MB: busy servers write a lot per group commit, and each checkpoint costs an fsync.
  db.pragma(`cache_size = -${SQLITE_CACHE_KIB}`);
  db.pragma(`wal_autocheckpoint = ${SQLITE_WAL_CHECKPOINT_PAGES}`);
  return db;
}

export class SqliteWriter {
  /** A statement prepared once per SQL text. */
  private readonly sql: (text: string) => Statement;
  private readonly transactionOfBatch: (batch: BatchItem[], outcomes: Outcome[]) => void;
  private readonly commitOne: (mutations: Mutation[], options: CommitOptions | undefined) => void;

  constructor(private readonly db: Database.Database) {
    this.sql = statementCache(db);
    this.transactionOfBatch = this.db.transaction((batch: BatchItem[], outcomes: Outcome[]) => {
      for (const item of batch) {
        try {
          const value =
            item.kind === "fence"
              ? this.nextFence(item.agentId)
              : this.commitOne(item.mutations, item.options);
          outcomes.push({ ok: true, value });
        } catch (err) {
          outcomes.push({ ok: false, error: toWireError(err) });
        }
      }
    });
    this.commitOne = this.db.transaction((mutations: Mutation[], options: CommitOptions | undefined) =>
      this.runOne(mutations, options),
    );
  }

  /** Applies a batch in one transaction; one outcome per item. A failed transaction fails every item. */
  runBatch(batch: BatchItem[]): Outcome[] {
    const outcomes: Outcome[] = [];
    try {
      this.transactionOfBatch(batch, outcomes);
    } catch (err) {
      const error = toWireError(err);
      return batch.map(() => ({ ok: false, error }));
    }
    return outcomes;
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
      case "patch_conversation": {
        const row = this.sql("SELECT doc FROM conversations WHERE id = ?").get(m.conversation_id) as
          | { doc: string }
          | undefined;
        if (row === undefined)
          throw new KelpieError("NOT_FOUND", `Conversation ${m.conversation_id} not found`);
        const next = { ...(JSON.parse(row.doc) as object), updated_at_ms: m.updated_at_ms } as Record<
          string,
          unknown
        >;
        if (m.summary !== undefined) next.summary = m.summary;
        if (m.model !== undefined) next.model = m.model;
        this.sql("UPDATE conversations SET doc = ? WHERE id = ?").run(
          JSON.stringify(next),
          m.conversation_id,
        );
        return;
      }
      case "delete_conversation": {
        const { changes } = this.sql("DELETE FROM conversations WHERE id = ?").run(m.conversation_id);
        if (changes === 0) throw new KelpieError("NOT_FOUND", `Conversation ${m.conversation_id} not found`);
        return;
      }
      case "put_outbox": {
        const e = m.entry;
        const exists = this.sql("SELECT 1 FROM outbox WHERE id = ?").get(e.id) !== undefined;
        if (m.create && exists) throw new KelpieError("CONFLICT", `outbox entry ${e.id} already exists`);
        if (!m.create && !exists) throw new KelpieError("NOT_FOUND", `Outbox entry ${e.id} not found`);
        if (exists) {
          this.sql("UPDATE outbox SET doc = ? WHERE id = ?").run(JSON.stringify(e), e.id);
          return;
        }
        const { n } = this.sql("SELECT count(*) AS n FROM outbox WHERE agent_id = ?").get(e.agent_id) as {
          n: number;
        };
        if (n >= OUTBOX_ENTRIES_PER_AGENT_MAX) throw outboxFull(e.agent_id, n);
        this.withAgentKey(e.agent_id, () =>
          this.sql("INSERT INTO outbox (id, agent_id, doc) VALUES (?, ?, ?)").run(
            e.id,
            e.agent_id,
            JSON.stringify(e),
          ),
        );
        return;
      }
      case "delete_outbox": {
        this.sql("DELETE FROM outbox WHERE id = ?").run(m.entry_id);
        return;
      }
      case "put_idempotent": {
        const r = m.response;
        this.sql(
          "INSERT INTO idempotent_responses (key, status_code, body, created_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
        ).run(r.key, r.status_code, r.body, r.created_at_ms);
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
      default:
        this.applyTier(m);
    }
  }

  /** Archival and working memory (sqlite-tiers.ts reads them). */
  private applyTier(m: Mutation): void {
    switch (m.op) {
      case "put_working": {
        const e = m.entry;
        // One writer applies commits one at a time: the count and the write cannot interleave.
        const live = this.sql(
          `SELECT count(*) AS n, coalesce(sum(size_bytes), 0) AS bytes FROM working_memory
           WHERE agent_id = ? AND key <> ? AND (expires_at_ms IS NULL OR expires_at_ms > ?)`,
        ).get(e.agent_id, e.key, e.updated_at_ms) as { n: number; bytes: number };
        if (!this.exists("agents", e.agent_id)) throw notFound("agent", e.agent_id);
        const over = workingLimitError(e.agent_id, live.n, live.bytes + e.size_bytes, m.limits);
        if (over !== null) throw over;
        this.sql(
          `INSERT INTO working_memory (agent_id, key, size_bytes, expires_at_ms, updated_at_ms, value)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (agent_id, key) DO UPDATE SET size_bytes = excluded.size_bytes,
             expires_at_ms = excluded.expires_at_ms, updated_at_ms = excluded.updated_at_ms, value = excluded.value`,
        ).run(e.agent_id, e.key, e.size_bytes, e.expires_at_ms, e.updated_at_ms, JSON.stringify(e.value));
        return;
      }
      case "delete_working": {
        this.sql("DELETE FROM working_memory WHERE agent_id = ? AND key = ?").run(m.agent_id, m.key);
        return;
      }
      case "put_archive": {
        const a = m.archive;
        const exists = this.archiveExists(a.id);
        if (m.create && exists) throw new KelpieError("CONFLICT", `archive ${a.id} already exists`);
        if (!m.create && !exists) throw new KelpieError("NOT_FOUND", `Archive ${a.id} not found`);
        const doc = JSON.stringify(a);
        if (exists) this.sql("UPDATE archives SET name = ?, doc = ? WHERE id = ?").run(a.name, doc, a.id);
        else
          this.sql("INSERT INTO archives (id, name, created_at_ms, doc) VALUES (?, ?, ?, ?)").run(
            a.id,
            a.name,
            a.created_at_ms,
            doc,
          );
        return;
      }
      case "patch_archive": {
        const row = this.sql("SELECT doc FROM archives WHERE id = ?").get(m.archive_id) as
          | { doc: string }
          | undefined;
        if (row === undefined) throw new KelpieError("NOT_FOUND", `Archive ${m.archive_id} not found`);
        const next = {
          ...(JSON.parse(row.doc) as { name: string }),
          updated_at_ms: m.updated_at_ms,
        } as Record<string, unknown> & { name: string };
        if (m.name !== undefined) next.name = m.name;
        if (m.description !== undefined) next.description = m.description;
        this.sql("UPDATE archives SET name = ?, doc = ? WHERE id = ?").run(
          next.name,
          JSON.stringify(next),
          m.archive_id,
        );
        return;
      }
      case "delete_archive": {
        const { changes } = this.sql("DELETE FROM archives WHERE id = ?").run(m.archive_id);
        if (changes === 0) throw new KelpieError("NOT_FOUND", `Archive ${m.archive_id} not found`);
        return;
      }
      case "delete_unattached_archives": {
        this.sql(
          `DELETE FROM archives WHERE id IN (SELECT value FROM json_each(?))
           AND NOT EXISTS (SELECT 1 FROM agent_archives aa WHERE aa.archive_id = archives.id)`,
        ).run(JSON.stringify(m.archive_ids));
        return;
      }
      case "attach_archive":
      case "detach_archive": {
        if (!this.exists("agents", m.agent_id)) throw notFound("agent", m.agent_id);
        if (!this.archiveExists(m.archive_id))
          throw new KelpieError("NOT_FOUND", `Archive ${m.archive_id} not found`);
        if (m.op === "attach_archive") {
          this.sql(
            `INSERT OR IGNORE INTO agent_archives (agent_id, archive_id, position)
             VALUES (?, ?, (SELECT coalesce(max(position), 0) + 1 FROM agent_archives WHERE agent_id = ?))`,
          ).run(m.agent_id, m.archive_id, m.agent_id);
        } else {
          this.sql("DELETE FROM agent_archives WHERE agent_id = ? AND archive_id = ?").run(
            m.agent_id,
            m.archive_id,
          );
        }
        return;
      }
      case "insert_passages": {
        for (const { passage, vector } of m.rows) {
          if (!this.archiveExists(passage.archive_id))
            throw new KelpieError("NOT_FOUND", `Archive ${passage.archive_id} not found`);
          if (this.sql("SELECT 1 FROM passages WHERE id = ?").get(passage.id) !== undefined)
            throw new KelpieError("CONFLICT", `passage ${passage.id} already exists`);
          this.sql(
            "INSERT INTO passages (id, archive_id, created_at_ms, text, doc, embedding) VALUES (?, ?, ?, ?, ?, ?)",
          ).run(
            passage.id,
            passage.archive_id,
            passage.created_at_ms,
            passage.text,
            JSON.stringify(passageDoc(passage)),
            vectorBytes(vector),
          );
        }
        return;
      }
      case "delete_passage": {
        const { changes } = this.sql("DELETE FROM passages WHERE id = ?").run(m.passage_id);
        if (changes === 0) throw new KelpieError("NOT_FOUND", `Passage ${m.passage_id} not found`);
        return;
      }
      default:
        throw new KelpieError("INTERNAL", `no SQLite executor for mutation ${m.op}`);
    }
  }

  private archiveExists(id: string): boolean {
    return this.sql("SELECT 1 FROM archives WHERE id = ?").get(id) !== undefined;
  }

  private nextFence(agentId: string): number {
    const row = this.sql(
      `INSERT INTO agent_fences (agent_id, token) VALUES (?, 1)
       ON CONFLICT (agent_id) DO UPDATE SET token = token + 1 RETURNING token`,
    ).get(agentId) as { token: number };
    return row.token;
  }
}

/** The worker thread's loop: batches in, outcomes out, in order. */
export function serveWriter(): void {
  const port = parentPort;
  if (port === null) throw new Error("serveWriter runs in a worker thread");
  const { path, synchronous } = workerData as { path: string; synchronous: "full" | "normal" | undefined };
  const db = openSqlite(path, synchronous);
  const writer = new SqliteWriter(db);
  port.on("message", (message: { id: number; batch?: BatchItem[]; close?: true }) => {
    if (message.close) {
      db.close();
      port.postMessage({ id: message.id, outcomes: [] });
      port.close();
      return;
    }
    port.postMessage({ id: message.id, outcomes: writer.runBatch(message.batch ?? []) });
  });
}
