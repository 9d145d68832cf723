// The memory tools beyond core blocks: archival_memory_insert/search (the agent's archives),
// conversation_search (hybrid full text + embeddings over its messages) and Kelpie's
// working_memory_* tools. Mistakes the model makes come back to it as tool errors.
import { textOf } from "../agent/history.ts";
import type { ToolCallContext, ToolOutput, ToolRunner, ToolRunners } from "../agent/tool-calls.ts";
import { ARCHIVAL_SEARCH_TOP_K_DEFAULT, ARCHIVAL_SEARCH_TOP_K_MAX } from "../core/constants.ts";
import { isKelpieError } from "../core/errors.ts";
import type { ArchivalService } from "../memory/archival.ts";
import { type Embedders, localEmbeddingConfig } from "../memory/embedders.ts";
import type { WorkingMemoryService } from "../memory/working-memory.ts";
import { type MessageRecord, queryWords } from "../storage/types.ts";
import { WORKING_MEMORY_TOOL_NAMES } from "./builtins.ts";
import { ToolError } from "./memory-tools.ts";

/** Letta's RETRIEVAL_QUERY_DEFAULT_PAGE_SIZE. */
export const CONVERSATION_SEARCH_LIMIT_DEFAULT = 5;
export const CONVERSATION_SEARCH_LIMIT_MAX = 100;
/** conversation_search scans at most this many recent messages; the result says so when it stops short. */
export const CONVERSATION_SEARCH_SCAN_MAX = 10_000;
/** Messages embedded per search: the newest that pass the filters plus the best full-text matches. */
const CONVERSATION_SEMANTIC_CANDIDATES_MAX = 256;
/** Message vectors kept between searches (messages never change, so a vector never goes stale). */
const MESSAGE_VECTORS_CACHED_MAX = 20_000;
const RRF_K = 60;
/** A message found only by meaning must be at least this similar to the query (cosine). */
const CONVERSATION_SEMANTIC_SCORE_MIN = 0.3;

/** Each result shows at most this much of its message's text (results stay a bounded size). */
export const CONVERSATION_SEARCH_RESULT_CHARS_MAX = 500;

/** A tool message answering conversation_search: searching it again would feed results on themselves. */
function isSearchEcho(m: MessageRecord): boolean {
  return m.role === "tool" && m.name === "conversation_search";
}

function dateBound(value: unknown, end: boolean, field: string): number | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") throw new ToolError(`Argument '${field}' must be an ISO 8601 date string.`);
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(value);
  const ms = Date.parse(dateOnly ? `${value}T00:00:00Z` : value);
  if (Number.isNaN(ms)) throw new ToolError(`Argument '${field}' is not an ISO 8601 date: '${value}'.`);
  return dateOnly && end ? ms + 86_400_000 - 1 : ms;
}

function intArg(value: unknown, field: string, fallback: number, max: number): number {
  if (value === undefined || value === null) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new ToolError(`Argument '${field}' must be an integer from 1 to ${max}.`);
  }
  return n;
}

function tagsArg(value: unknown, field: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || value.some((t) => typeof t !== "string")) {
    throw new ToolError(`Argument '${field}' must be a list of strings.`);
  }
  return value as string[];
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

export class MemoryTierTools implements ToolRunner {
  private readonly messageVectors = new Map<string, Float32Array>();

  constructor(
    private readonly archival: ArchivalService,
    private readonly working: WorkingMemoryService,
    private readonly embedders: Embedders,
  ) {}

  register(runners: ToolRunners): void {
    for (const name of [
      "archival_memory_insert",
      "archival_memory_search",
      "conversation_search",
      ...WORKING_MEMORY_TOOL_NAMES,
    ]) {
      runners.registerName(name, this);
    }
  }

  async run(name: string, args: Record<string, unknown>, ctx: ToolCallContext): Promise<ToolOutput> {
    try {
      return { ok: true, value: await this.dispatch(name, args, ctx) };
    } catch (err) {
      // Over-limit or malformed input is the model's to fix: report it as a tool error.
      if (isKelpieError(err) && err.status < 500 && err.code !== "CANCELLED")
        throw new ToolError(err.message);
      throw err;
    }
  }

  private async dispatch(name: string, args: Record<string, unknown>, ctx: ToolCallContext): Promise<string> {
    switch (name) {
      case "archival_memory_insert": {
        if (typeof args.content !== "string") throw new ToolError("Missing required argument 'content'.");
        await this.archival.insertForAgent(
          ctx.agentId,
          { text: args.content, tags: tagsArg(args.tags, "tags") ?? [] },
          ctx.fence,
        );
        return "None";
      }
      case "archival_memory_search": {
        if (typeof args.query !== "string") throw new ToolError("Missing required argument 'query'.");
        const archiveIds = await this.archival.agentArchiveIds(ctx.agentId);
        const mode = args.tag_match_mode ?? "any";
        if (mode !== "any" && mode !== "all")
          throw new ToolError("Argument 'tag_match_mode' must be 'any' or 'all'.");
        const hits = await this.archival.search(archiveIds, {
          query: args.query,
          topK: intArg(args.top_k, "top_k", ARCHIVAL_SEARCH_TOP_K_DEFAULT, ARCHIVAL_SEARCH_TOP_K_MAX),
          tags: tagsArg(args.tags, "tags"),
          tagMatch: mode,
          startMs: dateBound(args.start_datetime, false, "start_datetime"),
          endMs: dateBound(args.end_datetime, true, "end_datetime"),
        });
        if (hits.length === 0) return "No results found.";
        return JSON.stringify(
          hits.map((h) => ({
            timestamp: new Date(h.passage.created_at_ms).toISOString(),
            content: h.passage.text,
            tags: h.passage.tags,
          })),
        );
      }
      case "conversation_search":
        return this.conversationSearch(args, ctx);
      case "working_memory_set": {
        if (typeof args.key !== "string") throw new ToolError("Missing required argument 'key'.");
        if (args.value === undefined) throw new ToolError("Missing required argument 'value'.");
        const ttl =
          args.ttl_seconds == null ? null : intArg(args.ttl_seconds, "ttl_seconds", 1, 31_536_000) * 1_000;
        await this.working.put(
          ctx.agentId,
          args.key,
          { value: args.value, ttl_ms: ttl },
          ["args"],
          ctx.fence,
        );
        return `Stored working memory key '${args.key}'.`;
      }
      case "working_memory_get": {
        if (typeof args.key !== "string") throw new ToolError("Missing required argument 'key'.");
        const entry = await this.working.get(ctx.agentId, args.key);
        return JSON.stringify(entry.value);
      }
      case "working_memory_delete": {
        if (typeof args.key !== "string") throw new ToolError("Missing required argument 'key'.");
        const existed = await this.working.delete(ctx.agentId, args.key, ctx.fence);
        if (!existed) throw new ToolError(`Working memory key '${args.key}' not found.`);
        return `Deleted working memory key '${args.key}'.`;
      }
      case "working_memory_list": {
        const entries = await this.working.list(ctx.agentId);
        if (entries.length === 0) return "Working memory is empty.";
        return JSON.stringify(entries.map((e) => ({ key: e.key, size_bytes: e.size_bytes })));
      }
      default:
        throw new ToolError(`Tool '${name}' is not a memory tool.`);
    }
  }

  /**
   * Hybrid search over the agent's messages: a full-text rank (query words weighted by rarity) and
   * a semantic rank (cosine to the query, over the newest messages and the best text matches),
   * fused by reciprocal rank. Without a query, the newest messages that pass the filters.
   */
  private async conversationSearch(args: Record<string, unknown>, ctx: ToolCallContext): Promise<string> {
    const query = typeof args.query === "string" ? args.query : "";
    const roles = tagsArg(args.roles, "roles");
    const limit = intArg(
      args.limit,
      "limit",
      CONVERSATION_SEARCH_LIMIT_DEFAULT,
      CONVERSATION_SEARCH_LIMIT_MAX,
    );
    const startMs = dateBound(args.start_date, false, "start_date");
    const endMs = dateBound(args.end_date, true, "end_date");
    const storage = ctx.env.storage;
    const recent = await storage.listMessages(ctx.agentId, {
      limit: CONVERSATION_SEARCH_SCAN_MAX,
      order: "desc",
    });
    const total = await storage.countMessages(ctx.agentId);
    const pool = recent.filter(
      (m) =>
        m.role !== "system" &&
        !isSearchEcho(m) &&
        (roles === undefined || roles.includes(m.role)) &&
        (startMs === undefined || m.created_at_ms >= startMs) &&
        (endMs === undefined || m.created_at_ms <= endMs) &&
        textOf(m).trim() !== "",
    );
    const note =
      total > recent.length ? ` (searched the ${recent.length} most recent of ${total} messages)` : "";
    let matches: MessageRecord[];
    if (query.trim() === "") {
      matches = pool.slice(0, limit);
    } else {
      matches = await this.rankMessages(ctx, query, pool, limit);
    }
    if (matches.length === 0) return `No results found.${note}`;
    // Numbered (time, role, text), clipped, on one line: never JSON wrapping JSON.
    const lines = matches.map((m, i) => {
      const text = textOf(m).replace(/\s+/g, " ").trim();
      const shown =
        text.length > CONVERSATION_SEARCH_RESULT_CHARS_MAX
          ? `${text.slice(0, CONVERSATION_SEARCH_RESULT_CHARS_MAX)}…`
          : text;
      return `(${i + 1}) [${new Date(m.created_at_ms).toISOString()}] ${m.role}: ${shown}`;
    });
    return `Found ${matches.length} results${note}: ${lines.join(" ")}`;
  }

  private async rankMessages(
    ctx: ToolCallContext,
    query: string,
    pool: MessageRecord[],
    limit: number,
  ): Promise<MessageRecord[]> {
    const words = queryWords(query);
    const docs = pool.map((m) => new Set(queryWords(textOf(m))));
    const idf = new Map(
      words.map((w) => {
        const df = docs.reduce((n, d) => n + (d.has(w) ? 1 : 0), 0);
        return [w, Math.log(1 + pool.length / (1 + df))];
      }),
    );
    const textRanked = pool
      .map((m, i) => ({ m, score: words.reduce((s, w) => s + (docs[i]!.has(w) ? idf.get(w)! : 0), 0) }))
      .filter((x) => x.score > 0)
      .sort((a, b) => b.score - a.score || b.m.created_at_ms - a.m.created_at_ms)
      .map((x) => x.m);

    // Semantic half over a bounded candidate set: the best text matches and the newest messages.
    const candidates = [
      ...new Set([
        ...textRanked.slice(0, CONVERSATION_SEMANTIC_CANDIDATES_MAX / 2),
        ...pool.slice(0, CONVERSATION_SEMANTIC_CANDIDATES_MAX),
      ]),
    ].slice(0, CONVERSATION_SEMANTIC_CANDIDATES_MAX);
    const agent = await ctx.env.storage.getAgent(ctx.agentId);
    const config = agent?.embedding_config ?? localEmbeddingConfig();
    const embedder = this.embedders.forConfig(
      this.embedders.available(config) ? config : localEmbeddingConfig(),
    );
    const missing = candidates.filter((m) => !this.messageVectors.has(`${embedder.handle}|${m.id}`));
    const [queryVector, ...vectors] = await embedder.embed([query, ...missing.map(textOf)]);
    missing.forEach((m, i) => {
      if (this.messageVectors.size >= MESSAGE_VECTORS_CACHED_MAX) this.messageVectors.clear();
      this.messageVectors.set(`${embedder.handle}|${m.id}`, vectors[i]!);
    });
    const semanticRanked = candidates
      .map((m) => ({
        m,
        score: cosine(queryVector!, this.messageVectors.get(`${embedder.handle}|${m.id}`)!),
      }))
      .filter((x) => x.score >= CONVERSATION_SEMANTIC_SCORE_MIN)
      .sort((a, b) => b.score - a.score)
      .map((x) => x.m);

    const fused = new Map<MessageRecord, number>();
    for (const ranked of [textRanked, semanticRanked]) {
      for (const [rank, m] of ranked.entries()) fused.set(m, (fused.get(m) ?? 0) + 1 / (RRF_K + rank + 1));
    }
    return [...fused.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, limit)
      .map(([m]) => m);
  }
}
