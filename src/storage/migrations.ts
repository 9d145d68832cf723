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
];

export const SCHEMA_VERSION_LATEST = MIGRATIONS.at(-1)!.version;
