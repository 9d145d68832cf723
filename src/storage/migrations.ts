// The schema as ordered, versioned migrations, one SQL text per dialect. Applied versions are
// recorded in schema_migrations; a migration never changes once released — add a new one.

export interface Migration {
  version: number;
  name: string;
  sqlite: string;
  postgres: string;
}

const V1_COMMON = (t: { seq: string; json: string; bool: string; int8: string }) => `
CREATE TABLE agents (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  created_at_ms ${t.int8} NOT NULL,
  updated_at_ms ${t.int8} NOT NULL,
  doc ${t.json} NOT NULL
);
CREATE INDEX agents_name ON agents (name);
CREATE TABLE agent_tags (
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  tag TEXT NOT NULL,
  PRIMARY KEY (agent_id, tag)
);
CREATE INDEX agent_tags_tag ON agent_tags (tag);
CREATE TABLE blocks (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  label TEXT NOT NULL,
  is_template ${t.bool} NOT NULL,
  template_name TEXT,
  version ${t.int8} NOT NULL,
  doc ${t.json} NOT NULL
);
CREATE INDEX blocks_label ON blocks (label);
CREATE TABLE tools (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  tool_type TEXT NOT NULL,
  doc ${t.json} NOT NULL
);
CREATE INDEX tools_name ON tools (name);
CREATE TABLE agent_blocks (
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  block_id TEXT NOT NULL REFERENCES blocks (id) ON DELETE CASCADE,
  position ${t.int8} NOT NULL,
  PRIMARY KEY (agent_id, block_id)
);
CREATE INDEX agent_blocks_block ON agent_blocks (block_id);
CREATE TABLE agent_tools (
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  tool_id TEXT NOT NULL REFERENCES tools (id) ON DELETE CASCADE,
  position ${t.int8} NOT NULL,
  PRIMARY KEY (agent_id, tool_id)
);
CREATE INDEX agent_tools_tool ON agent_tools (tool_id);
CREATE TABLE messages (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  run_id TEXT,
  created_at_ms ${t.int8} NOT NULL,
  doc ${t.json} NOT NULL
);
CREATE INDEX messages_agent_seq ON messages (agent_id, seq);
CREATE INDEX messages_run_seq ON messages (run_id, seq);
CREATE TABLE runs (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  doc ${t.json} NOT NULL
);
CREATE INDEX runs_agent_seq ON runs (agent_id, seq);
CREATE TABLE steps (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  run_id TEXT NOT NULL,
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  doc ${t.json} NOT NULL
);
CREATE INDEX steps_run_seq ON steps (run_id, seq);
CREATE TABLE agent_fences (
  agent_id TEXT PRIMARY KEY,
  token ${t.int8} NOT NULL
);
`;

const V3_MCP = (t: { seq: string; json: string; int8: string }) => `
CREATE TABLE mcp_servers (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  server_name TEXT NOT NULL UNIQUE,
  doc ${t.json} NOT NULL
);
`;

const V4_OPS = (t: { seq: string; json: string; int8: string }) => `
CREATE TABLE api_keys (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  key_sha256 TEXT NOT NULL UNIQUE,
  doc ${t.json} NOT NULL
);
CREATE TABLE audit_log (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  at_ms ${t.int8} NOT NULL,
  doc ${t.json} NOT NULL
);
`;

const V5_TIERS_COMMON = (t: { seq: string; json: string; int8: string; bytes: string }) => `
CREATE TABLE archives (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  created_at_ms ${t.int8} NOT NULL,
  doc ${t.json} NOT NULL
);
CREATE INDEX archives_name ON archives (name);
CREATE TABLE agent_archives (
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  archive_id TEXT NOT NULL REFERENCES archives (id) ON DELETE CASCADE,
  position ${t.int8} NOT NULL,
  PRIMARY KEY (agent_id, archive_id)
);
CREATE INDEX agent_archives_archive ON agent_archives (archive_id);
CREATE TABLE working_memory (
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  size_bytes ${t.int8} NOT NULL,
  expires_at_ms ${t.int8},
  updated_at_ms ${t.int8} NOT NULL,
  value ${t.json} NOT NULL,
  PRIMARY KEY (agent_id, key)
);
`;

// Passages keep their vector (little-endian float32) beside the text; the full-text index is
// FTS5 (kept by triggers) on SQLite and a generated tsvector with a GIN index on PostgreSQL.
const V5_SQLITE = `${V5_TIERS_COMMON({ seq: "INTEGER PRIMARY KEY AUTOINCREMENT", json: "TEXT", int8: "INTEGER", bytes: "BLOB" })}
CREATE TABLE passages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  archive_id TEXT NOT NULL REFERENCES archives (id) ON DELETE CASCADE,
  created_at_ms INTEGER NOT NULL,
  text TEXT NOT NULL,
  doc TEXT NOT NULL,
  embedding BLOB NOT NULL
);
CREATE INDEX passages_archive_seq ON passages (archive_id, seq);
CREATE VIRTUAL TABLE passages_fts USING fts5 (text, content = 'passages', content_rowid = 'seq', tokenize = 'porter unicode61');
CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN
  INSERT INTO passages_fts (rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages BEGIN
  INSERT INTO passages_fts (passages_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
`;

const V5_POSTGRES = `${V5_TIERS_COMMON({ seq: "BIGSERIAL PRIMARY KEY", json: "JSONB", int8: "BIGINT", bytes: "BYTEA" })}
CREATE TABLE passages (
  seq BIGSERIAL PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  archive_id TEXT NOT NULL REFERENCES archives (id) ON DELETE CASCADE,
  created_at_ms BIGINT NOT NULL,
  text TEXT NOT NULL,
  doc JSONB NOT NULL,
  embedding BYTEA NOT NULL,
  tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);
CREATE INDEX passages_archive_seq ON passages (archive_id, seq);
CREATE INDEX passages_tsv ON passages USING GIN (tsv);
`;

const V6_CONVERSATIONS = (t: { seq: string; json: string }) => `
CREATE TABLE conversations (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  doc ${t.json} NOT NULL
);
CREATE INDEX conversations_agent_seq ON conversations (agent_id, seq);
`;

// Cluster membership and leases (PostgreSQL only: several nodes share one database). A lease lives
// on the agent's fence row, so taking it and taking the next token are one statement.
const V7_CLUSTER_POSTGRES = `
ALTER TABLE agent_fences
  ADD COLUMN node_id TEXT,
  ADD COLUMN incarnation BIGINT,
  ADD COLUMN lease_expires_at TIMESTAMPTZ;
CREATE INDEX agent_fences_node ON agent_fences (node_id, incarnation) WHERE node_id IS NOT NULL;
CREATE TABLE cluster_nodes (
  node_id TEXT PRIMARY KEY,
  advertise_url TEXT NOT NULL,
  incarnation BIGINT NOT NULL,
  heartbeat_at TIMESTAMPTZ NOT NULL,
  started_at TIMESTAMPTZ NOT NULL,
  left_at TIMESTAMPTZ
);
`;

const V8_IDEMPOTENCY = (t: { int8: string }) => `
CREATE TABLE idempotent_responses (
  key TEXT PRIMARY KEY,
  status_code INTEGER NOT NULL,
  body TEXT NOT NULL,
  created_at_ms ${t.int8} NOT NULL
);
`;

// The secret nodes sign forwarded requests with (src/cluster/node-auth.ts), one row, made by the
// first node to start unless the operator sets KELPIE_CLUSTER_SECRET. Whoever can read it can act
// as a node, but could as well rewrite any agent here: database access is trusted anyway.
const V9_CLUSTER_SECRET_POSTGRES = `
CREATE TABLE cluster_secret (
  id SMALLINT PRIMARY KEY CHECK (id = 1),
  secret BYTEA NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
`;

// Runs a crash left unfinished are found at activation and at start without reading finished ones.
const V10_RUNS_UNFINISHED = (status: string) =>
  `CREATE INDEX runs_unfinished ON runs (agent_id, seq) WHERE ${status} IN ('created', 'running');`;

// Async messages between agents, committed with the sender's step and deleted once delivered.
const V11_OUTBOX = (t: { seq: string; json: string }) => `
CREATE TABLE outbox (
  seq ${t.seq},
  id TEXT NOT NULL UNIQUE,
  agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  doc ${t.json} NOT NULL
);
CREATE INDEX outbox_agent_seq ON outbox (agent_id, seq);
`;

// Versions need not be contiguous: each missing one is applied once, in order.
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "agents, blocks, tools, messages, runs, steps, fences",
    sqlite: V1_COMMON({
      seq: "INTEGER PRIMARY KEY AUTOINCREMENT",
      json: "TEXT",
      bool: "INTEGER",
      int8: "INTEGER",
    }),
    postgres: V1_COMMON({ seq: "BIGSERIAL PRIMARY KEY", json: "JSONB", bool: "BOOLEAN", int8: "BIGINT" }),
  },
  {
    version: 3,
    name: "mcp servers",
    sqlite: V3_MCP({ seq: "INTEGER PRIMARY KEY AUTOINCREMENT", json: "TEXT", int8: "INTEGER" }),
    postgres: V3_MCP({ seq: "BIGSERIAL PRIMARY KEY", json: "JSONB", int8: "BIGINT" }),
  },
  {
    version: 4,
    name: "api keys, audit log",
    sqlite: V4_OPS({ seq: "INTEGER PRIMARY KEY AUTOINCREMENT", json: "TEXT", int8: "INTEGER" }),
    postgres: V4_OPS({ seq: "BIGSERIAL PRIMARY KEY", json: "JSONB", int8: "BIGINT" }),
  },
  {
    version: 5,
    name: "archives, passages (vectors, full text), working memory",
    sqlite: V5_SQLITE,
    postgres: V5_POSTGRES,
  },
  {
    version: 6,
    name: "conversations",
    sqlite: V6_CONVERSATIONS({ seq: "INTEGER PRIMARY KEY AUTOINCREMENT", json: "TEXT" }),
    postgres: V6_CONVERSATIONS({ seq: "BIGSERIAL PRIMARY KEY", json: "JSONB" }),
  },
  {
    version: 7,
    name: "cluster membership and agent leases",
    // A single SQLite node needs neither.
    sqlite: "",
    postgres: V7_CLUSTER_POSTGRES,
  },
  {
    version: 8,
    name: "idempotent responses",
    sqlite: V8_IDEMPOTENCY({ int8: "INTEGER" }),
    postgres: V8_IDEMPOTENCY({ int8: "BIGINT" }),
  },
  {
    version: 9,
    name: "cluster secret",
    sqlite: "",
    postgres: V9_CLUSTER_SECRET_POSTGRES,
  },
  {
    version: 10,
    name: "index of unfinished runs",
    sqlite: V10_RUNS_UNFINISHED("json_extract(doc, '$.status')"),
    postgres: V10_RUNS_UNFINISHED("(doc->>'status')"),
  },
  {
    version: 11,
    name: "outbox of async messages between agents",
    sqlite: V11_OUTBOX({ seq: "INTEGER PRIMARY KEY AUTOINCREMENT", json: "TEXT" }),
    postgres: V11_OUTBOX({ seq: "BIGSERIAL PRIMARY KEY", json: "JSONB" }),
  },
];

export const SCHEMA_VERSION_LATEST = MIGRATIONS.at(-1)!.version;
