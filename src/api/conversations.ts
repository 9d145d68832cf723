// /v1/conversations: several histories with one agent (Letta's conversations, as letta-code uses
// them). A conversation shares the agent's memory blocks and tools and keeps its own in-context
// messages; the id "default" (with an agent_id) is the agent's own history.
import type { FastifyPluginAsync, FastifyReply } from "fastify";
import { isoDate, LETTA_MESSAGE_OPTIONS_DEFAULT, toLettaMessages } from "../agent/letta-messages.ts";
import type { SendRequestBody } from "../agent/message-service.ts";
import { MESSAGE_PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX } from "../core/constants.ts";
import { invalidField, KelpieError, notFound } from "../core/errors.ts";
import { newId } from "../core/ids.ts";
import type { ConversationRecord, MessageRecord, Mutation } from "../storage/types.ts";
import type { Services } from "./app.ts";
import { idempotencyKeyOf } from "./idempotency.ts";
import { lettaResponse, sendBody, streamTurn } from "./messages.ts";
import { nullable, pageQuerySchema, stringArray } from "./schemas.ts";

export const DEFAULT_CONVERSATION = "default";
/** A conversation's message listing scans at most this many of the agent's newest messages. */
const CONVERSATION_MESSAGES_SCAN_MAX = 100_000;

export function presentConversation(c: ConversationRecord): Record<string, unknown> {
  return {
    id: c.id,
    agent_id: c.agent_id,
    summary: c.summary,
    in_context_message_ids: c.in_context_message_ids,
    isolated_block_ids: [],
    model: c.model,
    model_settings: null,
    last_message_at: isoDate(c.updated_at_ms),
    created_at: isoDate(c.created_at_ms),
    updated_at: isoDate(c.updated_at_ms),
    created_by_id: null,
    last_updated_by_id: null,
  };
}

interface CreateBody {
  summary?: string | null;
  isolated_block_labels?: string[] | null;
  model?: string | null;
}

const conversationParams = {
  type: "object",
  properties: { conversation_id: { type: "string" } },
  required: ["conversation_id"],
} as const;

type Params = { conversation_id: string };

export const conversationsRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { storage } = services.env;

  const requireAgent = async (agentId: string | undefined | null, loc: (string | number)[]) => {
    if (agentId == null || agentId === "") throw invalidField(loc, "field required", "missing");
    if ((await storage.getAgent(agentId)) === null) throw notFound("agent", agentId);
    return agentId;
  };

  const get = async (id: string): Promise<ConversationRecord> => {
    const c = await storage.getConversation(id);
    if (c === null) throw new KelpieError("NOT_FOUND", `Conversation ${id} not found`);
    return c;
  };

  /** The agent a request for this conversation goes to, and the conversation (none for "default"). */
  const target = async (id: string, agentId: string | null | undefined, loc: (string | number)[]) => {
    if (id === DEFAULT_CONVERSATION)
      return { agentId: await requireAgent(agentId, loc), conversationId: undefined };
    const c = await get(id);
    if (agentId != null && agentId !== c.agent_id)
      throw new KelpieError("NOT_FOUND", `Conversation ${id} not found`);
    return { agentId: c.agent_id, conversationId: c.id };
  };

  app.post<{ Querystring: { agent_id?: string }; Body: CreateBody | undefined }>(
    "/",
    {
      schema: {
        querystring: { type: "object", properties: { agent_id: { type: "string" } } },
        body: {
          type: "object",
          properties: {
            summary: nullable({ type: "string" }),
            isolated_block_labels: nullable(stringArray),
            model: nullable({ type: "string" }),
          },
        },
      },
    },
    async (req) => {
      const agentId = await requireAgent(req.query.agent_id, ["query", "agent_id"]);
      const body = req.body ?? {};
      if (body.isolated_block_labels != null && body.isolated_block_labels.length > 0) {
        throw invalidField(
          ["body", "isolated_block_labels"],
          "conversation-specific blocks are not supported by this server yet: conversations share the agent's blocks",
        );
      }
      const now = services.env.clock.nowMs();
      const conversation: ConversationRecord = {
        id: newId("conv", services.env.rng),
        agent_id: agentId,
        summary: body.summary ?? null,
        model: body.model ?? null,
        in_context_message_ids: [],
        created_at_ms: now,
        updated_at_ms: now,
      };
      await storage.commit([{ op: "put_conversation", conversation, create: true }]);
      return presentConversation(conversation);
    },
  );

  app.get<{
    Querystring: {
      agent_id?: string;
      limit: number;
      after?: string;
      order: "asc" | "desc";
      summary_search?: string;
    };
  }>(
    "/",
    {
      schema: {
        querystring: {
          type: "object",
          properties: {
            ...pageQuerySchema("desc"),
            agent_id: { type: "string" },
            summary_search: { type: "string" },
          },
        },
      },
    },
    async (req) => {
      const q = req.query;
      if (q.agent_id !== undefined) await requireAgent(q.agent_id, ["query", "agent_id"]);
      const search = q.summary_search?.toLowerCase();
      const list = await storage.listConversations(q.agent_id, {
        limit: search === undefined ? q.limit : PAGE_LIMIT_MAX,
        after: q.after,
        order: q.order,
      });
      return list
        .filter((c) => search === undefined || (c.summary ?? "").toLowerCase().includes(search))
        .slice(0, q.limit)
        .map(presentConversation);
    },
  );

  app.get<{ Params: Params }>("/:conversation_id", { schema: { params: conversationParams } }, async (req) =>
    presentConversation(await get(req.params.conversation_id)),
  );

  app.patch<{ Params: Params; Body: { summary?: string | null; model?: string | null } | undefined }>(
    "/:conversation_id",
    {
      schema: {
        params: conversationParams,
        body: {
          type: "object",
          properties: { summary: nullable({ type: "string" }), model: nullable({ type: "string" }) },
        },
      },
    },
    async (req) => {
      const c = await get(req.params.conversation_id);
      const body = req.body ?? {};
      // Only the patched fields, in the agent's mailbox with its fence: a turn's context ids,
      // committed before or after, are never written back stale.
      const patch: Mutation = {
        op: "patch_conversation",
        conversation_id: c.id,
        ...(body.summary !== undefined ? { summary: body.summary } : {}),
        ...(body.model !== undefined ? { model: body.model } : {}),
        updated_at_ms: services.env.clock.nowMs(),
      };
      const next = await services.runtime.invoke(
        c.agent_id,
        async (ctx) => {
          await storage.commit([patch], { fence: ctx.fence });
          return get(c.id);
        },
        "patch_conversation",
      );
      return presentConversation(next);
    },
  );

  app.delete<{ Params: Params }>(
    "/:conversation_id",
    { schema: { params: conversationParams } },
    async (req) => {
      const c = await get(req.params.conversation_id);
      await services.runtime.invoke(
        c.agent_id,
        (ctx) => storage.commit([{ op: "delete_conversation", conversation_id: c.id }], { fence: ctx.fence }),
        "delete_conversation",
      );
      return {};
    },
  );

  app.get<{
    Params: Params;
    Querystring: { agent_id?: string; limit: number; after?: string; before?: string; order: "asc" | "desc" };
  }>(
    "/:conversation_id/messages",
    {
      schema: {
        params: conversationParams,
        querystring: {
          type: "object",
          properties: {
            ...pageQuerySchema("desc", MESSAGE_PAGE_LIMIT_DEFAULT),
            agent_id: { type: "string" },
            group_id: { type: "string" },
            include_err: { type: "boolean" },
            include_return_message_types: stringArray,
          },
        },
      },
    },
    async (req) => {
      const q = req.query;
      const { agentId, conversationId } = await target(req.params.conversation_id, q.agent_id, [
        "query",
        "agent_id",
      ]);
      // Messages of this conversation, oldest first; cursors are message ids.
      const all = (
        await storage.listMessages(agentId, { limit: CONVERSATION_MESSAGES_SCAN_MAX, order: "asc" })
      ).filter((m: MessageRecord) => (m.conversation_id ?? undefined) === conversationId);
      let ordered = q.order === "desc" ? all.reverse() : all;
      for (const [field, id] of [
        ["after", q.after],
        ["before", q.before],
      ] as const) {
        if (id === undefined) continue;
        const at = ordered.findIndex((m) => m.id === id);
        if (at < 0) throw invalidField(["query", field], `no message with id '${id}' in this conversation`);
        ordered = field === "after" ? ordered.slice(at + 1) : ordered.slice(0, at);
      }
      const page = ordered.slice(0, q.limit);
      // Newest first means newest first within one stored message too.
      return page.flatMap((m) => {
        const parts = toLettaMessages(m, LETTA_MESSAGE_OPTIONS_DEFAULT);
        return q.order === "desc" ? parts.reverse() : parts;
      });
    },
  );

  const send = async (
    id: string,
    body: SendRequestBody & { agent_id?: string | null },
    reply: FastifyReply,
    actor: string | undefined,
    streaming: boolean,
    idempotencyKey: string | undefined,
  ) => {
    const { agentId, conversationId } = await target(id, body.agent_id, ["body", "agent_id"]);
    if (streaming) return streamTurn(services, agentId, body, reply, actor, conversationId, idempotencyKey);
    const result = await services.messages.send(agentId, body, {
      streamTokens: false,
      ...(actor ? { actor } : {}),
      ...(conversationId === undefined ? {} : { conversationId }),
      ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
    });
    if (result.error && result.messages.length === 0) throw result.error;
    return lettaResponse(result);
  };

  const conversationSendBody = {
    ...sendBody,
    properties: { ...sendBody.properties, agent_id: nullable({ type: "string" }) },
  } as const;

  // Letta streams here by default (`streaming` defaults to true).
  app.post<{ Params: Params; Body: (SendRequestBody & { agent_id?: string | null }) | undefined }>(
    "/:conversation_id/messages",
    { schema: { params: conversationParams, body: conversationSendBody } },
    async (req, reply) => {
      const body = req.body ?? {};
      return send(
        req.params.conversation_id,
        body,
        reply,
        req.apiKeyId,
        body.streaming !== false,
        idempotencyKeyOf(req),
      );
    },
  );

  app.post<{ Params: Params; Querystring: { agent_id?: string } }>(
    "/:conversation_id/cancel",
    { schema: { params: conversationParams } },
    async (req) => {
      const { agentId } = await target(req.params.conversation_id, req.query.agent_id, ["query", "agent_id"]);
      const cancelled = services.messages.cancel(agentId, undefined);
      return Object.fromEntries(cancelled.map((runId) => [runId, "cancelled"]));
    },
  );
};
