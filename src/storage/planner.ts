// The one mutation planner: what every `Storage.commit` means, written once for all engines. For
// each mutation it states the preconditions (fencing, existence, uniqueness, versions, limits),
// reads what it needs to check them and says which rows to write. Engines only execute row
// operations (`RowOp`) inside their transaction: memory.ts on staged tables, sqlite-writer.ts on
// its connection (on the main thread or on the writer thread), postgres.ts on its transaction.
//
// A plan is a generator: it yields one row operation at a time and gets the engine's answer back,
// so the same plan runs synchronously (memory, SQLite: `runCommitSync`) and asynchronously
// (PostgreSQL: `runCommitAsync`). Every read happens inside the commit's transaction, after the
// writes of the mutations before it, so a precondition sees the commit's own earlier effects.
// This module must stay plain importable code: the SQLite writer thread imports it.
import { OUTBOX_ENTRIES_PER_AGENT_MAX } from "../core/constants.ts";
import { KelpieError, notFound, outboxFull } from "../core/errors.ts";
import { workingLimitError } from "./tier-codec.ts";
import type {
  AgentRecord,
  ApiKeyRecord,
  ArchiveRecord,
  AuditRecord,
  BlockRecord,
  CommitOptions,
  ConversationRecord,
  Fence,
  IdempotentResponse,
  McpServerRecord,
  MessageRecord,
  Mutation,
  OutboxRecord,
  PassageRecord,
  RunRecord,
  StepRecord,
  ToolRecord,
  WorkingMemoryEntry,
} from "./types.ts";

export type StoredAgent = Omit<AgentRecord, "block_ids" | "tool_ids">;

/** Tables whose rows are keyed by one `id`. */
export type KeyedTable =
  | "agents"
  | "blocks"
  | "tools"
  | "mcp_servers"
  | "conversations"
  | "outbox"
  | "archives"
  | "passages";

/**
 * How strongly a read row is held until the transaction ends (PostgreSQL row locks; the
 * single-writer engines hold everything anyway): `none` a plain read; `share` keeps the row from
 * being deleted or re-keyed (FOR KEY SHARE); `serialize` queues other serializing writers of the
 * row's children behind this one (FOR NO KEY UPDATE); `update` locks it to be rewritten (FOR UPDATE).
 */
export type Lock = "none" | "share" | "serialize" | "update";
const LOCK_STRENGTH: Record<Lock, number> = { none: 0, share: 1, serialize: 2, update: 3 };

/** A row to write, with its table. */
export type RecordRow =
  | { table: "agents"; record: StoredAgent }
  | { table: "blocks"; record: BlockRecord }
  | { table: "tools"; record: ToolRecord }
  | { table: "messages"; record: MessageRecord }
  | { table: "runs"; record: RunRecord }
  | { table: "steps"; record: StepRecord }
  | { table: "mcp_servers"; record: McpServerRecord }
  | { table: "api_keys"; record: ApiKeyRecord }
  | { table: "audit_log"; record: AuditRecord }
  | { table: "idempotent_responses"; record: IdempotentResponse }
  | { table: "conversations"; record: ConversationRecord }
  | { table: "outbox"; record: OutboxRecord }
  | { table: "archives"; record: ArchiveRecord }
  | { table: "working_memory"; record: WorkingMemoryEntry };

/**
 * How a row is written: `insert` a new row (a new seq; the plan has checked its id is free),
 * `update` an existing one in place (its seq kept; the plan has checked it exists), `upsert`
 * either, `insert_if_absent` a new row unless one has its key (then nothing).
 */
export type WriteMode = "insert" | "update" | "upsert" | "insert_if_absent";

/** The agent relations, each an ordered list of targets per agent. */
export type Relation = "agent_blocks" | "agent_tools" | "agent_archives";

/** Rows that belong to a parent row and are deleted with it (`column` names the parent). */
export type ChildRows =
  | { table: "agent_blocks" | "agent_tools" | "agent_archives"; column: "agent_id" }
  | { table: "agent_blocks"; column: "block_id" }
  | { table: "agent_tools"; column: "tool_id" }
  | { table: "agent_archives" | "passages"; column: "archive_id" }
  | {
      table: "messages" | "runs" | "steps" | "conversations" | "outbox" | "working_memory";
      column: "agent_id";
    };

/** One thing an engine does inside the commit's transaction, and (in comments) what it answers. */
export type RowOp =
  /** → FenceState: the agent's stored token (0 without a row) and whether its lease lapsed. */
  | { kind: "read_fence"; agent_id: string; lock: "share" | "update" }
  /** → boolean: whether the row exists, held at `lock`. */
  | { kind: "exists"; table: KeyedTable; id: string; lock: Lock }
  /** → number | null: the stored block's version, the row locked for update. */
  | { kind: "block_version"; id: string }
  /**
   * → boolean: whether another row holds a unique value: a non-MCP tool's name (other than tool
   * `except_id`), an MCP server's name (other than server `except_id`), an API key's hash.
   */
  | {
      kind: "taken";
      index: "tool_name" | "mcp_server_name" | "api_key_sha256";
      value: string;
      except_id: string;
    }
  /** → number: the agent's outbox entries. */
  | { kind: "count_outbox"; agent_id: string }
  /** → WorkingUsage: the agent's entries other than `except_key` still live at `at_ms`. */
  | { kind: "working_usage"; agent_id: string; except_key: string; at_ms: number }
  /** → string[]: which of these passage ids exist. */
  | { kind: "existing_passages"; ids: string[] }
  /** → string[]: which of these archives exist with no agent attached (locked for delete). */
  | { kind: "unattached_archives"; ids: string[] }
  /** → void */
  | ({ kind: "write"; mode: WriteMode } & RecordRow)
  /** → void: passages with their vectors (new ids, existing archives: the plan checked both). */
  | { kind: "insert_passages"; rows: { passage: PassageRecord; vector: Float32Array }[] }
  /** → number: rows changed. Sets only these document fields (and `name`'s column for archives). */
  | { kind: "patch"; table: "conversations" | "archives"; id: string; set: Record<string, unknown> }
  /** → number: rows deleted. */
  | { kind: "delete"; table: KeyedTable; id: string }
  /** → void: every child row of the parent. */
  | ({ kind: "delete_children"; parent_id: string } & ChildRows)
  /** → void: appends the target to the agent's list unless it is there. */
  | { kind: "attach"; relation: Relation; agent_id: string; target_id: string }
  /** → void: removes the target from the agent's list (absent: nothing). */
  | { kind: "detach"; relation: Relation; agent_id: string; target_id: string }
  /** → void */
  | { kind: "delete_messages_except"; agent_id: string; except_ids: string[] }
  /** → void */
  | { kind: "delete_working"; agent_id: string; key: string }
  /** → void: the agent's fence row (its token and lease). */
  | { kind: "delete_fence"; agent_id: string };

export interface FenceState {
  token: number;
  lapsed: boolean;
}

export interface WorkingUsage {
  keys: number;
  bytes: number;
}

/** A plan: yields row operations, receives each one's answer. */
export type Plan<T = void> = Generator<RowOp, T, unknown>;

/**
 * What the plan of one commit knows of rows it read or wrote, so a commit of many messages for one
 * agent asks once whether the agent exists. Facts come only from this commit's transaction (its
 * reads, at a lock at least as strong as the one asked for, and its own writes).
 */
class Known {
  private readonly facts = new Map<string, { exists: boolean; lock: number }>();

  get(table: KeyedTable, id: string, lock: Lock): boolean | undefined {
    const fact = this.facts.get(`${table}\u0000${id}`);
    return fact !== undefined && fact.lock >= LOCK_STRENGTH[lock] ? fact.exists : undefined;
  }

  set(table: KeyedTable, id: string, exists: boolean, lock: Lock): void {
    this.facts.set(`${table}\u0000${id}`, { exists, lock: LOCK_STRENGTH[lock] });
  }

  /** Rows were deleted by their parent: nothing known of them (or anything else) holds any more. */
  forgetAll(): void {
    this.facts.clear();
  }
}

function* exists(known: Known, table: KeyedTable, id: string, lock: Lock = "none"): Plan<boolean> {
  const fact = known.get(table, id, lock);
  if (fact !== undefined) return fact;
  const found = (yield { kind: "exists", table, id, lock }) as boolean;
  known.set(table, id, found, lock);
  return found;
}

function* write(known: Known, mode: WriteMode, row: RecordRow): Plan {
  yield { kind: "write", mode, ...row } as RowOp;
  const id = (row.record as { id?: string }).id;
  if (id !== undefined && isKeyed(row.table)) known.set(row.table, id, true, "update");
}

function* deleteChildren(known: Known, rows: ChildRows, parentId: string): Plan {
  yield { kind: "delete_children", parent_id: parentId, ...rows } as RowOp;
  known.forgetAll();
}

function* remove(known: Known, table: KeyedTable, id: string): Plan<number> {
  const n = (yield { kind: "delete", table, id }) as number;
  known.set(table, id, false, "update");
  return n;
}

const KEYED = new Set<string>([
  "agents",
  "blocks",
  "tools",
  "mcp_servers",
  "conversations",
  "outbox",
  "archives",
  "passages",
]);
const isKeyed = (table: string): table is KeyedTable => KEYED.has(table);

/** What an agent owns, deleted with it (the SQL schemas cascade the same way; see migrations.ts). */
const AGENT_CHILD_TABLES = [
  "agent_blocks",
  "agent_tools",
  "agent_archives",
  "messages",
  "runs",
  "steps",
  "conversations",
  "outbox",
  "working_memory",
] as const;

const conflict = (what: string) => new KelpieError("CONFLICT", `${what} already exists`);
const missing = (what: string) => new KelpieError("NOT_FOUND", `${what} not found`);

/** The put_* create rule: CONFLICT when creating an id that exists, `absent` when updating one that does not. */
function checkCreate(create: boolean, existed: boolean, what: string, absent: () => KelpieError): void {
  if (create && existed) throw conflict(what);
  if (!create && !existed) throw absent();
}

function* requireAgent(known: Known, agentId: string, lock: Lock = "none"): Plan {
  if (!(yield* exists(known, "agents", agentId, lock))) throw notFound("agent", agentId);
}

function* requireArchive(known: Known, archiveId: string, lock: Lock): Plan {
  if (!(yield* exists(known, "archives", archiveId, lock))) throw missing(`Archive ${archiveId}`);
}

/**
 * The fencing check, first in the transaction: the stored token must equal the fence's, and a
 * lease on it must not have lapsed (a lapsed lease fences its holder even before anyone takes it
 * over). A commit that deletes the fenced agent takes the row for update from the start (no lock
 * upgrade, so no deadlock with a takeover queued on the row).
 */
export function* planFence(fence: Fence, mutations: Mutation[]): Plan {
  const deletes = mutations.some((m) => m.op === "delete_agent" && m.agent_id === fence.agent_id);
  const state = (yield {
    kind: "read_fence",
    agent_id: fence.agent_id,
    lock: deletes ? "update" : "share",
  }) as FenceState;
  if (state.token !== fence.token) {
    throw new KelpieError(
      "FENCED",
      `agent ${fence.agent_id}: fencing token ${fence.token} is stale (current ${state.token})`,
    );
  }
  if (state.lapsed) {
    throw new KelpieError("FENCED", `agent ${fence.agent_id}: the lease of token ${fence.token} lapsed`);
  }
}

/** One commit's plans, mutation by mutation, sharing what they learned. */
export class CommitPlanner {
  private readonly known = new Known();

  /** The plan of one mutation: its preconditions, then its effects. */
  *plan(m: Mutation): Plan {
    const known = this.known;
    switch (m.op) {
      case "put_agent": {
        const a = m.agent;
        const existed = yield* exists(known, "agents", a.id);
        checkCreate(m.create, existed, `agent ${a.id}`, () => notFound("agent", a.id));
        yield* write(known, m.create ? "insert" : "update", { table: "agents", record: a });
        return;
      }
      case "delete_agent": {
        const id = m.agent_id;
        yield* requireAgent(known, id);
        for (const table of AGENT_CHILD_TABLES)
          yield* deleteChildren(known, { table, column: "agent_id" }, id);
        yield* remove(known, "agents", id);
        yield { kind: "delete_fence", agent_id: id };
        return;
      }
      case "put_block": {
        const b = m.block;
        const stored = (yield { kind: "block_version", id: b.id }) as number | null;
        checkCreate(m.create, stored !== null, `block ${b.id}`, () => notFound("block", b.id));
        if (stored !== null && b.version !== stored + 1)
          throw new KelpieError("CONFLICT", `block ${b.id} was changed concurrently`);
        yield* write(known, stored === null ? "insert" : "update", { table: "blocks", record: b });
        return;
      }
      case "delete_block": {
        yield* deleteChildren(known, { table: "agent_blocks", column: "block_id" }, m.block_id);
        if ((yield* remove(known, "blocks", m.block_id)) === 0) throw notFound("block", m.block_id);
        return;
      }
      case "put_tool": {
        const t = m.tool;
        const existed = yield* exists(known, "tools", t.id);
        checkCreate(m.create, existed, `tool ${t.id}`, () => notFound("tool", t.id));
        // MCP tools keep their servers' names (two servers may both have an "echo"); others are unique.
        if (t.tool_type !== "external_mcp") {
          const taken = yield { kind: "taken", index: "tool_name", value: t.name, except_id: t.id };
          if (taken) throw conflict(`a tool named '${t.name}'`);
        }
        yield* write(known, existed ? "update" : "insert", { table: "tools", record: t });
        return;
      }
      case "delete_tool": {
        yield* deleteChildren(known, { table: "agent_tools", column: "tool_id" }, m.tool_id);
        if ((yield* remove(known, "tools", m.tool_id)) === 0) throw notFound("tool", m.tool_id);
        return;
      }
      case "attach_block":
      case "detach_block": {
        yield* requireAgent(known, m.agent_id);
        if (!(yield* exists(known, "blocks", m.block_id))) throw notFound("block", m.block_id);
        const kind = m.op === "attach_block" ? "attach" : "detach";
        yield { kind, relation: "agent_blocks", agent_id: m.agent_id, target_id: m.block_id };
        return;
      }
      case "attach_tool":
      case "detach_tool": {
        yield* requireAgent(known, m.agent_id);
        if (!(yield* exists(known, "tools", m.tool_id))) throw notFound("tool", m.tool_id);
        const kind = m.op === "attach_tool" ? "attach" : "detach";
        yield { kind, relation: "agent_tools", agent_id: m.agent_id, target_id: m.tool_id };
        return;
      }
      case "put_message": {
        yield* requireAgent(known, m.message.agent_id);
        yield* write(known, "upsert", { table: "messages", record: m.message });
        return;
      }
      case "delete_agent_messages": {
        yield { kind: "delete_messages_except", agent_id: m.agent_id, except_ids: m.except_ids };
        return;
      }
      case "put_run": {
        yield* requireAgent(known, m.run.agent_id);
        yield* write(known, "upsert", { table: "runs", record: m.run });
        return;
      }
      case "put_step": {
        yield* requireAgent(known, m.step.agent_id);
        yield* write(known, "upsert", { table: "steps", record: m.step });
        return;
      }
      case "put_mcp_server": {
        const server = m.server;
        const existed = yield* exists(known, "mcp_servers", server.id);
        checkCreate(m.create, existed, `MCP server ${server.id}`, () => missing(`MCP server ${server.id}`));
        const taken = yield {
          kind: "taken",
          index: "mcp_server_name",
          value: server.server_name,
          except_id: server.id,
        };
        if (taken) throw conflict(`an MCP server named '${server.server_name}'`);
        yield* write(known, existed ? "update" : "insert", { table: "mcp_servers", record: server });
        return;
      }
      case "delete_mcp_server": {
        if ((yield* remove(known, "mcp_servers", m.server_id)) === 0)
          throw missing(`MCP server ${m.server_id}`);
        return;
      }
      case "put_api_key": {
        const taken = yield {
          kind: "taken",
          index: "api_key_sha256",
          value: m.key.key_sha256,
          except_id: "",
        };
        if (taken) throw conflict("this API key");
        yield* write(known, "insert", { table: "api_keys", record: m.key });
        return;
      }
      case "put_audit": {
        yield* write(known, "insert", { table: "audit_log", record: m.entry });
        return;
      }
      case "put_idempotent": {
        // The first response stored under a key stays: a second put is a no-op.
        yield* write(known, "insert_if_absent", { table: "idempotent_responses", record: m.response });
        return;
      }
      case "put_conversation": {
        const c = m.conversation;
        const existed = yield* exists(known, "conversations", c.id);
        checkCreate(m.create, existed, `conversation ${c.id}`, () => missing(`Conversation ${c.id}`));
        yield* requireAgent(known, c.agent_id);
        yield* write(known, existed ? "update" : "insert", { table: "conversations", record: c });
        return;
      }
      case "patch_conversation": {
        // Only the fields carried are set on the stored document: a turn's in_context_message_ids
        // committed meanwhile stay.
        const set: Record<string, unknown> = { updated_at_ms: m.updated_at_ms };
        if (m.summary !== undefined) set.summary = m.summary;
        if (m.model !== undefined) set.model = m.model;
        const n = yield { kind: "patch", table: "conversations", id: m.conversation_id, set };
        if (n === 0) throw missing(`Conversation ${m.conversation_id}`);
        return;
      }
      case "delete_conversation": {
        if ((yield* remove(known, "conversations", m.conversation_id)) === 0)
          throw missing(`Conversation ${m.conversation_id}`);
        return;
      }
      case "put_outbox": {
        const e = m.entry;
        const existed = yield* exists(known, "outbox", e.id);
        checkCreate(m.create, existed, `outbox entry ${e.id}`, () => missing(`Outbox entry ${e.id}`));
        // The sender's row is held so two commits adding to one outbox count one after the other.
        yield* requireAgent(known, e.agent_id, m.create ? "serialize" : "none");
        if (m.create) {
          const held = (yield { kind: "count_outbox", agent_id: e.agent_id }) as number;
          if (held >= OUTBOX_ENTRIES_PER_AGENT_MAX) throw outboxFull(e.agent_id, held);
        }
        yield* write(known, existed ? "update" : "insert", { table: "outbox", record: e });
        return;
      }
      case "delete_outbox": {
        // Delivery is at least once: two deliverers may both finish an entry.
        yield* remove(known, "outbox", m.entry_id);
        return;
      }
      case "put_working": {
        const e = m.entry;
        // The agent's row is held so two puts to one agent cannot both count, then both write.
        yield* requireAgent(known, e.agent_id, "serialize");
        const usage = (yield {
          kind: "working_usage",
          agent_id: e.agent_id,
          except_key: e.key,
          at_ms: e.updated_at_ms,
        }) as WorkingUsage;
        const over = workingLimitError(e.agent_id, usage.keys, usage.bytes + e.size_bytes, m.limits);
        if (over !== null) throw over;
        yield* write(known, "upsert", { table: "working_memory", record: e });
        return;
      }
      case "delete_working": {
        yield { kind: "delete_working", agent_id: m.agent_id, key: m.key };
        return;
      }
      case "put_archive": {
        const a = m.archive;
        const existed = yield* exists(known, "archives", a.id, "update");
        checkCreate(m.create, existed, `archive ${a.id}`, () => missing(`Archive ${a.id}`));
        yield* write(known, existed ? "update" : "insert", { table: "archives", record: a });
        return;
      }
      case "patch_archive": {
        const set: Record<string, unknown> = { updated_at_ms: m.updated_at_ms };
        if (m.name !== undefined) set.name = m.name;
        if (m.description !== undefined) set.description = m.description;
        const n = yield { kind: "patch", table: "archives", id: m.archive_id, set };
        if (n === 0) throw missing(`Archive ${m.archive_id}`);
        return;
      }
      case "delete_archive": {
        yield* this.deleteArchive(m.archive_id);
        return;
      }
      case "delete_unattached_archives": {
        // As the commit's earlier mutations left them: an agent deleted before has no attachments.
        const ids = (yield { kind: "unattached_archives", ids: m.archive_ids }) as string[];
        for (const id of ids) yield* this.deleteArchive(id);
        return;
      }
      case "attach_archive":
      case "detach_archive": {
        yield* requireAgent(known, m.agent_id);
        yield* requireArchive(known, m.archive_id, "share");
        const kind = m.op === "attach_archive" ? "attach" : "detach";
        yield { kind, relation: "agent_archives", agent_id: m.agent_id, target_id: m.archive_id };
        return;
      }
      case "insert_passages": {
        // All or nothing: a missing archive or an id that exists (or repeats) inserts none.
        for (const { passage } of m.rows) yield* requireArchive(known, passage.archive_id, "share");
        const ids = m.rows.map((r) => r.passage.id);
        const existing = (yield { kind: "existing_passages", ids }) as string[];
        if (existing.length > 0) throw conflict(`passage ${existing[0]}`);
        const seen = new Set<string>();
        for (const id of ids) {
          if (seen.has(id)) throw conflict(`passage ${id}`);
          seen.add(id);
        }
        if (m.rows.length > 0) yield { kind: "insert_passages", rows: m.rows };
        for (const id of ids) known.set("passages", id, true, "update");
        return;
      }
      case "delete_passage": {
        if ((yield* remove(known, "passages", m.passage_id)) === 0) throw missing(`Passage ${m.passage_id}`);
        return;
      }
    }
  }

  private *deleteArchive(archiveId: string): Plan {
    yield* deleteChildren(this.known, { table: "agent_archives", column: "archive_id" }, archiveId);
    yield* deleteChildren(this.known, { table: "passages", column: "archive_id" }, archiveId);
    if ((yield* remove(this.known, "archives", archiveId)) === 0) throw missing(`Archive ${archiveId}`);
  }
}

/** Runs a commit's plans on an engine that answers row operations synchronously (memory, SQLite). */
export function runCommitSync(
  execute: (op: RowOp) => unknown,
  mutations: Mutation[],
  options: CommitOptions | undefined,
): void {
  const drive = (plan: Plan): void => {
    let step = plan.next();
    while (!step.done) step = plan.next(execute(step.value));
  };
  if (options?.fence !== undefined) drive(planFence(options.fence, mutations));
  const planner = new CommitPlanner();
  for (const m of mutations) drive(planner.plan(m));
}

/**
 * Runs a commit's plans on an engine that answers asynchronously (PostgreSQL), inside its
 * transaction. `mapError` turns an engine error raised while planning a mutation into ours.
 */
export async function runCommitAsync(
  execute: (op: RowOp) => Promise<unknown>,
  mutations: Mutation[],
  options: CommitOptions | undefined,
  mapError: (err: unknown, m: Mutation) => unknown = (err) => err,
): Promise<void> {
  const drive = async (plan: Plan): Promise<void> => {
    let step = plan.next();
    while (!step.done) step = plan.next(await execute(step.value));
  };
  if (options?.fence !== undefined) await drive(planFence(options.fence, mutations));
  const planner = new CommitPlanner();
  for (const m of mutations) {
    try {
      await drive(planner.plan(m));
    } catch (err) {
      throw mapError(err, m);
    }
  }
}
