// The write half of the SQLite engine: applies batches of commits (and fencing-token grants) in
// one transaction, each commit in its own savepoint. It runs on its own thread with its own
// connection (see sqlite-writer-worker.mjs), so the fsync of a group commit never stalls the event
// loop: the next batch gathers while this one is made durable. What a commit means is the
// planner's (planner.ts); this file only executes its row operations on this connection.
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { unreachable } from "../core/assert.ts";
import { SQLITE_BUSY_TIMEOUT_MS } from "../core/constants.ts";
import { type FieldIssue, KelpieError } from "../core/errors.ts";
import { type FenceState, type Relation, type RowOp, runCommitSync, type WorkingUsage } from "./planner.ts";
import { passageDoc, vectorBytes } from "./tier-codec.ts";
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

/** Each relation's table and its target column. */
const RELATION_COLUMNS: Record<Relation, [string, string]> = {
  agent_blocks: ["agent_blocks", "block_id"],
  agent_tools: ["agent_tools", "tool_id"],
  agent_archives: ["agent_archives", "archive_id"],
};

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

  /**
   * One commit, its plans (planner.ts) run against this connection; run inside the batch's
   * transaction it is a savepoint (better-sqlite3 nests them so).
   */
  private runOne(mutations: Mutation[], options: CommitOptions | undefined): void {
    runCommitSync(this.execute, mutations, options);
  }

  /** Docs as stored: JSON text. */
  private static doc(record: object): string {
    return JSON.stringify(record);
  }

  /**
   * SQLite's row operations. One writer applies commits one at a time, so no row needs a lock
   * (`lock` is PostgreSQL's): what a plan read cannot change before it writes.
   */
  private readonly execute = (op: RowOp): unknown => {
    const doc = SqliteWriter.doc;
    switch (op.kind) {
      case "read_fence": {
        const row = this.sql("SELECT token FROM agent_fences WHERE agent_id = ?").get(op.agent_id) as
          | { token: number }
          | undefined;
        // A single SQLite node keeps no leases: nothing lapses.
        return { token: row?.token ?? 0, lapsed: false } satisfies FenceState;
      }
      case "exists":
        return this.sql(`SELECT 1 FROM ${op.table} WHERE id = ?`).get(op.id) !== undefined;
      case "block_version": {
        const row = this.sql("SELECT version FROM blocks WHERE id = ?").get(op.id) as
          | { version: number }
          | undefined;
        return row === undefined ? null : row.version;
      }
      case "taken": {
        const text =
          op.index === "tool_name"
            ? "SELECT 1 FROM tools WHERE name = ? AND id <> ? AND tool_type <> 'external_mcp'"
            : op.index === "mcp_server_name"
              ? "SELECT 1 FROM mcp_servers WHERE server_name = ? AND id <> ?"
              : "SELECT 1 FROM api_keys WHERE key_sha256 = ? AND id <> ?";
        return this.sql(text).get(op.value, op.except_id) !== undefined;
      }
      case "count_outbox":
        return (
          this.sql("SELECT count(*) AS n FROM outbox WHERE agent_id = ?").get(op.agent_id) as { n: number }
        ).n;
      case "working_usage": {
        const row = this.sql(
          `SELECT count(*) AS n, coalesce(sum(size_bytes), 0) AS bytes FROM working_memory
           WHERE agent_id = ? AND key <> ? AND (expires_at_ms IS NULL OR expires_at_ms > ?)`,
        ).get(op.agent_id, op.except_key, op.at_ms) as { n: number; bytes: number };
        return { keys: row.n, bytes: row.bytes } satisfies WorkingUsage;
      }
      case "existing_passages":
        return this.sql("SELECT id FROM passages WHERE id IN (SELECT value FROM json_each(?))")
          .pluck()
          .all(JSON.stringify(op.ids));
      case "unattached_archives":
        return this.sql(
          `SELECT id FROM archives WHERE id IN (SELECT value FROM json_each(?))
           AND NOT EXISTS (SELECT 1 FROM agent_archives aa WHERE aa.archive_id = archives.id)`,
        )
          .pluck()
          .all(JSON.stringify(op.ids));
      case "write":
        this.write(op);
        return;
      case "insert_passages": {
        const insert = this.sql(
          "INSERT INTO passages (id, archive_id, created_at_ms, text, doc, embedding) VALUES (?, ?, ?, ?, ?, ?)",
        );
        for (const { passage, vector } of op.rows) {
          const { id, archive_id, created_at_ms, text } = passage;
          insert.run(id, archive_id, created_at_ms, text, doc(passageDoc(passage)), vectorBytes(vector));
        }
        return;
      }
      case "patch": {
        // Only the given fields change, set in the stored document by SQLite itself.
        const keys = Object.keys(op.set);
        const paths = keys.map((k) => `'$.${k}', json(?)`).join(", ");
        const values = keys.map((k) => JSON.stringify(op.set[k]));
        if (op.table === "conversations")
          return this.sql(`UPDATE conversations SET doc = json_set(doc, ${paths}) WHERE id = ?`).run(
            ...values,
            op.id,
          ).changes;
        const name = typeof op.set.name === "string" ? op.set.name : null;
        return this.sql(
          `UPDATE archives SET name = coalesce(?, name), doc = json_set(doc, ${paths}) WHERE id = ?`,
        ).run(name, ...values, op.id).changes;
      }
      case "delete":
        return this.sql(`DELETE FROM ${op.table} WHERE id = ?`).run(op.id).changes;
      case "delete_children":
        this.sql(`DELETE FROM ${op.table} WHERE ${op.column} = ?`).run(op.parent_id);
        return;
      case "attach": {
        const [rel, column] = RELATION_COLUMNS[op.relation];
        this.sql(
          `INSERT OR IGNORE INTO ${rel} (agent_id, ${column}, position)
           VALUES (?, ?, (SELECT coalesce(max(position), 0) + 1 FROM ${rel} WHERE agent_id = ?))`,
        ).run(op.agent_id, op.target_id, op.agent_id);
        return;
      }
      case "detach": {
        const [rel, column] = RELATION_COLUMNS[op.relation];
        this.sql(`DELETE FROM ${rel} WHERE agent_id = ? AND ${column} = ?`).run(op.agent_id, op.target_id);
        return;
      }
      case "delete_messages_except":
        this.sql(
          "DELETE FROM messages WHERE agent_id = ? AND id NOT IN (SELECT value FROM json_each(?))",
        ).run(op.agent_id, JSON.stringify(op.except_ids));
        return;
      case "delete_working":
        this.sql("DELETE FROM working_memory WHERE agent_id = ? AND key = ?").run(op.agent_id, op.key);
        return;
      case "delete_fence":
        this.sql("DELETE FROM agent_fences WHERE agent_id = ?").run(op.agent_id);
        return;
    }
    return unreachable(op);
  };

  /** Writes one record's row (and the index rows kept beside it, an agent's tags). */
  private write(op: Extract<RowOp, { kind: "write" }>): void {
    const doc = SqliteWriter.doc;
    const update = op.mode === "update";
    switch (op.table) {
      case "agents": {
        const a = op.record;
        if (!update) {
          this.sql(
            "INSERT INTO agents (id, name, created_at_ms, updated_at_ms, doc) VALUES (?, ?, ?, ?, ?)",
          ).run(a.id, a.name, a.created_at_ms, a.updated_at_ms, doc(a));
        } else {
          this.sql(
            "UPDATE agents SET name = ?, created_at_ms = ?, updated_at_ms = ?, doc = ? WHERE id = ?",
          ).run(a.name, a.created_at_ms, a.updated_at_ms, doc(a), a.id);
          // Most updates keep the tags: their rows are rewritten only when they changed.
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
      case "blocks": {
        const b = op.record;
        const template = b.is_template ? 1 : 0;
        if (update)
          this.sql(
            "UPDATE blocks SET label = ?, is_template = ?, template_name = ?, version = ?, doc = ? WHERE id = ?",
          ).run(b.label, template, b.template_name, b.version, doc(b), b.id);
        else
          this.sql(
            "INSERT INTO blocks (id, label, is_template, template_name, version, doc) VALUES (?, ?, ?, ?, ?, ?)",
          ).run(b.id, b.label, template, b.template_name, b.version, doc(b));
        return;
      }
      case "tools": {
        const t = op.record;
        if (update)
          this.sql("UPDATE tools SET name = ?, tool_type = ?, doc = ? WHERE id = ?").run(
            t.name,
            t.tool_type,
            doc(t),
            t.id,
          );
        else
          this.sql("INSERT INTO tools (id, name, tool_type, doc) VALUES (?, ?, ?, ?)").run(
            t.id,
            t.name,
            t.tool_type,
            doc(t),
          );
        return;
      }
      case "messages": {
        const msg = op.record;
        this.sql(
          `INSERT INTO messages (id, agent_id, run_id, created_at_ms, doc) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET agent_id = excluded.agent_id, run_id = excluded.run_id,
             created_at_ms = excluded.created_at_ms, doc = excluded.doc`,
        ).run(msg.id, msg.agent_id, msg.run_id, msg.created_at_ms, doc(msg));
        return;
      }
      case "runs":
        this.sql(
          "INSERT INTO runs (id, agent_id, doc) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
        ).run(op.record.id, op.record.agent_id, doc(op.record));
        return;
      case "steps": {
        const step = op.record;
        this.sql(
          "INSERT INTO steps (id, run_id, agent_id, doc) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
        ).run(step.id, step.run_id, step.agent_id, doc(step));
        return;
      }
      case "mcp_servers": {
        const server = op.record;
        if (update)
          this.sql("UPDATE mcp_servers SET server_name = ?, doc = ? WHERE id = ?").run(
            server.server_name,
            doc(server),
            server.id,
          );
        else
          this.sql("INSERT INTO mcp_servers (id, server_name, doc) VALUES (?, ?, ?)").run(
            server.id,
            server.server_name,
            doc(server),
          );
        return;
      }
      case "api_keys":
        this.sql("INSERT INTO api_keys (id, key_sha256, doc) VALUES (?, ?, ?)").run(
          op.record.id,
          op.record.key_sha256,
          doc(op.record),
        );
        return;
      case "audit_log":
        this.sql("INSERT INTO audit_log (id, at_ms, doc) VALUES (?, ?, ?)").run(
          op.record.id,
          op.record.at_ms,
          doc(op.record),
        );
        return;
      case "idempotent_responses": {
        const r = op.record;
        this.sql(
          "INSERT INTO idempotent_responses (key, status_code, body, created_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
        ).run(r.key, r.status_code, r.body, r.created_at_ms);
        return;
      }
      case "conversations":
      case "outbox": {
        const r = op.record;
        if (update) this.sql(`UPDATE ${op.table} SET doc = ? WHERE id = ?`).run(doc(r), r.id);
        else
          this.sql(`INSERT INTO ${op.table} (id, agent_id, doc) VALUES (?, ?, ?)`).run(
            r.id,
            r.agent_id,
            doc(r),
          );
        return;
      }
      case "archives": {
        const a = op.record;
        if (update) this.sql("UPDATE archives SET name = ?, doc = ? WHERE id = ?").run(a.name, doc(a), a.id);
        else
          this.sql("INSERT INTO archives (id, name, created_at_ms, doc) VALUES (?, ?, ?, ?)").run(
            a.id,
            a.name,
            a.created_at_ms,
            doc(a),
          );
        return;
      }
      case "working_memory": {
        const e = op.record;
        this.sql(
          `INSERT INTO working_memory (agent_id, key, size_bytes, expires_at_ms, updated_at_ms, value)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (agent_id, key) DO UPDATE SET size_bytes = excluded.size_bytes,
             expires_at_ms = excluded.expires_at_ms, updated_at_ms = excluded.updated_at_ms, value = excluded.value`,
        ).run(e.agent_id, e.key, e.size_bytes, e.expires_at_ms, e.updated_at_ms, JSON.stringify(e.value));
        return;
      }
    }
    unreachable(op);
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
