// /v1/agents/{id}/messages: the conversation (list), sending messages (JSON, SSE, async runs),
// cancelling runs, the context window and resetting the conversation.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import { LETTA_MESSAGE_OPTIONS_DEFAULT, toLettaMessages } from "../agent/letta-messages.ts";
import { MessageService, type SendRequestBody } from "../agent/message-service.ts";
import type { TurnResult } from "../agent/turn.ts";
import { MESSAGE_PAGE_LIMIT_DEFAULT } from "../core/constants.ts";
import { notFound } from "../core/errors.ts";
import type { Services } from "./app.ts";
import { idempotencyKeyOf } from "./idempotency.ts";
import { presentAgent, presentRun } from "./present.ts";
import { type PageQueryString, pageOf, pageQuerySchema, stringArray } from "./schemas.ts";
import { SseStream } from "./sse.ts";

interface MessageListQueryString extends PageQueryString {
  use_assistant_message: boolean;
  assistant_message_tool_name: string;
  assistant_message_tool_kwarg: string;
}

type AgentParams = { agent_id: string };

export const sendBody = {
  type: "object",
  properties: {
    messages: { anyOf: [{ type: "array", items: { type: "object" } }, { type: "null" }] },
    max_steps: { type: "integer" },
    use_assistant_message: { type: "boolean" },
    assistant_message_tool_name: { type: "string" },
    assistant_message_tool_kwarg: { type: "string" },
    streaming: { type: "boolean" },
    stream_tokens: { type: "boolean" },
    include_pings: { type: "boolean" },
    background: { type: "boolean" },
  },
} as const;

export function lettaResponse(result: TurnResult): Record<string, unknown> {
  return {
    messages: result.messages,
    stop_reason: { message_type: "stop_reason", stop_reason: result.stopReason },
    usage: { message_type: "usage_statistics", ...result.usage, run_ids: [result.runId] },
  };
}

/** Streams a turn as SSE: each committed message, or token chunks, then stop reason, usage, [DONE]. */
export async function streamTurn(
  services: Services,
  agentId: string,
  body: SendRequestBody,
  reply: FastifyReply,
  actor: string | undefined,
  conversationId?: string,
  idempotencyKey?: string,
): Promise<void> {
  const { messages } = services;
  // Validate (and 404 an unknown agent) before the stream opens, so errors stay plain JSON.
  MessageService.maxSteps(body);
  messages.parseInput(agentId, body, "run-validate");
  if ((await services.env.storage.getAgent(agentId)) === null) throw notFound("agent", agentId);
  // The stream opens once the turn is admitted (or its first event comes): a busy agent is still
  // a plain JSON 429.
  let opened: SseStream | null = null;
  const open = () => {
    opened ??= new SseStream(reply);
    return opened;
  };
  const streamTokens = body.stream_tokens === true;
  const result = await messages.send(agentId, body, {
    streamTokens,
    onAdmitted: open,
    onEvent: (event) => open().send(event.message),
    ...(actor ? { actor } : {}),
    ...(conversationId === undefined ? {} : { conversationId }),
    ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
  });
  const sse = open();
  if (result.error) {
    sse.send({
      message_type: "error_message",
      run_id: result.runId,
      error_type: result.error.code.toLowerCase(),
      message: result.error.message,
      detail: result.error.message,
    });
  }
  const response = lettaResponse(result);
  sse.send(response.stop_reason);
  sse.send(response.usage);
  sse.end();
}

export const messagesRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { storage } = services.env;
  const messages = services.messages;

  app.get<{ Params: AgentParams; Querystring: MessageListQueryString }>(
    "/:agent_id/messages",
    {
      schema: {
        querystring: {
          type: "object",
          properties: {
            ...pageQuerySchema("desc", MESSAGE_PAGE_LIMIT_DEFAULT),
            use_assistant_message: { type: "boolean", default: true },
            assistant_message_tool_name: { type: "string", default: "send_message" },
            assistant_message_tool_kwarg: { type: "string", default: "message" },
            group_id: { type: "string" },
            conversation_id: { type: "string" },
            include_err: { type: "boolean" },
          },
        },
      },
    },
    async (req) => {
      const { agent_id } = req.params;
      if ((await storage.getAgent(agent_id)) === null) throw notFound("agent", agent_id);
      const q = req.query;
      const records = await storage.listMessages(agent_id, pageOf(q));
      const options = {
        ...LETTA_MESSAGE_OPTIONS_DEFAULT,
        useAssistantMessage: q.use_assistant_message,
        assistantMessageToolName: q.assistant_message_tool_name,
        assistantMessageToolKwarg: q.assistant_message_tool_kwarg,
      };
      const lettaMessages = records.flatMap((m) => toLettaMessages(m, options));
      // Newest first means newest first within one stored message too.
      return q.order === "desc" ? lettaMessages.reverse() : lettaMessages;
    },
  );

  const stream = (agentId: string, body: SendRequestBody, reply: FastifyReply, req: FastifyRequest) =>
    streamTurn(services, agentId, body, reply, req.apiKeyId, undefined, idempotencyKeyOf(req));

  app.post<{ Params: AgentParams; Body: SendRequestBody | undefined }>(
    "/:agent_id/messages",
    { schema: { body: sendBody } },
    async (req, reply) => {
      const body = req.body ?? {};
      if (body.streaming === true) return stream(req.params.agent_id, body, reply, req);
      const idempotencyKey = idempotencyKeyOf(req);
      const result = await messages.send(req.params.agent_id, body, {
        streamTokens: false,
        ...(req.apiKeyId ? { actor: req.apiKeyId } : {}),
        ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
      });
      // Nothing was committed: the request failed as a whole. Otherwise report how the turn ended.
      if (result.error && result.messages.length === 0) throw result.error;
      return lettaResponse(result);
    },
  );

  app.post<{ Params: AgentParams; Body: SendRequestBody | undefined }>(
    "/:agent_id/messages/stream",
    { schema: { body: sendBody } },
    async (req, reply) => stream(req.params.agent_id, req.body ?? {}, reply, req),
  );

  app.post<{ Params: AgentParams; Body: SendRequestBody | undefined }>(
    "/:agent_id/messages/async",
    { schema: { body: sendBody } },
    async (req) =>
      presentRun(
        await messages.sendAsync(req.params.agent_id, req.body ?? {}, req.apiKeyId, idempotencyKeyOf(req)),
      ),
  );

  app.post<{ Params: AgentParams; Body: { run_ids?: string[] | null } | undefined }>(
    "/:agent_id/messages/cancel",
    {
      schema: {
        body: { type: "object", properties: { run_ids: { anyOf: [stringArray, { type: "null" }] } } },
      },
    },
    async (req) => {
      const { agent_id } = req.params;
      if ((await storage.getAgent(agent_id)) === null) throw notFound("agent", agent_id);
      const cancelled = messages.cancel(agent_id, req.body?.run_ids ?? undefined);
      return Object.fromEntries(cancelled.map((id) => [id, "cancelled"]));
    },
  );

  app.patch<{ Params: AgentParams; Body: { add_default_initial_messages?: boolean } | undefined }>(
    "/:agent_id/reset-messages",
    async (req) => {
      const { agent_id } = req.params;
      await services.runtime.invoke(
        agent_id,
        async (ctx) => {
          const agent = await storage.getAgent(agent_id);
          if (agent === null) throw notFound("agent", agent_id);
          const { block_ids: _b, tool_ids: _t, ...stored } = agent;
          await storage.commit(
            [
              { op: "delete_agent_messages", agent_id, except_ids: [] },
              {
                op: "put_agent",
                create: false,
                agent: { ...stored, message_ids: [], updated_at_ms: services.env.clock.nowMs() },
              },
            ],
            { fence: ctx.fence },
          );
        },
        "reset_messages",
      );
      return presentAgent(await services.agents.get(agent_id));
    },
  );

  app.get<{ Params: AgentParams }>("/:agent_id/context", async (req) =>
    services.context.overview(req.params.agent_id),
  );
};
