// The one Storage interface. Engines: memory (tests, simulation), sqlite (embedded default),
// postgres (clusters). Reads return committed state; every write goes through `commit`, one
// atomic transaction, guarded by the agent's fencing token when it touches an agent's state.

/** A memory block. `version` increases on every write (optimistic concurrency for shared blocks). */
export interface BlockRecord {
  id: string;
  label: string;
  value: string;
  /** Character limit; a value longer than this is rejected, never truncated. */
  limit: number;
  description: string | null;
  read_only: boolean;
  metadata: Record<string, unknown>;
  is_template: boolean;
  template_name: string | null;
  hidden: boolean | null;
  tags: string[];
  project_id: string | null;
  version: number;
  created_at_ms: number;
  updated_at_ms: number;
}

export interface ToolRecord {
  id: string;
  /** Unique across the server, except that MCP tools (tool_type external_mcp) keep their servers' names. */
  name: string;
  tool_type: string;
  description: string | null;
  source_type: string | null;
  source_code: string | null;
  json_schema: Record<string, unknown> | null;
  args_json_schema: Record<string, unknown> | null;
  tags: string[];
  return_char_limit: number;
  pip_requirements: unknown[] | null;
  npm_requirements: unknown[] | null;
  default_requires_approval: boolean | null;
  enable_parallel_execution: boolean | null;
  metadata: Record<string, unknown>;
  created_at_ms: number;
  updated_at_ms: number;
  /** Custom tools: the function the sandbox calls, found in the source when it was stored, so a run
   * never parses the source again. Rows written before it existed lack it (read again per run). */
  source_function_name?: string;
}

/**
 * An agent. Which blocks and tools it has are relations (agent_blocks, agent_tools), kept in
 * order; reads fill `block_ids` and `tool_ids` from them, writes change them with attach/detach.
 */
export interface AgentRecord {
  id: string;
  name: string;
  agent_type: string;
  system: string;
  description: string | null;
  metadata: Record<string, unknown>;
  tags: string[];
  llm_config: Record<string, unknown> | null;
  embedding_config: Record<string, unknown> | null;
  tool_rules: unknown[];
  /** The ids of the messages in the agent's context window, oldest first. */
  message_ids: string[];
  /** Other Letta AgentState fields we keep and return as given (timezone, response_format, ...). */
  extra: Record<string, unknown>;
  created_at_ms: number;
  updated_at_ms: number;
  block_ids: string[];
  tool_ids: string[];
}

/** A stored message in Letta's internal shape (role + content parts + tool calls). */
export interface MessageRecord {
  id: string;
  agent_id: string;
  role: "system" | "user" | "assistant" | "tool" | "approval";
  content: MessageContentPart[];
  name: string | null;
  tool_calls: ToolCallRecord[] | null;
  tool_call_id: string | null;
  tool_returns: unknown[] | null;
  step_id: string | null;
  run_id: string | null;
  model: string | null;
  otid: string | null;
  sender_id: string | null;
  group_id: string | null;
  /** The conversation the message belongs to; absent for the agent's default conversation. */
  conversation_id?: string | null;
  /** On an assistant message: its calls to client-side tools, awaiting the client's results. */
  pending_tool_call_ids?: string[] | null;
  is_err: boolean | null;
  created_at_ms: number;
}

export type MessageContentPart =
  | { type: "text"; text: string }
  | { type: "reasoning"; reasoning: string; is_native?: boolean; signature?: string | null }
  | { type: "omitted_reasoning"; signature?: string | null }
  | { type: "image"; source: Record<string, unknown> }
  | { type: string; [key: string]: unknown };

export interface ToolCallRecord {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** One request's processing of an agent (Letta's Run). */
export interface RunRecord {
  id: string;
  agent_id: string;
  status: "created" | "running" | "completed" | "failed" | "cancelled";
  stop_reason: string | null;
  background: boolean;
  metadata: Record<string, unknown>;
  request_config: Record<string, unknown> | null;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number; step_count: number };
  error: string | null;
  created_at_ms: number;
  completed_at_ms: number | null;
}

/** One LLM call and what came of it, within a run. */
export interface StepRecord {
  id: string;
  run_id: string;
  agent_id: string;
  provider: string;
  model: string;
  stop_reason: string | null;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  created_at_ms: number;
}

/** A registered MCP server (Letta's StdioMCPServer / SSEMCPServer / StreamableHTTPMCPServer). */
export interface McpServerRecord {
  id: string;
  /** Unique across the server. */
  server_name: string;
  mcp_server_type: "stdio" | "sse" | "streamable_http";
  /** stdio: command, args, env; sse/streamable_http: server_url, auth_header, auth_token, custom_headers. */
  config: Record<string, unknown>;
  created_at_ms: number;
  updated_at_ms: number;
}

/**
 * A Letta conversation: its own history (in-context message ids) with one agent, sharing the
 * agent's memory blocks and tools. The agent's own `message_ids` are its default conversation.
 */
export interface ConversationRecord {
  id: string;
  agent_id: string;
  summary: string | null;
  /** A model handle overriding the agent's, or null. */
  model: string | null;
  in_context_message_ids: string[];
  created_at_ms: number;
  updated_at_ms: number;
}

/** An API key, stored as its SHA-256 hash only. */
export interface ApiKeyRecord {
  id: string;
  name: string;
  key_sha256: string;
  created_at_ms: number;
}

/** One durable audit entry: who did what to what, when. */
export interface AuditRecord {
  id: string;
  at_ms: number;
  actor: string;
  action: string;
  target: string;
  detail: Record<string, unknown>;
}

/**
 * The answer first given to a request that carried an Idempotency-Key (POSTs other than message
 * sends, whose runs are keyed themselves): a retry with the same key gets it back.
 */
export interface IdempotentResponse {
  /** The key, scoped by method and path (`POST /v1/agents/ key`). */
  key: string;
  status_code: number;
  /** The response body as sent (JSON text). */
  body: string;
  created_at_ms: number;
}

/**
 * A message an agent sent another with send_message_to_agent_async: committed with the sender's
 * step (so the model's "sent" is durable), then delivered at least once by the outbox dispatcher
 * (src/agent/outbox.ts) under an idempotency key derived from its id, and deleted once delivered.
 */
export interface OutboxRecord {
  id: string;
  /** The sender: the entry is part of its state (deleted with it, written under its fence). */
  agent_id: string;
  target_agent_id: string;
  /** The text of the user message the target receives. */
  text: string;
  /** How deep in agent-to-agent calls the sending turn was. */
  call_depth: number;
  /** Delivery attempts that failed so far, the last one's error, and when the next may start. */
  attempts: number;
  last_error: string | null;
  next_attempt_at_ms: number;
  created_at_ms: number;
}

export type Order = "asc" | "desc";

/** Cursor pagination as Letta clients use it: `after`/`before` are ids, in the listing's order. */
export interface PageQuery {
  limit: number;
  after?: string | undefined;
  before?: string | undefined;
  order: Order;
}

export interface AgentListQuery extends PageQuery {
  name?: string | undefined;
  tags?: string[] | undefined;
  match_all_tags?: boolean | undefined;
  /** Case-insensitive substring of the name. */
  query_text?: string | undefined;
}

export interface BlockListQuery extends PageQuery {
  label?: string | undefined;
  templates_only?: boolean | undefined;
  /** Matches template_name. */
  name?: string | undefined;
  label_search?: string | undefined;
  value_search?: string | undefined;
  description_search?: string | undefined;
}

export interface ToolListQuery extends PageQuery {
  name?: string | undefined;
  names?: string[] | undefined;
  tool_ids?: string[] | undefined;
  /** Case-insensitive substring of the name. */
  search?: string | undefined;
  tool_types?: string[] | undefined;
  exclude_tool_types?: string[] | undefined;
}

/** One change inside a commit. Agent fields other than relations are written whole. */
export type Mutation =
  | { op: "put_agent"; agent: Omit<AgentRecord, "block_ids" | "tool_ids">; create: boolean }
  | { op: "delete_agent"; agent_id: string }
  | { op: "put_block"; block: BlockRecord; create: boolean }
  | { op: "delete_block"; block_id: string }
  | { op: "attach_block"; agent_id: string; block_id: string }
  | { op: "detach_block"; agent_id: string; block_id: string }
  | { op: "put_tool"; tool: ToolRecord; create: boolean }
  | { op: "delete_tool"; tool_id: string }
  | { op: "attach_tool"; agent_id: string; tool_id: string }
  | { op: "detach_tool"; agent_id: string; tool_id: string }
  | { op: "put_message"; message: MessageRecord }
  | { op: "delete_agent_messages"; agent_id: string; except_ids: string[] }
  | { op: "put_run"; run: RunRecord }
  | { op: "put_step"; step: StepRecord }
  | { op: "put_mcp_server"; server: McpServerRecord; create: boolean }
  | { op: "delete_mcp_server"; server_id: string }
  | { op: "put_api_key"; key: ApiKeyRecord }
  | { op: "put_audit"; entry: AuditRecord }
  | { op: "put_idempotent"; response: IdempotentResponse }
  | { op: "put_conversation"; conversation: ConversationRecord; create: boolean }
  | {
      op: "patch_conversation";
      conversation_id: string;
      /** Only the fields present are set; the rest (in_context_message_ids above all) stay as stored. */
      summary?: string | null;
      model?: string | null;
      updated_at_ms: number;
    }
  | { op: "delete_conversation"; conversation_id: string }
  | { op: "put_outbox"; entry: OutboxRecord; create: boolean }
  | { op: "delete_outbox"; entry_id: string }
  | { op: "put_working"; entry: WorkingMemoryEntry; limits: WorkingMemoryLimits }
  | { op: "delete_working"; agent_id: string; key: string }
  | { op: "put_archive"; archive: ArchiveRecord; create: boolean }
  | {
      op: "patch_archive";
      archive_id: string;
      name?: string;
      description?: string | null;
      updated_at_ms: number;
    }
  | { op: "delete_archive"; archive_id: string }
  | { op: "delete_unattached_archives"; archive_ids: string[] }
  | { op: "attach_archive"; agent_id: string; archive_id: string }
  | { op: "detach_archive"; agent_id: string; archive_id: string }
  | { op: "insert_passages"; rows: { passage: PassageRecord; vector: Float32Array }[] }
  | { op: "delete_passage"; passage_id: string };

/**
 * What one agent's working memory may hold, checked by the engine inside the transaction that
 * writes: its live entries (unexpired at the put's `updated_at_ms`), the new one included.
 */
export interface WorkingMemoryLimits {
  keys_max: number;
  bytes_max: number;
}

/**
 * The agent whose state a commit changes, and the fencing token its activation holds. The commit
 * is rejected (FENCED) inside the transaction when the stored token differs.
 */
export interface Fence {
  agent_id: string;
  token: number;
}

export interface CommitOptions {
  fence?: Fence | undefined;
}

/** A node of the cluster, as its membership row records it. */
export interface ClusterNode {
  node_id: string;
  advertise_url: string;
  /** Goes up by one each time a process registers under this node id. */
  incarnation: number;
  /** Whether its heartbeat is fresh (within the dead-after timeout) and it has not left. */
  live: boolean;
}

/** Who holds an agent's lease, when someone does and it has not lapsed. */
export interface LeaseOwner {
  node_id: string;
  incarnation: number;
  advertise_url: string;
}

export type LeaseAcquisition = { acquired: true; token: number } | { acquired: false; owner: LeaseOwner };

/** One node's identity in the cluster: its id and this process's incarnation of it. */
export interface NodeIdentity {
  node_id: string;
  incarnation: number;
}

/**
 * Membership and agent leases, kept in the shared database and timed by the database's clock
 * only, so that skew between node clocks cannot make two owners. An agent's lease lives on its
 * fence row: acquiring it takes the next fencing token, so a commit from any earlier holder fails.
 */
export interface ClusterStore {
  /** Registers (or re-registers, with the next incarnation) a node; its heartbeat starts fresh. */
  registerNode(nodeId: string, advertiseUrl: string): Promise<NodeIdentity>;
  /**
   * Refreshes the node's heartbeat and renews, to now + ttl, every lease it holds that has not
   * lapsed; returns the agents renewed with their tokens, or null when this incarnation was
   * superseded or has left (the node must stop serving).
   */
  heartbeat(node: NodeIdentity, leaseTtlMs: number): Promise<Map<string, number> | null>;
  /**
   * Takes an agent's lease (and the next fencing token) unless another incarnation holds it
   * unlapsed while that node is live; a lease of a superseded, departed or dead node is taken.
   */
  acquireLease(
    agentId: string,
    node: NodeIdentity,
    leaseTtlMs: number,
    nodeDeadAfterMs: number,
  ): Promise<LeaseAcquisition>;
  /** Gives a lease back (when the token still matches); the token stays for the next holder to pass. */
  releaseLease(agentId: string, node: NodeIdentity, token: number): Promise<void>;
  /** The agent's live lease holder, or null when none holds an unlapsed lease. */
  leaseOwner(agentId: string, nodeDeadAfterMs: number): Promise<LeaseOwner | null>;
  /** Marks the node departed and releases every lease it holds (a clean shutdown). */
  leave(node: NodeIdentity): Promise<void>;
  /** Every registered node, live or not. */
  listNodes(nodeDeadAfterMs: number): Promise<ClusterNode[]>;
  /**
   * The secret nodes sign forwarded requests with: stores `candidate` unless one is stored, and
   * returns the stored one, the same to every node however many start at once. Engines no two
   * processes share (memory, the simulator's) keep none.
   */
  clusterSecret?(candidate: Uint8Array): Promise<Uint8Array>;
}

export interface Storage {
  readonly engine: "memory" | "sqlite" | "postgres";
  /** Archival and working memory, in the same database. */
  readonly tiers: MemoryTierStorage;
  /** Membership and leases, on engines several nodes can share (PostgreSQL; the simulator's). */
  readonly cluster?: ClusterStore | undefined;

  /** Applies pending schema migrations; safe to call on every start. */
  migrate(): Promise<void>;
  close(): Promise<void>;

  /**
   * Applies every mutation in one transaction, or none. The rules are written once, in the mutation
   * planner (planner.ts); engines execute its row operations. Rules, each checked inside it:
   * - with a fence, the stored fencing token of `fence.agent_id` must equal `fence.token` (else FENCED);
   * - `put_*` with `create: true` fails (CONFLICT) when the id exists, with `create: false` when it does not (NOT_FOUND);
   * - `put_block` with create false requires `block.version` = stored version + 1 (else CONFLICT);
   * - a tool name is unique among tools that are not external_mcp (CONFLICT); MCP tools keep their
   *   servers' names, and getToolByName prefers a non-MCP tool; attach of an attached pair and detach of an absent pair are no-ops;
   * - attach/detach to a missing agent, block or tool is NOT_FOUND;
   * - delete of a missing row is NOT_FOUND; delete_agent removes its relations, messages and fence;
   *   delete_block and delete_tool remove them from every agent;
   * - put_message, put_run and put_step insert or replace by id (each must name an existing agent);
   * - put_mcp_server follows the put_* create rules; its server_name is unique (CONFLICT); delete_mcp_server
   *   of a missing server is NOT_FOUND (its tools are separate rows, deleted by the caller);
   * - put_idempotent keeps the first response stored under a key (a second put is a no-op);
   * - put_conversation follows the put_* create rules and must name an existing agent (deleting the
   *   agent deletes its conversations); delete_conversation of a missing one is NOT_FOUND;
   * - put_outbox follows the put_* create rules and must name an existing sender agent (deleting the
   *   agent deletes its outbox); a create beyond OUTBOX_ENTRIES_PER_AGENT_MAX entries of one sender
   *   is OUTBOX_FULL; delete_outbox of a missing entry is a no-op (delivery is at-least-once: two
   *   deliverers may both finish it);
   * - patch_conversation sets only the fields it carries (and updated_at_ms) on the stored record,
   *   so a turn's in_context_message_ids committed meanwhile stay; a missing one is NOT_FOUND;
   * - put_working inserts or replaces an entry (NOT_FOUND for a missing agent) when the agent's live
   *   entries — unexpired at entry.updated_at_ms, other keys plus this one — stay within
   *   `limits.keys_max` keys and `limits.bytes_max` bytes, else BAD_REQUEST naming the limit. The
   *   check and the write are one transaction, and two puts to one agent are serialized (PostgreSQL
   *   locks the agent row), so concurrent puts cannot pass a limit together;
   * - delete_working of an absent key is a no-op; deleting an agent deletes its working memory and
   *   its archive attachments (not its archives: see delete_unattached_archives);
   * - put_archive follows the put_* create rules; patch_archive sets only the fields it carries
   *   (NOT_FOUND when missing); delete_archive of a missing one is NOT_FOUND and
   *   removes its passages and attachments; delete_unattached_archives deletes each of the listed
   *   archives that exists and that no agent is attached to (as the commit's earlier mutations
   *   left it), and skips the rest;
   * - attach_archive/detach_archive to a missing agent or archive is NOT_FOUND; attach of an
   *   attached pair and detach of an absent pair are no-ops;
   * - insert_passages inserts passages with their vectors (NOT_FOUND for a missing archive,
   *   CONFLICT for an id that exists); read their seqs back with passageSeqs. delete_passage of a
   *   missing passage is NOT_FOUND. Vector indexes are updated by the caller after the commit.
   * Agent-scoped writes are made inside the agent's mailbox (runtime.invoke) with its fence.
   */
  commit(mutations: Mutation[], options?: CommitOptions): Promise<void>;

  /**
   * Takes the next fencing token for an agent (the first is 1); every later commit with an older
   * token is rejected. Single-node callers take one per activation; the cluster takes one per lease.
   */
  acquireFence(agentId: string): Promise<number>;
  /** The current token (0 when none was ever taken). */
  currentFence(agentId: string): Promise<number>;

  getAgent(id: string): Promise<AgentRecord | null>;
  listAgents(query: AgentListQuery): Promise<AgentRecord[]>;
  countAgents(): Promise<number>;

  getBlock(id: string): Promise<BlockRecord | null>;
  /** The blocks with these ids, in the order asked; missing ids are left out. */
  getBlocks(ids: string[]): Promise<BlockRecord[]>;
  listBlocks(query: BlockListQuery): Promise<BlockRecord[]>;
  countBlocks(): Promise<number>;
  /** Ids of the agents a block is attached to, in attach order. */
  listBlockAgentIds(blockId: string): Promise<string[]>;

  getTool(id: string): Promise<ToolRecord | null>;
  getToolByName(name: string): Promise<ToolRecord | null>;
  getTools(ids: string[]): Promise<ToolRecord[]>;
  listTools(query: ToolListQuery): Promise<ToolRecord[]>;
  countTools(): Promise<number>;

  getMessage(id: string): Promise<MessageRecord | null>;
  getMessages(ids: string[]): Promise<MessageRecord[]>;
  /** An agent's messages in insertion order (`order` asc) or newest first (desc). */
  listMessages(agentId: string, query: PageQuery): Promise<MessageRecord[]>;
  countMessages(agentId: string): Promise<number>;
  /** The messages a run produced, in insertion order (asc) or newest first (desc). */
  listRunMessages(runId: string, query: PageQuery): Promise<MessageRecord[]>;

  getRun(id: string): Promise<RunRecord | null>;
  /** Runs of one agent (or all), newest first for desc. */
  listRuns(agentId: string | undefined, query: PageQuery): Promise<RunRecord[]>;
  /** Runs still `created` or `running`, of one agent or of all, oldest first, at most `limit`. */
  listUnfinishedRuns(agentId: string | undefined, limit: number): Promise<RunRecord[]>;
  listSteps(runId: string): Promise<StepRecord[]>;

  getMcpServer(id: string): Promise<McpServerRecord | null>;
  /** All MCP servers, in registration order. */
  listMcpServers(): Promise<McpServerRecord[]>;

  getConversation(id: string): Promise<ConversationRecord | null>;
  /** Conversations (of one agent, or all), in creation order (asc) or newest first (desc). */
  listConversations(agentId: string | undefined, query: PageQuery): Promise<ConversationRecord[]>;

  getOutboxEntry(id: string): Promise<OutboxRecord | null>;
  /** An agent's undelivered outbox entries, oldest first, at most `limit`. */
  listOutbox(agentId: string, limit: number): Promise<OutboxRecord[]>;
  countOutbox(agentId: string): Promise<number>;
  /** Agents with undelivered outbox entries, the one with the oldest entry first, at most `limit`. */
  listOutboxSenders(limit: number): Promise<string[]>;

  listApiKeys(): Promise<ApiKeyRecord[]>;
  /** The response stored under an Idempotency-Key, or null. */
  getIdempotent(key: string): Promise<IdempotentResponse | null>;
  /** Audit entries, newest first for desc. */
  listAudit(query: PageQuery): Promise<AuditRecord[]>;
  /** Characters held in core-memory block values, across all blocks. */
  coreMemoryChars(): Promise<number>;
}

/** A Letta archive: a set of passages with one embedding model, attachable to several agents. */
export interface ArchiveRecord {
  id: string;
  name: string;
  description: string | null;
  /** The model that embeds every passage of this archive (fixed at creation: vectors must agree). */
  embedding_config: Record<string, unknown>;
  metadata: Record<string, unknown>;
  /** Set on an agent's own archive, made the first time it archives something. */
  owner_agent_id: string | null;
  created_at_ms: number;
  updated_at_ms: number;
}

/** One archival-memory passage. Its vector is stored beside it, not in this record. */
export interface PassageRecord {
  id: string;
  archive_id: string;
  text: string;
  tags: string[];
  metadata: Record<string, unknown>;
  created_at_ms: number;
  updated_at_ms: number;
}

/** What the vector index needs of a passage; `seq` is the passage's index key. */
export interface PassageVectorRow {
  seq: number;
  id: string;
  created_at_ms: number;
  tags: string[];
  vector: Float32Array;
}

/** A passage's filter metadata without its vector, for reattaching a saved index graph. */
export type PassageMetaRow = Pick<PassageVectorRow, "seq" | "created_at_ms" | "tags">;

/** One working-memory entry: a JSON value under a string key, optionally expiring. */
export interface WorkingMemoryEntry {
  agent_id: string;
  key: string;
  value: unknown;
  size_bytes: number;
  expires_at_ms: number | null;
  updated_at_ms: number;
}

export interface ArchiveListQuery extends PageQuery {
  name?: string | undefined;
  agent_id?: string | undefined;
}

export interface PassageListQuery extends PageQuery {
  /** Case-insensitive substring of the text. */
  search?: string | undefined;
}

/**
 * Reads of archival and working memory. Their writes are mutations applied by `Storage.commit`
 * (put_archive, insert_passages, put_working, ...), in the same transaction as everything else.
 */
export interface MemoryTierStorage {
  getArchive(id: string): Promise<ArchiveRecord | null>;
  listArchives(query: ArchiveListQuery): Promise<ArchiveRecord[]>;
  /** The archives attached to an agent, in attach order. */
  listAgentArchives(agentId: string): Promise<ArchiveRecord[]>;
  listArchiveAgentIds(archiveId: string): Promise<string[]>;

  getPassage(id: string): Promise<PassageRecord | null>;
  /** The seqs (index keys) of these passages, by id; missing ones left out. */
  passageSeqs(ids: string[]): Promise<Map<string, number>>;
  getPassagesBySeq(seqs: number[]): Promise<Map<number, PassageRecord>>;
  listPassages(archiveIds: string[], query: PassageListQuery): Promise<PassageRecord[]>;
  countPassages(archiveIds: string[]): Promise<number>;
  /** The vectors of these passages, by seq (missing ones left out). */
  getPassageVectorsBySeq(seqs: number[]): Promise<Map<number, Float32Array>>;
  /** Vectors of one archive in seq order after `afterSeq`, for (re)building its index. */
  scanPassageVectors(archiveId: string, afterSeq: number, limit: number): Promise<PassageVectorRow[]>;
  /** Like scanPassageVectors without the vectors (far less to read), for reloading a saved index. */
  scanPassageMeta(archiveId: string, afterSeq: number, limit: number): Promise<PassageMetaRow[]>;
  /** Full-text search (any of the query's words, best first) over the archives' passages. */
  searchPassagesText(archiveIds: string[], query: string, limit: number): Promise<{ seq: number }[]>;
  /** Characters of passage text held, across all archives. */
  archivalChars(): Promise<number>;

  /** An entry as stored, expired or not (writes: put_working / delete_working through `commit`). */
  getWorking(agentId: string, key: string): Promise<WorkingMemoryEntry | null>;
  listWorking(agentId: string): Promise<WorkingMemoryEntry[]>;
  /** Bytes held in working memory, across all agents. */
  workingBytes(): Promise<number>;
}

/**
 * Splits text into the lowercase words a full-text query should match (the same on every engine):
 * English stop words are left out, or "the" would match every passage.
 */
export function queryWords(text: string): string[] {
  const words = (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []).filter((w) => !STOP_WORDS.has(w));
  return [...new Set(words)].slice(0, FULL_TEXT_QUERY_WORDS_MAX);
}

// PostgreSQL's english stop words (snowball), which its tsvector drops too.
const STOP_WORDS = new Set(
  (
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers " +
    "herself it its itself they them their theirs themselves what which who whom this that these those am is " +
    "are was were be been being have has had having do does did doing a an the and but if or because as until " +
    "while of at by for with about against between into through during before after above below to from up " +
    "down in out on off over under again further then once here there when where why how all any both each few " +
    "more most other some such no nor not only own same so than too very s t can will just don should now"
  ).split(" "),
);

/** Longer queries keep their first words for the full-text half of a search (the vector half sees all). */
export const FULL_TEXT_QUERY_WORDS_MAX = 32;
