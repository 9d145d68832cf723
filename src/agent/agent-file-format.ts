// Letta agent files (.af) → one normalized model, checked field by field. Two formats exist: the
// legacy single-agent "v1" (core_memory, tools and messages inline, in_context_message_indices)
// and the current "v2" AgentFileSchema (agents, blocks, tools, mcp_servers, ... referring to each
// other by the file's own ids). A malformed file is a 422 naming the field (under body.file);
// a part Kelpie does not support becomes a warning, never a silent drop.
import { BLOCKS_PER_AGENT_MAX, TOOLS_PER_AGENT_MAX } from "../core/constants.ts";
import { invalidField, isKelpieError } from "../core/errors.ts";
import { parseJsonInput } from "../core/json-input.ts";
import type { BlockFields } from "../memory/blocks.ts";
import type { MessageContentPart, MessageRecord, ToolCallRecord } from "../storage/types.ts";
import { EXTRA_FIELDS } from "./agents.ts";

export const AGENT_FILE_AGENTS_MAX = 64;
export const AGENT_FILE_BLOCKS_MAX = AGENT_FILE_AGENTS_MAX * BLOCKS_PER_AGENT_MAX;
export const AGENT_FILE_TOOLS_MAX = 4_096;
export const AGENT_FILE_MESSAGES_PER_AGENT_MAX = 100_000;
export const AGENT_FILE_PASSAGES_PER_ARCHIVE_MAX = 100_000;
export const AGENT_FILE_MCP_SERVERS_MAX = 256;
export const AGENT_FILE_ARCHIVES_MAX = 256;
/** Warnings are grouped by message; a file cannot grow the response past this many groups. */
export const IMPORT_WARNINGS_MAX = 256;

export type Loc = (string | number)[];

/** Where the uploaded file's fields sit in the request, for errors that name them. */
export const FILE_LOC: Loc = ["body", "file"];

export interface ImportWarning {
  loc: Loc;
  msg: string;
  /** How many places in the file the same warning applies to. */
  count: number;
}

/** Collects warnings, one per distinct message (the first place it was seen, and a count). */
export class ImportWarnings {
  private readonly byMsg = new Map<string, ImportWarning>();
  private overflowCount = 0;

  add(loc: Loc, msg: string): void {
    const seen = this.byMsg.get(msg);
    if (seen !== undefined) {
      seen.count++;
      return;
    }
    if (this.byMsg.size >= IMPORT_WARNINGS_MAX) {
      this.overflowCount++;
      return;
    }
    this.byMsg.set(msg, { loc, msg, count: 1 });
  }

  list(): ImportWarning[] {
    const out = [...this.byMsg.values()];
    // Said, not dropped: the response is bounded, so the excess is counted.
    if (this.overflowCount > 0) {
      out.push({ loc: FILE_LOC, msg: `${this.overflowCount} further warnings not listed`, count: 1 });
    }
    return out;
  }
}

export interface FileBlock {
  key: string;
  loc: Loc;
  fields: BlockFields & { label: string; value: string };
}

export interface FileTool {
  key: string;
  loc: Loc;
  name: string;
  toolType: string;
  description: string | null;
  sourceType: string | null;
  sourceCode: string | null;
  jsonSchema: Record<string, unknown> | null;
  argsJsonSchema: Record<string, unknown> | null;
  tags: string[];
  returnCharLimit: number | null;
  pipRequirements: unknown[] | null;
  npmRequirements: unknown[] | null;
  defaultRequiresApproval: boolean | null;
  metadata: Record<string, unknown>;
}

export interface FileMessage {
  key: string;
  loc: Loc;
  role: MessageRecord["role"];
  content: MessageContentPart[];
  name: string | null;
  toolCalls: ToolCallRecord[] | null;
  toolCallId: string | null;
  toolReturns: unknown[] | null;
  model: string | null;
  otid: string | null;
  senderId: string | null;
  groupId: string | null;
  createdAtMs: number;
}

export interface FileAgent {
  key: string;
  loc: Loc;
  name: string;
  agentType: string;
  system: string | null;
  description: string | null;
  metadata: Record<string, unknown>;
  tags: string[];
  llmConfig: Record<string, unknown> | null;
  embeddingConfig: Record<string, unknown> | null;
  model: string | null;
  embedding: string | null;
  contextWindowLimit: number | null;
  maxTokens: number | null;
  toolRules: Record<string, unknown>[];
  /** Blocks of the file (by key) and blocks written inline (v2 memory_blocks), in order. */
  blockKeys: string[];
  inlineBlocks: FileBlock[];
  toolKeys: string[];
  /** v2 `tools`: names of tools the server already has. */
  toolNames: string[];
  messages: FileMessage[];
  inContextKeys: string[];
  /** Letta AgentState fields kept as given (timezone, response_format, ...). */
  extra: Record<string, unknown>;
  envVars: { key: string; value: string }[];
  archiveKeys: string[];
}

export interface FileMcpServer {
  key: string;
  loc: Loc;
  serverName: string;
  serverType: string;
  serverUrl: string | null;
  stdioConfig: Record<string, unknown> | null;
}

export interface FilePassage {
  text: string;
  tags: string[];
  metadata: Record<string, unknown>;
  createdAtMs: number | null;
}

/** Kelpie's extension: an agent's archives and their passages (Letta's schema has none). */
export interface FileArchive {
  key: string;
  loc: Loc;
  name: string;
  description: string | null;
  embeddingConfig: Record<string, unknown> | null;
  metadata: Record<string, unknown>;
  ownerKey: string | null;
  passages: FilePassage[];
}

export interface AgentFileModel {
  format: "v1" | "v2";
  agents: FileAgent[];
  blocks: Map<string, FileBlock>;
  tools: Map<string, FileTool>;
  mcpServers: Map<string, FileMcpServer>;
  archives: Map<string, FileArchive>;
}

// --- field checks ----------------------------------------------------------------------------

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function objectAt(v: unknown, loc: Loc): Json {
  if (!isObject(v)) throw invalidField(loc, "must be an object");
  return v;
}

function optObject(v: unknown, loc: Loc): Json | null {
  return v === undefined || v === null ? null : objectAt(v, loc);
}

function arrayAt(v: unknown, loc: Loc, max: number): unknown[] {
  if (!Array.isArray(v)) throw invalidField(loc, "must be a list");
  if (v.length > max) throw invalidField(loc, `has ${v.length} items; at most ${max} are accepted`);
  return v;
}

function optArray(v: unknown, loc: Loc, max: number): unknown[] {
  return v === undefined || v === null ? [] : arrayAt(v, loc, max);
}

function stringAt(v: unknown, loc: Loc): string {
  if (typeof v !== "string") throw invalidField(loc, v === undefined ? "field required" : "must be a string");
  return v;
}

function optString(v: unknown, loc: Loc): string | null {
  return v === undefined || v === null ? null : stringAt(v, loc);
}

function optBool(v: unknown, loc: Loc): boolean | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "boolean") throw invalidField(loc, "must be a boolean");
  return v;
}

function optInt(v: unknown, loc: Loc): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isInteger(v)) throw invalidField(loc, "must be an integer");
  return v;
}

function stringList(v: unknown, loc: Loc, max: number): string[] {
  return optArray(v, loc, max).map((s, i) => stringAt(s, [...loc, i]));
}

/** Letta writes dates without a zone in old files; they are UTC. */
function dateMs(v: unknown, loc: Loc): number {
  const text = stringAt(v, loc);
  const zoned = /(Z|[+-]\d\d:?\d\d)$/i.test(text) ? text : `${text}Z`;
  const ms = Date.parse(zoned);
  if (!Number.isFinite(ms)) throw invalidField(loc, `'${text}' is not an ISO 8601 date`);
  return ms;
}

function optDateMs(v: unknown, loc: Loc): number | null {
  return v === undefined || v === null ? null : dateMs(v, loc);
}

/** A value that says nothing: absent, null, false, an empty list or object. */
function isUnset(v: unknown): boolean {
  if (v === undefined || v === null || v === false) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (isObject(v)) return Object.keys(v).length === 0;
  return false;
}

/** Warns about each field Kelpie does not know, or knows but cannot honour, that carries a value. */
function warnFields(
  obj: Json,
  loc: Loc,
  known: ReadonlySet<string>,
  unsupported: Readonly<Record<string, string>>,
  warnings: ImportWarnings,
): void {
  for (const [key, value] of Object.entries(obj)) {
    if (key in unsupported) {
      if (!isUnset(value))
        warnings.add([...loc, key], `${key} is not supported by Kelpie: ${unsupported[key]}`);
    } else if (!known.has(key) && !isUnset(value)) {
      warnings.add([...loc, key], `unknown field '${key}' was not imported`);
    }
  }
}

// --- shared pieces ---------------------------------------------------------------------------

const MESSAGE_ROLES = new Set(["system", "user", "assistant", "tool", "approval"]);

function contentParts(v: unknown, loc: Loc): MessageContentPart[] {
  if (typeof v === "string") return [{ type: "text", text: v }];
  return arrayAt(v, loc, Number.MAX_SAFE_INTEGER).map((part, i) => {
    const p = objectAt(part, [...loc, i]);
    const type = stringAt(p.type, [...loc, i, "type"]);
    if (type === "text") {
      // Letta writes `signature: null` on text parts; it means nothing for text.
      return { type: "text", text: stringAt(p.text, [...loc, i, "text"]) };
    }
    return { ...p, type } as MessageContentPart;
  });
}

function toolCalls(v: unknown, loc: Loc): ToolCallRecord[] | null {
  const calls = optArray(v, loc, Number.MAX_SAFE_INTEGER);
  if (calls.length === 0) return null;
  return calls.map((c, i) => {
    const at = [...loc, i];
    const call = objectAt(c, at);
    const fn = objectAt(call.function, [...at, "function"]);
    const args = fn.arguments;
    return {
      id: stringAt(call.id, [...at, "id"]),
      type: "function",
      function: {
        name: stringAt(fn.name, [...at, "function", "name"]),
        // Letta keeps arguments as JSON text; an object is accepted and written as text.
        arguments: isObject(args) ? JSON.stringify(args) : stringAt(args, [...at, "function", "arguments"]),
      },
    };
  });
}

const MESSAGE_UNSUPPORTED: Record<string, string> = {
  batch_item_id: "batch requests are not kept",
  approve: "tool approvals are not kept",
  approval_request_id: "tool approvals are not kept",
  denial_reason: "tool approvals are not kept",
  approvals: "tool approvals are not kept",
};
const MESSAGE_KNOWN = new Set([
  "type",
  "id",
  "role",
  "content",
  "name",
  "otid",
  "sender_id",
  "group_id",
  "model",
  "agent_id",
  "tool_calls",
  "tool_call_id",
  "tool_returns",
  "created_at",
  "updated_at",
]);

function message(raw: unknown, key: string, loc: Loc, warnings: ImportWarnings): FileMessage {
  const m = objectAt(raw, loc);
  let role = stringAt(m.role, [...loc, "role"]);
  if (role === "function") role = "tool"; // OpenAI's old name for a tool result
  if (!MESSAGE_ROLES.has(role)) {
    throw invalidField([...loc, "role"], `must be one of ${[...MESSAGE_ROLES].join(", ")}`, "enum");
  }
  warnFields(m, loc, MESSAGE_KNOWN, MESSAGE_UNSUPPORTED, warnings);
  const toolReturns = optArray(m.tool_returns, [...loc, "tool_returns"], Number.MAX_SAFE_INTEGER);
  return {
    key,
    loc,
    role: role as MessageRecord["role"],
    content: contentParts(m.content, [...loc, "content"]),
    name: optString(m.name, [...loc, "name"]),
    toolCalls: toolCalls(m.tool_calls, [...loc, "tool_calls"]),
    toolCallId: optString(m.tool_call_id, [...loc, "tool_call_id"]),
    toolReturns: toolReturns.length === 0 ? null : toolReturns,
    model: optString(m.model, [...loc, "model"]),
    otid: optString(m.otid, [...loc, "otid"]),
    senderId: optString(m.sender_id, [...loc, "sender_id"]),
    groupId: optString(m.group_id, [...loc, "group_id"]),
    createdAtMs: dateMs(m.created_at, [...loc, "created_at"]),
  };
}

const BLOCK_KNOWN = new Set([
  "id",
  "label",
  "value",
  "limit",
  "description",
  "metadata",
  "metadata_",
  "is_template",
  "template_name",
  "hidden",
  "tags",
  "read_only",
  "project_id",
  "preserve_on_migration",
  "created_at",
  "updated_at",
]);
const BLOCK_UNSUPPORTED: Record<string, string> = {
  template_id: "templates are not supported",
  base_template_id: "templates are not supported",
  deployment_id: "templates are not supported",
  entity_id: "templates are not supported",
};

function block(
  raw: unknown,
  key: string,
  loc: Loc,
  metadataField: "metadata" | "metadata_",
  warnings: ImportWarnings,
): FileBlock {
  const b = objectAt(raw, loc);
  warnFields(b, loc, BLOCK_KNOWN, BLOCK_UNSUPPORTED, warnings);
  const fields: FileBlock["fields"] = {
    label: stringAt(b.label, [...loc, "label"]),
    value: stringAt(b.value, [...loc, "value"]),
    description: optString(b.description, [...loc, "description"]),
    metadata: optObject(b[metadataField] ?? b.metadata, [...loc, metadataField]),
    is_template: optBool(b.is_template, [...loc, "is_template"]) ?? false,
    template_name: optString(b.template_name, [...loc, "template_name"]),
    hidden: optBool(b.hidden, [...loc, "hidden"]),
    tags: stringList(b.tags, [...loc, "tags"], Number.MAX_SAFE_INTEGER),
    read_only: optBool(b.read_only, [...loc, "read_only"]) ?? false,
    project_id: optString(b.project_id, [...loc, "project_id"]),
  };
  const limit = optInt(b.limit, [...loc, "limit"]);
  if (limit !== null) fields.limit = limit;
  return { key, loc, fields };
}

const TOOL_KNOWN = new Set([
  "id",
  "name",
  "tool_type",
  "description",
  "source_type",
  "source_code",
  "json_schema",
  "args_json_schema",
  "tags",
  "return_char_limit",
  "pip_requirements",
  "npm_requirements",
  "default_requires_approval",
  "enable_parallel_execution",
  "metadata_",
  // Who made it and when, on the exporting server: the importing server records its own.
  "created_by_id",
  "last_updated_by_id",
  "created_at",
  "updated_at",
  "project_id",
]);

function tool(raw: unknown, key: string, loc: Loc, warnings: ImportWarnings): FileTool {
  const t = objectAt(raw, loc);
  warnFields(t, loc, TOOL_KNOWN, {}, warnings);
  const jsonSchema = optObject(t.json_schema, [...loc, "json_schema"]);
  const name = optString(t.name, [...loc, "name"]) ?? (jsonSchema ? optString(jsonSchema.name, loc) : null);
  if (name === null || name === "") throw invalidField([...loc, "name"], "field required", "missing");
  return {
    key,
    loc,
    name,
    toolType: optString(t.tool_type, [...loc, "tool_type"]) ?? "custom",
    description: optString(t.description, [...loc, "description"]),
    sourceType: optString(t.source_type, [...loc, "source_type"]),
    sourceCode: optString(t.source_code, [...loc, "source_code"]),
    jsonSchema,
    argsJsonSchema: optObject(t.args_json_schema, [...loc, "args_json_schema"]),
    tags: stringList(t.tags, [...loc, "tags"], Number.MAX_SAFE_INTEGER),
    returnCharLimit: optInt(t.return_char_limit, [...loc, "return_char_limit"]),
    pipRequirements:
      t.pip_requirements == null ? null : arrayAt(t.pip_requirements, [...loc, "pip_requirements"], 1_000),
    npmRequirements:
      t.npm_requirements == null ? null : arrayAt(t.npm_requirements, [...loc, "npm_requirements"], 1_000),
    defaultRequiresApproval: optBool(t.default_requires_approval, [...loc, "default_requires_approval"]),
    metadata: optObject(t.metadata_, [...loc, "metadata_"]) ?? {},
  };
}

function toolRules(v: unknown, loc: Loc): Record<string, unknown>[] {
  return optArray(v, loc, Number.MAX_SAFE_INTEGER).map((r, i) => {
    const rule = objectAt(r, [...loc, i]);
    stringAt(rule.tool_name, [...loc, i, "tool_name"]);
    stringAt(rule.type, [...loc, i, "type"]);
    return rule;
  });
}

/** `{KEY: value}` (v2) or `[{key, value}]` (v1) → the list Kelpie keeps on the agent. */
function envVars(v: unknown, loc: Loc): { key: string; value: string }[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) {
    return v.map((e, i) => {
      const o = objectAt(e, [...loc, i]);
      return {
        key: stringAt(o.key, [...loc, i, "key"]),
        value: optString(o.value, [...loc, i, "value"]) ?? "",
      };
    });
  }
  return Object.entries(objectAt(v, loc)).map(([key, value]) => ({
    key,
    value: optString(value, [...loc, key]) ?? "",
  }));
}

function uniqueKey(seen: Set<string>, key: string, loc: Loc): void {
  if (seen.has(key)) throw invalidField(loc, `duplicate id '${key}' in the file`);
  seen.add(key);
}

// --- v2: AgentFileSchema -----------------------------------------------------------------------

const V2_TOP_KNOWN = new Set([
  "agents",
  "blocks",
  "tools",
  "mcp_servers",
  "archives",
  "metadata",
  "created_at",
]);
const V2_TOP_UNSUPPORTED: Record<string, string> = {
  groups: "multi-agent groups were not imported (their agents were, one by one)",
  files: "files and folders were not imported",
  sources: "files and folders were not imported",
  skills: "skills were not imported",
};

/**
 * AgentState fields an agent file carries as given: the ones agents keep (EXTRA_FIELDS), except
 * secrets and environment variables (read on their own, with the import's overrides) and the
 * figures of the last run (they belong to the exporting server).
 */
const V2_AGENT_NOT_CARRIED = new Set<string>([
  "tool_exec_environment_variables",
  "secrets",
  "last_run_completion",
  "last_run_duration_ms",
  "last_stop_reason",
]);
const V2_AGENT_EXTRA = EXTRA_FIELDS.filter((f) => !V2_AGENT_NOT_CARRIED.has(f));

const V2_AGENT_KNOWN = new Set<string>([
  ...V2_AGENT_EXTRA,
  "id",
  "name",
  "memory_blocks",
  "tools",
  "tool_ids",
  "block_ids",
  "tool_rules",
  "tags",
  "system",
  "agent_type",
  "description",
  "metadata",
  "llm_config",
  "embedding_config",
  "model",
  "embedding",
  "context_window_limit",
  "max_tokens",
  "tool_exec_environment_variables",
  "secrets",
  "in_context_message_ids",
  "messages",
  "archive_ids",
  // Creation switches: the file lists the agent's tools and blocks itself, so these add nothing.
  "include_base_tools",
  "include_multi_agent_tools",
  "include_base_tool_rules",
  "include_default_source",
  "embedding_chunk_size",
]);
const V2_AGENT_UNSUPPORTED: Record<string, string> = {
  source_ids: "files and folders were not imported",
  folder_ids: "files and folders were not imported",
  files_agents: "files and folders were not imported",
  group_ids: "multi-agent groups were not imported",
  initial_message_sequence: "the file's messages are imported instead",
  memory_variables: "templates are not supported",
  from_template: "templates are not supported",
  template: "templates are not supported",
  project: "projects are given with project_id",
  max_reasoning_tokens: "set it in llm_config",
  enable_reasoner: "set it in llm_config",
  reasoning: "set it in llm_config",
};

function parseV2(file: Json, warnings: ImportWarnings): AgentFileModel {
  const loc = FILE_LOC;
  warnFields(file, loc, V2_TOP_KNOWN, V2_TOP_UNSUPPORTED, warnings);
  const model: AgentFileModel = {
    format: "v2",
    agents: [],
    blocks: new Map(),
    tools: new Map(),
    mcpServers: new Map(),
    archives: new Map(),
  };
  const ids = new Set<string>();
  for (const [i, raw] of optArray(file.blocks, [...loc, "blocks"], AGENT_FILE_BLOCKS_MAX).entries()) {
    const at = [...loc, "blocks", i];
    const key = stringAt(objectAt(raw, at).id, [...at, "id"]);
    uniqueKey(ids, key, [...at, "id"]);
    model.blocks.set(key, block(raw, key, at, "metadata", warnings));
  }
  for (const [i, raw] of optArray(file.tools, [...loc, "tools"], AGENT_FILE_TOOLS_MAX).entries()) {
    const at = [...loc, "tools", i];
    const key = stringAt(objectAt(raw, at).id, [...at, "id"]);
    uniqueKey(ids, key, [...at, "id"]);
    model.tools.set(key, tool(raw, key, at, warnings));
  }
  for (const [i, raw] of optArray(
    file.mcp_servers,
    [...loc, "mcp_servers"],
    AGENT_FILE_MCP_SERVERS_MAX,
  ).entries()) {
    const at = [...loc, "mcp_servers", i];
    const s = objectAt(raw, at);
    const key = stringAt(s.id, [...at, "id"]);
    uniqueKey(ids, key, [...at, "id"]);
    model.mcpServers.set(key, {
      key,
      loc: at,
      serverName: stringAt(s.server_name, [...at, "server_name"]),
      serverType: stringAt(s.server_type, [...at, "server_type"]),
      serverUrl: optString(s.server_url, [...at, "server_url"]),
      stdioConfig: optObject(s.stdio_config, [...at, "stdio_config"]),
    });
  }
  for (const [i, raw] of optArray(file.archives, [...loc, "archives"], AGENT_FILE_ARCHIVES_MAX).entries()) {
    const at = [...loc, "archives", i];
    const a = objectAt(raw, at);
    const key = stringAt(a.id, [...at, "id"]);
    uniqueKey(ids, key, [...at, "id"]);
    const passages = optArray(a.passages, [...at, "passages"], AGENT_FILE_PASSAGES_PER_ARCHIVE_MAX);
    model.archives.set(key, {
      key,
      loc: at,
      name: stringAt(a.name, [...at, "name"]),
      description: optString(a.description, [...at, "description"]),
      embeddingConfig: optObject(a.embedding_config, [...at, "embedding_config"]),
      metadata: optObject(a.metadata, [...at, "metadata"]) ?? {},
      ownerKey: optString(a.owner_agent_id, [...at, "owner_agent_id"]),
      passages: passages.map((p, j) => {
        const pat = [...at, "passages", j];
        const o = objectAt(p, pat);
        return {
          text: stringAt(o.text, [...pat, "text"]),
          tags: stringList(o.tags, [...pat, "tags"], Number.MAX_SAFE_INTEGER),
          metadata: optObject(o.metadata, [...pat, "metadata"]) ?? {},
          createdAtMs: optDateMs(o.created_at, [...pat, "created_at"]),
        };
      }),
    });
  }

  const agents = arrayAt(file.agents, [...loc, "agents"], AGENT_FILE_AGENTS_MAX);
  if (agents.length === 0) throw invalidField([...loc, "agents"], "holds no agent");
  for (const [i, raw] of agents.entries()) {
    const at = [...loc, "agents", i];
    const a = objectAt(raw, at);
    const key = stringAt(a.id, [...at, "id"]);
    uniqueKey(ids, key, [...at, "id"]);
    warnFields(a, at, V2_AGENT_KNOWN, V2_AGENT_UNSUPPORTED, warnings);
    const refs = (field: string, map: Map<string, unknown>, max: number) =>
      stringList(a[field], [...at, field], max).map((ref, j) => {
        if (!map.has(ref))
          throw invalidField([...at, field, j], `names '${ref}', which the file does not define`);
        return ref;
      });
    const messages = optArray(a.messages, [...at, "messages"], AGENT_FILE_MESSAGES_PER_AGENT_MAX).map(
      (m, j) => {
        const mat = [...at, "messages", j];
        const mkey = stringAt(objectAt(m, mat).id, [...mat, "id"]);
        uniqueKey(ids, mkey, [...mat, "id"]);
        return message(m, mkey, mat, warnings);
      },
    );
    const messageKeys = new Set(messages.map((m) => m.key));
    const inContextKeys = stringList(
      a.in_context_message_ids,
      [...at, "in_context_message_ids"],
      AGENT_FILE_MESSAGES_PER_AGENT_MAX,
    );
    const inContextSeen = new Set<string>();
    for (const [j, ref] of inContextKeys.entries()) {
      const jat = [...at, "in_context_message_ids", j];
      if (!messageKeys.has(ref))
        throw invalidField(jat, `names '${ref}', which is not one of this agent's messages`);
      if (inContextSeen.has(ref)) throw invalidField(jat, `names '${ref}' twice`);
      inContextSeen.add(ref);
    }
    const extra: Record<string, unknown> = {};
    for (const field of V2_AGENT_EXTRA)
      if (a[field] !== undefined && a[field] !== null) extra[field] = a[field];
    model.agents.push({
      key,
      loc: at,
      name: optString(a.name, [...at, "name"]) ?? key,
      agentType: optString(a.agent_type, [...at, "agent_type"]) ?? "memgpt_v2_agent",
      system: optString(a.system, [...at, "system"]),
      description: optString(a.description, [...at, "description"]),
      metadata: optObject(a.metadata, [...at, "metadata"]) ?? {},
      tags: stringList(a.tags, [...at, "tags"], Number.MAX_SAFE_INTEGER),
      llmConfig: optObject(a.llm_config, [...at, "llm_config"]),
      embeddingConfig: optObject(a.embedding_config, [...at, "embedding_config"]),
      model: optString(a.model, [...at, "model"]),
      embedding: optString(a.embedding, [...at, "embedding"]),
      contextWindowLimit: optInt(a.context_window_limit, [...at, "context_window_limit"]),
      maxTokens: optInt(a.max_tokens, [...at, "max_tokens"]),
      toolRules: toolRules(a.tool_rules, [...at, "tool_rules"]),
      blockKeys: refs("block_ids", model.blocks, BLOCKS_PER_AGENT_MAX),
      inlineBlocks: optArray(a.memory_blocks, [...at, "memory_blocks"], BLOCKS_PER_AGENT_MAX).map((b, j) =>
        block(b, `${key}.memory_blocks.${j}`, [...at, "memory_blocks", j], "metadata", warnings),
      ),
      toolKeys: refs("tool_ids", model.tools, TOOLS_PER_AGENT_MAX),
      toolNames: stringList(a.tools, [...at, "tools"], TOOLS_PER_AGENT_MAX),
      messages,
      inContextKeys,
      extra,
      envVars: [
        ...envVars(a.tool_exec_environment_variables, [...at, "tool_exec_environment_variables"]),
        ...envVars(a.secrets, [...at, "secrets"]),
      ],
      archiveKeys: refs("archive_ids", model.archives, AGENT_FILE_ARCHIVES_MAX),
    });
  }
  return model;
}

// --- v1: the legacy single-agent format ---------------------------------------------------------

const V1_KNOWN = new Set([
  "agent_type",
  "core_memory",
  "created_at",
  "updated_at",
  "description",
  "embedding_config",
  "llm_config",
  "message_buffer_autoclear",
  "in_context_message_indices",
  "messages",
  "metadata_",
  "name",
  "system",
  "tags",
  "tool_exec_environment_variables",
  "tool_rules",
  "tools",
  "version",
]);
const V1_UNSUPPORTED: Record<string, string> = {
  multi_agent_group: "multi-agent groups were not imported",
};

function parseV1(file: Json, warnings: ImportWarnings): AgentFileModel {
  const loc = FILE_LOC;
  warnFields(file, loc, V1_KNOWN, V1_UNSUPPORTED, warnings);
  const model: AgentFileModel = {
    format: "v1",
    agents: [],
    blocks: new Map(),
    tools: new Map(),
    mcpServers: new Map(),
    archives: new Map(),
  };
  const blockKeys = optArray(file.core_memory, [...loc, "core_memory"], BLOCKS_PER_AGENT_MAX).map(
    (raw, i) => {
      const key = `core_memory.${i}`;
      model.blocks.set(key, block(raw, key, [...loc, "core_memory", i], "metadata_", warnings));
      return key;
    },
  );
  const toolKeys = optArray(file.tools, [...loc, "tools"], TOOLS_PER_AGENT_MAX).map((raw, i) => {
    const key = `tools.${i}`;
    model.tools.set(key, tool(raw, key, [...loc, "tools", i], warnings));
    return key;
  });
  const messages = optArray(file.messages, [...loc, "messages"], AGENT_FILE_MESSAGES_PER_AGENT_MAX).map(
    (m, i) => message(m, `messages.${i}`, [...loc, "messages", i], warnings),
  );
  const seen = new Set<number>();
  const inContextKeys = optArray(
    file.in_context_message_indices,
    [...loc, "in_context_message_indices"],
    AGENT_FILE_MESSAGES_PER_AGENT_MAX,
  ).map((v, i) => {
    const at = [...loc, "in_context_message_indices", i];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= messages.length) {
      throw invalidField(at, `must be an index into messages (0 to ${messages.length - 1})`);
    }
    if (seen.has(v)) throw invalidField(at, `names message ${v} twice`);
    seen.add(v);
    return messages[v]!.key;
  });
  const tags = optArray(file.tags, [...loc, "tags"], Number.MAX_SAFE_INTEGER).map((t, i) =>
    typeof t === "string" ? t : stringAt(objectAt(t, [...loc, "tags", i]).tag, [...loc, "tags", i, "tag"]),
  );
  const extra: Record<string, unknown> = {};
  const autoclear = optBool(file.message_buffer_autoclear, [...loc, "message_buffer_autoclear"]);
  if (autoclear !== null) extra.message_buffer_autoclear = autoclear;
  model.agents.push({
    key: "agent",
    loc,
    name: stringAt(file.name, [...loc, "name"]),
    agentType: optString(file.agent_type, [...loc, "agent_type"]) ?? "memgpt_agent",
    system: optString(file.system, [...loc, "system"]),
    description: optString(file.description, [...loc, "description"]),
    metadata: optObject(file.metadata_, [...loc, "metadata_"]) ?? {},
    tags,
    llmConfig: optObject(file.llm_config, [...loc, "llm_config"]),
    embeddingConfig: optObject(file.embedding_config, [...loc, "embedding_config"]),
    model: null,
    embedding: null,
    contextWindowLimit: null,
    maxTokens: null,
    toolRules: toolRules(file.tool_rules, [...loc, "tool_rules"]),
    blockKeys,
    inlineBlocks: [],
    toolKeys,
    toolNames: [],
    messages,
    inContextKeys,
    extra,
    envVars: envVars(file.tool_exec_environment_variables, [...loc, "tool_exec_environment_variables"]),
    archiveKeys: [],
  });
  return model;
}

/** Parses the uploaded bytes as a Letta agent file of either format. */
export function parseAgentFile(bytes: Buffer, warnings: ImportWarnings): AgentFileModel {
  let json: unknown;
  try {
    json = parseJsonInput(bytes.toString("utf8"), FILE_LOC);
  } catch (err) {
    if (isKelpieError(err)) throw err;
    throw invalidField(FILE_LOC, `is not JSON: ${(err as Error).message}`, "json_invalid");
  }
  if (!isObject(json)) throw invalidField(FILE_LOC, "must be a JSON object (a Letta agent file)");
  if (Array.isArray(json.agents)) return parseV2(json, warnings);
  if (Array.isArray(json.core_memory) || Array.isArray(json.in_context_message_indices)) {
    return parseV1(json, warnings);
  }
  throw invalidField(
    FILE_LOC,
    "is not a Letta agent file: expected 'agents' (the current format) or 'core_memory' (the legacy format)",
  );
}
