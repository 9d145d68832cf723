// Every bound in Kelpie, with its unit last. How constants relate is checked once, at load.
import { assert } from "./assert.ts";

/** Listen address without any API key: this machine only (KELPIE_HOST opens it, see config.ts). */
export const DEFAULT_HOST = "127.0.0.1";
/** Listen address once an API key exists: every interface, as Letta servers are usually reached. */
export const DEFAULT_HOST_WITH_KEY = "0.0.0.0";
export const DEFAULT_PORT = 8283;
export const DEFAULT_DATA_DIR = "./.kelpie";

// Actors
export const MAILBOX_DEPTH_MAX = 1_000;
/** Turns waiting behind an agent's running turn (runtime/turn-gate.ts); more get a 429 AGENT_BUSY. */
export const TURNS_QUEUED_PER_AGENT_MAX = 32;
/** Longest Retry-After (seconds) a busy agent's 429 suggests. */
export const TURN_RETRY_AFTER_S_MAX = 60;
/** Undelivered async messages (send_message_to_agent_async) one agent may have; more are refused. */
export const OUTBOX_ENTRIES_PER_AGENT_MAX = 64;
export const ACTOR_IDLE_TIMEOUT_MS = 5 * 60_000;
export const ACTOR_IDLE_SWEEP_INTERVAL_MS = 10_000;
export const ACTORS_RESIDENT_MAX = 1_000_000;

// Memory blocks (limits count characters, as Letta's do)
export const BLOCK_LIMIT_CHARS_DEFAULT = 100_000; // the Letta spec's CreateBlock.limit default
export const BLOCK_LIMIT_CHARS_MAX = 10_000_000;
export const BLOCK_LABEL_LENGTH_MAX = 256;
export const BLOCKS_PER_AGENT_MAX = 256;
export const TOOLS_PER_AGENT_MAX = 1_024;
/** Tags on one agent, block or tool (passages have their own, PASSAGE_TAGS_MAX). */
export const TAGS_PER_RECORD_MAX = 256;
export const TAG_LENGTH_MAX = 256;
/** Characters in the name of an agent, tool, archive or block template. */
export const NAME_LENGTH_MAX = 1_024;
export const SYSTEM_PROMPT_CHARS_MAX = 1_000_000;
/** UTF-8 bytes of the JSON text of one metadata object (agents, blocks, tools, archives, passages). */
export const METADATA_BYTES_MAX = 64 * 1024;

// Runs a crash left unfinished (marked failed under the agent's next activation)
/** Unfinished runs one activation marks failed; any more wait for the agent's next activation. */
export const RUNS_RECOVERED_PER_ACTIVATION_MAX = 1_000;
/** Unfinished runs whose agents a starting node activates (to mark those runs failed). */
export const RUNS_RECOVERED_AT_START_MAX = 10_000;

// Archival memory (passages) and working memory (per-agent key-value tier)
export const PASSAGE_TEXT_CHARS_MAX = 32_768; // longer text is rejected, never truncated
export const PASSAGE_TAGS_MAX = 64;
export const PASSAGES_PER_BATCH_MAX = 1_000;
export const ARCHIVAL_SEARCH_TOP_K_DEFAULT = 10;
export const ARCHIVAL_SEARCH_TOP_K_MAX = 100;
export const WORKING_MEMORY_KEY_CHARS_MAX = 256;
export const WORKING_MEMORY_VALUE_BYTES_MAX = 64 * 1024;
export const WORKING_MEMORY_AGENT_BYTES_MAX = 1024 * 1024;
export const WORKING_MEMORY_KEYS_PER_AGENT_MAX = 1_024;

// HTTP
export const REQUEST_BODY_BYTES_MAX = 16 * 1024 * 1024;
/** Nesting of arrays and objects in a JSON body or agent file; deeper input is rejected before parsing. */
export const JSON_DEPTH_MAX = 64;
export const PAGE_LIMIT_DEFAULT = 50;
export const PAGE_LIMIT_MAX = 1_000;
export const MESSAGE_PAGE_LIMIT_DEFAULT = 100;

// Storage
export const SQLITE_BUSY_TIMEOUT_MS = 5_000;
export const POSTGRES_POOL_CONNECTIONS_MAX = 10;
/** The server ends a session idle inside a transaction this long (a vanished node's locks). */
export const POSTGRES_IDLE_IN_TRANSACTION_MS = 2_000;

// Cluster (PostgreSQL): lease and membership times are the database's.
/** How long an agent's lease lasts without renewal (KELPIE_LEASE_TTL_MS). */
export const LEASE_TTL_MS_DEFAULT = 10_000;
/** Heartbeats (which renew every lease the node holds) per lease TTL, by default. */
export const HEARTBEATS_PER_LEASE_TTL = 4;
/** A node whose heartbeat is older than this many lease TTLs counts as dead. */
export const NODE_DEAD_AFTER_LEASE_TTLS = 1;
/** Shortest lease accepted: heartbeats must have time to renew it. */
export const LEASE_TTL_MS_MIN = 200;
/** Longest a forwarded request waits to connect to the owner node. */
export const FORWARD_CONNECT_TIMEOUT_MS = 2_000;
/** How often a node that found an agent's owner unreachable checks whether the lease lapsed. */
export const LEASE_LAPSE_POLL_MS = 100;

assert(
  ACTOR_IDLE_SWEEP_INTERVAL_MS < ACTOR_IDLE_TIMEOUT_MS,
  "idle sweep must run more often than the timeout",
);
assert(BLOCK_LIMIT_CHARS_DEFAULT <= BLOCK_LIMIT_CHARS_MAX, "default block limit must be allowed");
assert(PAGE_LIMIT_DEFAULT <= PAGE_LIMIT_MAX, "default page must fit the maximum");
