// /v1/agents/{id}/messages: the agent's conversation in Letta's message shapes.
import type { FastifyPluginAsync } from "fastify";
import { LETTA_MESSAGE_OPTIONS_DEFAULT, toLettaMessages } from "../agent/letta-messages.ts";
import { MESSAGE_PAGE_LIMIT_DEFAULT } from "../core/constants.ts";
import { notFound } from "../core/errors.ts";
import type { Services } from "./app.ts";
import { type PageQueryString, pageOf, pageQuerySchema } from "./schemas.ts";

interface MessageListQueryString extends PageQueryString {
  use_assistant_message: boolean;
  assistant_message_tool_name: string;
  assistant_message_tool_kwarg: string;
}

export const messagesRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { storage } = services.env;

  app.get<{ Params: { agent_id: string }; Querystring: MessageListQueryString }>(
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
      return records.flatMap((m) => toLettaMessages(m, options));
    },
  );
};
