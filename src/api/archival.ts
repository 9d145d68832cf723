// Archival memory as Letta serves it: an agent's archival-memory routes, /v1/archives (shared
// archives with their passages), attach/detach of archives to agents, and /v1/passages/search.
// Also Kelpie's working-memory routes (/v1/agents/{id}/working-memory).
import type { FastifyPluginAsync } from "fastify";
import { isoDate } from "../agent/letta-messages.ts";
import {
  ARCHIVAL_SEARCH_TOP_K_DEFAULT,
  ARCHIVAL_SEARCH_TOP_K_MAX,
  PAGE_LIMIT_MAX,
} from "../core/constants.ts";
import { invalidField } from "../core/errors.ts";
import type { ArchivalHit, PassageInput } from "../memory/archival.ts";
import type { ArchiveRecord, PassageRecord, WorkingMemoryEntry } from "../storage/types.ts";
import type { Services } from "./app.ts";
import { presentAgent } from "./present.ts";
import {
  jsonObject,
  nullable,
  type PageQueryString,
  pageOf,
  pageQuerySchema,
  stringArray,
} from "./schemas.ts";

export function presentPassage(p: PassageRecord, archive?: ArchiveRecord): Record<string, unknown> {
  return {
    id: p.id,
    text: p.text,
    archive_id: p.archive_id,
    tags: p.tags,
    metadata: p.metadata,
    created_at: isoDate(p.created_at_ms),
    updated_at: isoDate(p.updated_at_ms),
    is_deleted: false,
    // Vectors stay on the server: they are large and no client reads them back.
    embedding: null,
    embedding_config: archive?.embedding_config ?? null,
    source_id: null,
    file_id: null,
    file_name: null,
    created_by_id: null,
    last_updated_by_id: null,
  };
}

export function presentArchive(a: ArchiveRecord): Record<string, unknown> {
  return {
    id: a.id,
    name: a.name,
    description: a.description,
    vector_db_provider: "native",
    embedding_config: a.embedding_config,
    metadata: a.metadata,
    created_at: isoDate(a.created_at_ms),
    updated_at: isoDate(a.updated_at_ms),
    created_by_id: null,
    last_updated_by_id: null,
  };
}

/** A date-time query or body field as epoch ms; a date alone covers that whole day for an end bound. */
export function parseDateField(value: unknown, loc: (string | number)[], end: boolean): number | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") throw invalidField(loc, "must be an ISO 8601 date-time string");
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(value);
  const ms = Date.parse(dateOnly ? `${value}T00:00:00Z` : value);
  if (Number.isNaN(ms)) throw invalidField(loc, `is not an ISO 8601 date-time: '${value}'`);
  return dateOnly && end ? ms + 86_400_000 - 1 : ms;
}

const passageInputSchema = {
  type: "object",
  properties: {
    text: { type: "string" },
    tags: nullable(stringArray),
    metadata: nullable(jsonObject),
    created_at: nullable({ type: "string" }),
  },
  required: ["text"],
} as const;

interface PassageBody {
  text: string;
  tags?: string[] | null;
  metadata?: Record<string, unknown> | null;
  created_at?: string | null;
}

function passageInput(body: PassageBody, loc: (string | number)[]): PassageInput {
  return {
    text: body.text,
    tags: body.tags ?? [],
    metadata: body.metadata ?? {},
    created_at_ms: parseDateField(body.created_at, [...loc, "created_at"], false),
  };
}

const agentParams = {
  type: "object",
  properties: { agent_id: { type: "string" } },
  required: ["agent_id"],
} as const;

interface SearchQueryString {
  query: string;
  tags?: string[];
  tag_match_mode: "any" | "all";
  top_k?: number;
  start_datetime?: string;
  end_datetime?: string;
}

function presentSearchResult(hit: ArchivalHit): Record<string, unknown> {
  return {
    id: hit.passage.id,
    timestamp: isoDate(hit.passage.created_at_ms),
    content: hit.passage.text,
    tags: hit.passage.tags,
  };
}

export const archivalAgentRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { archival, working } = services;

  app.get<{
    Params: { agent_id: string };
    Querystring: { after?: string; before?: string; limit: number; search?: string; ascending: boolean };
  }>(
    "/:agent_id/archival-memory",
    {
      schema: {
        params: agentParams,
        querystring: {
          type: "object",
          properties: {
            after: { type: "string", minLength: 1 },
            before: { type: "string", minLength: 1 },
            limit: { type: "integer", minimum: 1, maximum: PAGE_LIMIT_MAX, default: 100 },
            search: { type: "string" },
            ascending: { type: "boolean", default: true },
          },
        },
      },
    },
    async (req) => {
      const archiveIds = await archival.agentArchiveIds(req.params.agent_id);
      const q = req.query;
      const list = await archival.list(archiveIds, {
        limit: q.limit,
        after: q.after,
        before: q.before,
        order: q.ascending ? "asc" : "desc",
        search: q.search,
      });
      return list.map((p) => presentPassage(p));
    },
  );

  app.post<{ Params: { agent_id: string }; Body: PassageBody }>(
    "/:agent_id/archival-memory",
    { schema: { params: agentParams, body: passageInputSchema } },
    async (req) => {
      const archive = await archival.ensureAgentArchive(req.params.agent_id);
      const passages = await archival.insertForAgent(req.params.agent_id, passageInput(req.body, ["body"]));
      return passages.map((p) => presentPassage(p, archive));
    },
  );

  app.get<{ Params: { agent_id: string }; Querystring: SearchQueryString }>(
    "/:agent_id/archival-memory/search",
    {
      schema: {
        params: agentParams,
        querystring: {
          type: "object",
          properties: {
            query: { type: "string" },
            tags: stringArray,
            tag_match_mode: { type: "string", enum: ["any", "all"], default: "any" },
            top_k: { type: "integer", minimum: 1, maximum: ARCHIVAL_SEARCH_TOP_K_MAX },
            start_datetime: { type: "string" },
            end_datetime: { type: "string" },
          },
          required: ["query"],
        },
      },
    },
    async (req) => {
      const q = req.query;
      const archiveIds = await archival.agentArchiveIds(req.params.agent_id);
      const hits = await archival.search(archiveIds, {
        query: q.query,
        topK: q.top_k ?? ARCHIVAL_SEARCH_TOP_K_DEFAULT,
        tags: q.tags,
        tagMatch: q.tag_match_mode,
        startMs: parseDateField(q.start_datetime, ["query", "start_datetime"], false),
        endMs: parseDateField(q.end_datetime, ["query", "end_datetime"], true),
      });
      const results = hits.map(presentSearchResult);
      return { results, count: results.length };
    },
  );

  app.delete<{ Params: { agent_id: string; memory_id: string } }>(
    "/:agent_id/archival-memory/:memory_id",
    async (req) => {
      await archival.agentArchiveIds(req.params.agent_id); // AGENT_NOT_FOUND before anything else
      await archival.deletePassage(req.params.memory_id, { agentId: req.params.agent_id });
      return {};
    },
  );

  for (const action of ["attach", "detach"] as const) {
    app.patch<{ Params: { agent_id: string; archive_id: string } }>(
      `/:agent_id/archives/${action}/:archive_id`,
      async (req) => {
        const { agent_id, archive_id } = req.params;
        await archival.relation(agent_id, archive_id, action);
        return {};
      },
    );
  }

  // --- working memory (Kelpie's extension) ---
  const presentEntry = (e: WorkingMemoryEntry) => ({
    key: e.key,
    value: e.value,
    size_bytes: e.size_bytes,
    expires_at: e.expires_at_ms === null ? null : isoDate(e.expires_at_ms),
    updated_at: isoDate(e.updated_at_ms),
  });

  app.get<{ Params: { agent_id: string } }>("/:agent_id/working-memory", async (req) =>
    (await working.list(req.params.agent_id)).map(presentEntry),
  );

  app.get<{ Params: { agent_id: string; key: string } }>("/:agent_id/working-memory/:key", async (req) =>
    presentEntry(await working.get(req.params.agent_id, req.params.key)),
  );

  app.put<{ Params: { agent_id: string; key: string }; Body: { value: unknown; ttl_ms?: number | null } }>(
    "/:agent_id/working-memory/:key",
    {
      schema: {
        body: {
          type: "object",
          properties: { value: {}, ttl_ms: nullable({ type: "integer", minimum: 1 }) },
          required: ["value"],
        },
      },
    },
    async (req) => presentEntry(await working.put(req.params.agent_id, req.params.key, req.body)),
  );

  app.delete<{ Params: { agent_id: string; key: string } }>(
    "/:agent_id/working-memory/:key",
    async (req, reply) => {
      const existed = await working.delete(req.params.agent_id, req.params.key);
      if (!existed) {
        return reply.code(404).send({ detail: `Working memory key '${req.params.key}' not found` });
      }
      return {};
    },
  );
};

interface ArchiveBody {
  name: string;
  description?: string | null;
  embedding?: string | null;
  embedding_config?: Record<string, unknown> | null;
}

const archiveParams = {
  type: "object",
  properties: { archive_id: { type: "string" } },
  required: ["archive_id"],
} as const;

export const archivesRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { archival, agents } = services;
  const tiers = services.env.storage.tiers;

  app.post<{ Body: ArchiveBody }>(
    "/",
    {
      schema: {
        body: {
          type: "object",
          properties: {
            name: { type: "string", minLength: 1 },
            description: nullable({ type: "string" }),
            embedding: nullable({ type: "string" }),
            embedding_config: nullable(jsonObject),
          },
          required: ["name"],
        },
      },
    },
    async (req) => {
      const b = req.body;
      const embedding =
        b.embedding != null || b.embedding_config != null
          ? agents.models.embeddingConfig(b.embedding ?? undefined, b.embedding_config ?? undefined)
          : undefined;
      return presentArchive(
        await archival.createArchive({
          name: b.name,
          description: b.description,
          embedding_config: embedding,
        }),
      );
    },
  );

  app.get<{ Querystring: PageQueryString & { name?: string; agent_id?: string } }>(
    "/",
    {
      schema: {
        querystring: {
          type: "object",
          properties: { ...pageQuerySchema("asc"), name: { type: "string" }, agent_id: { type: "string" } },
        },
      },
    },
    async (req) =>
      (
        await tiers.listArchives({ ...pageOf(req.query), name: req.query.name, agent_id: req.query.agent_id })
      ).map(presentArchive),
  );

  app.get<{ Params: { archive_id: string } }>(
    "/:archive_id",
    { schema: { params: archiveParams } },
    async (req) => presentArchive(await archival.getArchive(req.params.archive_id)),
  );

  app.patch<{
    Params: { archive_id: string };
    Body: { name?: string | null; description?: string | null } | undefined;
  }>(
    "/:archive_id",
    {
      schema: {
        params: archiveParams,
        body: {
          type: "object",
          properties: {
            name: nullable({ type: "string", minLength: 1 }),
            description: nullable({ type: "string" }),
          },
        },
      },
    },
    async (req) => presentArchive(await archival.updateArchive(req.params.archive_id, req.body ?? {})),
  );

  app.delete<{ Params: { archive_id: string } }>(
    "/:archive_id",
    { schema: { params: archiveParams } },
    async (req) => {
      await archival.deleteArchive(req.params.archive_id);
      return null;
    },
  );

  app.get<{ Params: { archive_id: string }; Querystring: PageQueryString }>(
    "/:archive_id/agents",
    {
      schema: { params: archiveParams, querystring: { type: "object", properties: pageQuerySchema("asc") } },
    },
    async (req) => {
      await archival.getArchive(req.params.archive_id);
      let ids = await tiers.listArchiveAgentIds(req.params.archive_id);
      if (req.query.order === "desc") ids = ids.reverse();
      const q = req.query;
      if (q.after !== undefined) ids = ids.slice(ids.indexOf(q.after) + 1);
      if (q.before !== undefined) ids = ids.slice(0, Math.max(0, ids.indexOf(q.before)));
      const views = await Promise.all(ids.slice(0, q.limit).map((id) => agents.get(id)));
      return views.map(presentAgent);
    },
  );

  app.post<{ Params: { archive_id: string }; Body: PassageBody }>(
    "/:archive_id/passages",
    { schema: { params: archiveParams, body: passageInputSchema } },
    async (req) => {
      const archive = await archival.getArchive(req.params.archive_id);
      const [passage] = await archival.insert(archive.id, [passageInput(req.body, ["body"])]);
      return presentPassage(passage!, archive);
    },
  );

  app.post<{ Params: { archive_id: string }; Body: { passages: PassageBody[] } }>(
    "/:archive_id/passages/batch",
    {
      schema: {
        params: archiveParams,
        body: {
          type: "object",
          properties: { passages: { type: "array", items: passageInputSchema } },
          required: ["passages"],
        },
      },
    },
    async (req) => {
      const archive = await archival.getArchive(req.params.archive_id);
      const inputs = req.body.passages.map((p, i) => passageInput(p, ["body", "passages", i]));
      const passages = await archival.insert(archive.id, inputs, ["body", "passages"]);
      return passages.map((p) => presentPassage(p, archive));
    },
  );

  app.delete<{ Params: { archive_id: string; passage_id: string } }>(
    "/:archive_id/passages/:passage_id",
    async (req) => {
      await archival.getArchive(req.params.archive_id);
      await archival.deletePassage(req.params.passage_id, { archiveId: req.params.archive_id });
      return null;
    },
  );
};

interface PassageSearchBody {
  query?: string | null;
  agent_id?: string | null;
  archive_id?: string | null;
  tags?: string[] | null;
  tag_match_mode?: "any" | "all";
  limit?: number;
  start_date?: string | null;
  end_date?: string | null;
}

export const passagesRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { archival } = services;
  const tiers = services.env.storage.tiers;

  app.post<{ Body: PassageSearchBody | undefined }>(
    "/search",
    {
      schema: {
        body: {
          type: "object",
          properties: {
            query: nullable({ type: "string" }),
            agent_id: nullable({ type: "string" }),
            archive_id: nullable({ type: "string" }),
            tags: nullable(stringArray),
            tag_match_mode: { type: "string", enum: ["any", "all"], default: "any" },
            limit: { type: "integer", minimum: 1, maximum: ARCHIVAL_SEARCH_TOP_K_MAX, default: 50 },
            start_date: nullable({ type: "string" }),
            end_date: nullable({ type: "string" }),
          },
        },
      },
    },
    async (req) => {
      const b = req.body ?? {};
      let archiveIds: string[];
      if (b.archive_id != null) {
        await archival.getArchive(b.archive_id);
        archiveIds = [b.archive_id];
        if (b.agent_id != null && !(await archival.agentArchiveIds(b.agent_id)).includes(b.archive_id)) {
          archiveIds = [];
        }
      } else if (b.agent_id != null) {
        archiveIds = await archival.agentArchiveIds(b.agent_id);
      } else {
        archiveIds = (await tiers.listArchives({ limit: PAGE_LIMIT_MAX, order: "asc" })).map((a) => a.id);
      }
      const archives = new Map<string, ArchiveRecord>();
      for (const id of archiveIds) archives.set(id, await archival.getArchive(id));
      const limit = b.limit ?? 50;
      const startMs = parseDateField(b.start_date, ["body", "start_date"], false);
      const endMs = parseDateField(b.end_date, ["body", "end_date"], true);
      if (b.query == null || b.query === "") {
        // No query: the newest passages that pass the filters.
        const recent = await archival.list(archiveIds, { limit: PAGE_LIMIT_MAX, order: "desc" });
        return recent
          .filter(
            (p) =>
              (startMs === undefined || p.created_at_ms >= startMs) &&
              (endMs === undefined || p.created_at_ms <= endMs) &&
              (b.tags == null ||
                b.tags.length === 0 ||
                (b.tag_match_mode === "all"
                  ? b.tags.every((t) => p.tags.includes(t))
                  : b.tags.some((t) => p.tags.includes(t)))),
          )
          .slice(0, limit)
          .map((p) => ({ passage: presentPassage(p, archives.get(p.archive_id)), score: 0, metadata: {} }));
      }
      const hits = await archival.search(archiveIds, {
        query: b.query,
        topK: limit,
        tags: b.tags ?? undefined,
        tagMatch: b.tag_match_mode,
        startMs,
        endMs,
      });
      return hits.map((h) => ({
        passage: presentPassage(h.passage, archives.get(h.passage.archive_id)),
        score: h.score,
        metadata: { vector_score: h.vector_score, text_rank: h.text_rank },
      }));
    },
  );
};
