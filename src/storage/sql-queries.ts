// Listing queries shared by the SQL engines: filters and cursor pagination, written once with
// `?` placeholders (the PostgreSQL engine renumbers them to $1, $2, ...).
import type {
  AgentListQuery,
  ArchiveListQuery,
  BlockListQuery,
  PageQuery,
  PassageListQuery,
  ToolListQuery,
} from "./types.ts";

export interface SqlQuery {
  text: string;
  params: unknown[];
}

export type Dialect = "sqlite" | "postgres";

/** `?` placeholders → `$1, $2, ...` (PostgreSQL's). */
export function numbered(text: string): string {
  let n = 0;
  return text.replace(/\?/g, () => `$${++n}`);
}

/** `lower(x) contains lower(?)`, in each dialect. */
function containsFolded(dialect: Dialect, expr: string): string {
  return dialect === "sqlite"
    ? `instr(lower(${expr}), lower(?)) > 0`
    : `strpos(lower(${expr}), lower(?)) > 0`;
}

function jsonText(dialect: Dialect, field: string): string {
  return dialect === "sqlite" ? `json_extract(doc, '$.${field}')` : `(doc->>'${field}')`;
}

function placeholders(n: number): string {
  return Array.from({ length: n }, () => "?").join(", ");
}

/** Wraps filter conditions with the cursor bounds, order and limit of a page. */
function page(table: string, columns: string, where: string[], params: unknown[], q: PageQuery): SqlQuery {
  const asc = q.order === "asc";
  if (q.after !== undefined) {
    where.push(`seq ${asc ? ">" : "<"} (SELECT seq FROM ${table} WHERE id = ?)`);
    params.push(q.after);
  }
  if (q.before !== undefined) {
    where.push(`seq ${asc ? "<" : ">"} (SELECT seq FROM ${table} WHERE id = ?)`);
    params.push(q.before);
  }
  params.push(q.limit);
  const filter = where.length > 0 ? `WHERE ${where.join(" AND ")}` : "";
  return {
    text: `SELECT ${columns} FROM ${table} ${filter} ORDER BY seq ${asc ? "ASC" : "DESC"} LIMIT ?`,
    params,
  };
}

export function agentListSql(dialect: Dialect, q: AgentListQuery): SqlQuery {
  const where: string[] = [];
  const params: unknown[] = [];
  if (q.name !== undefined) {
    where.push("name = ?");
    params.push(q.name);
  }
  if (q.query_text !== undefined) {
    where.push(containsFolded(dialect, "name"));
    params.push(q.query_text);
  }
  if (q.tags !== undefined && q.tags.length > 0) {
    const tags = [...new Set(q.tags)];
    const inTags = `agent_tags.agent_id = agents.id AND agent_tags.tag IN (${placeholders(tags.length)})`;
    where.push(
      q.match_all_tags
        ? `(SELECT count(*) FROM agent_tags WHERE ${inTags}) = ${tags.length}`
        : `EXISTS (SELECT 1 FROM agent_tags WHERE ${inTags})`,
    );
    params.push(...tags);
  }
  return page("agents", "doc", where, params, q);
}

export function blockListSql(dialect: Dialect, q: BlockListQuery): SqlQuery {
  const where: string[] = [];
  const params: unknown[] = [];
  if (q.label !== undefined) {
    where.push("label = ?");
    params.push(q.label);
  }
  if (q.templates_only) where.push(dialect === "sqlite" ? "is_template = 1" : "is_template");
  if (q.name !== undefined) {
    where.push("template_name = ?");
    params.push(q.name);
  }
  if (q.label_search !== undefined) {
    where.push(containsFolded(dialect, "label"));
    params.push(q.label_search);
  }
  if (q.value_search !== undefined) {
    where.push(containsFolded(dialect, jsonText(dialect, "value")));
    params.push(q.value_search);
  }
  if (q.description_search !== undefined) {
    where.push(containsFolded(dialect, `coalesce(${jsonText(dialect, "description")}, '')`));
    params.push(q.description_search);
  }
  return page("blocks", "doc", where, params, q);
}

export function toolListSql(dialect: Dialect, q: ToolListQuery): SqlQuery {
  const where: string[] = [];
  const params: unknown[] = [];
  const inList = (column: string, values: string[], negate = false) => {
    if (values.length === 0) {
      if (!negate) where.push("1 = 0");
      return;
    }
    where.push(`${column} ${negate ? "NOT IN" : "IN"} (${placeholders(values.length)})`);
    params.push(...values);
  };
  if (q.name !== undefined) {
    where.push("name = ?");
    params.push(q.name);
  }
  if (q.names !== undefined) inList("name", q.names);
  if (q.tool_ids !== undefined) inList("id", q.tool_ids);
  if (q.search !== undefined) {
    where.push(containsFolded(dialect, "name"));
    params.push(q.search);
  }
  if (q.tool_types !== undefined) inList("tool_type", q.tool_types);
  if (q.exclude_tool_types !== undefined) inList("tool_type", q.exclude_tool_types, true);
  return page("tools", "doc", where, params, q);
}

export function messageListSql(agentId: string, q: PageQuery): SqlQuery {
  return page("messages", "doc", ["agent_id = ?"], [agentId], q);
}

export function runMessageListSql(runId: string, q: PageQuery): SqlQuery {
  return page("messages", "doc", ["run_id = ?"], [runId], q);
}

export function runListSql(agentId: string | undefined, q: PageQuery): SqlQuery {
  return agentId === undefined
    ? page("runs", "doc", [], [], q)
    : page("runs", "doc", ["agent_id = ?"], [agentId], q);
}

export function auditListSql(q: PageQuery): SqlQuery {
  return page("audit_log", "doc", [], [], q);
}

export function archiveListSql(q: ArchiveListQuery): SqlQuery {
  const where: string[] = [];
  const params: unknown[] = [];
  if (q.name !== undefined) {
    where.push("name = ?");
    params.push(q.name);
  }
  if (q.agent_id !== undefined) {
    where.push("id IN (SELECT archive_id FROM agent_archives WHERE agent_id = ?)");
    params.push(q.agent_id);
  }
  return page("archives", "doc", where, params, q);
}

/** Passages of some archives; the text rides beside the doc so the doc need not repeat it. */
export function passageListSql(dialect: Dialect, archiveIds: string[], q: PassageListQuery): SqlQuery {
  const where = [`archive_id IN (${placeholders(archiveIds.length)})`];
  const params: unknown[] = [...archiveIds];
  if (q.search !== undefined && q.search !== "") {
    where.push(containsFolded(dialect, "text"));
    params.push(q.search);
  }
  return page("passages", "doc, text", where, params, q);
}

export function conversationListSql(agentId: string | undefined, q: PageQuery): SqlQuery {
  const where: string[] = [];
  const params: unknown[] = [];
  if (agentId !== undefined) {
    where.push("agent_id = ?");
    params.push(agentId);
  }
  return page("conversations", "doc", where, params, q);
}
