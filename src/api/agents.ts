// /v1/agents: agents, their core memory blocks and their tools.
import type { FastifyPluginAsync } from "fastify";
import type { CreateAgentInput, UpdateAgentInput } from "../agent/agents.ts";
import type { BlockFields } from "../memory/blocks.ts";
import type { Services } from "./app.ts";
import { presentAgent, presentBlock, presentTool } from "./present.ts";
import {
  blockFieldsSchema,
  type CursorQueryString,
  cursorQuerySchema,
  jsonObject,
  nullable,
  type PageQueryString,
  pageOf,
  pageOfList,
  pageQuerySchema,
  stringArray,
} from "./schemas.ts";

const agentFields = {
  name: { type: "string", minLength: 1 },
  description: nullable({ type: "string" }),
  system: nullable({ type: "string" }),
  tags: nullable(stringArray),
  metadata: nullable(jsonObject),
  model: nullable({ type: "string" }),
  llm_config: nullable(jsonObject),
  embedding: nullable({ type: "string" }),
  embedding_config: nullable(jsonObject),
  tool_rules: nullable({ type: "array", items: jsonObject }),
  tool_ids: nullable(stringArray),
  block_ids: nullable(stringArray),
  context_window_limit: nullable({ type: "integer", minimum: 1 }),
  max_tokens: nullable({ type: "integer", minimum: 1 }),
} as const;

const createAgentBody = {
  type: "object",
  properties: {
    ...agentFields,
    agent_type: { type: "string" },
    memory_blocks: nullable({
      type: "array",
      items: { type: "object", properties: blockFieldsSchema, required: ["label", "value"] },
    }),
    tools: nullable(stringArray),
    include_base_tools: { type: "boolean" },
    include_multi_agent_tools: { type: "boolean" },
  },
} as const;

const updateAgentBody = {
  type: "object",
  properties: { ...agentFields, message_ids: nullable(stringArray) },
} as const;

interface AgentListQueryString extends PageQueryString {
  name?: string;
  tags?: string[];
  match_all_tags?: boolean;
  query_text?: string;
}

type AgentParams = { agent_id: string };
type AgentTargetParams = { agent_id: string; target_id: string };

/** Removes nulls: a field sent as null means "not given" for Letta's optional create fields. */
function withoutNulls<T extends Record<string, unknown>>(body: T): T {
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null)) as T;
}

export const agentsRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { agents } = services;

  app.post<{ Body: CreateAgentInput | undefined }>("/", { schema: { body: createAgentBody } }, async (req) =>
    presentAgent(await agents.create(withoutNulls(req.body ?? {}))),
  );

  app.get<{ Querystring: AgentListQueryString }>(
    "/",
    {
      schema: {
        querystring: {
          type: "object",
          properties: {
            ...pageQuerySchema("desc"),
            name: { type: "string" },
            tags: stringArray,
            match_all_tags: { type: "boolean", default: false },
            query_text: { type: "string" },
          },
        },
      },
    },
    async (req) => {
      const q = req.query;
      const records = await services.env.storage.listAgents({
        ...pageOf(q),
        name: q.name,
        tags: q.tags,
        match_all_tags: q.match_all_tags,
        query_text: q.query_text,
      });
      return (await agents.views(records)).map(presentAgent);
    },
  );

  app.get("/count", async () => services.env.storage.countAgents());

  app.get<{ Params: AgentParams }>("/:agent_id", async (req) =>
    presentAgent(await agents.get(req.params.agent_id)),
  );

  app.patch<{ Params: AgentParams; Body: UpdateAgentInput | undefined }>(
    "/:agent_id",
    { schema: { body: updateAgentBody } },
    async (req) => presentAgent(await agents.update(req.params.agent_id, req.body ?? {})),
  );

  app.delete<{ Params: AgentParams }>("/:agent_id", async (req) => {
    await agents.delete(req.params.agent_id, services.archival);
    return {};
  });

  // Core memory
  app.get<{ Params: AgentParams }>("/:agent_id/core-memory", async (req) => {
    const { blocks, agent } = await agents.get(req.params.agent_id);
    const presented = blocks.map(presentBlock);
    return {
      agent_type: agent.agent_type,
      git_enabled: false,
      blocks: presented,
      file_blocks: [],
      prompt_template: "",
    };
  });

  app.get<{ Params: AgentParams; Querystring: CursorQueryString }>(
    "/:agent_id/core-memory/blocks",
    { schema: { querystring: cursorQuerySchema } },
    async (req) => pageOfList((await agents.get(req.params.agent_id)).blocks, req.query).map(presentBlock),
  );

  app.get<{ Params: AgentParams & { block_label: string } }>(
    "/:agent_id/core-memory/blocks/:block_label",
    async (req) => presentBlock(await agents.blockByLabel(req.params.agent_id, req.params.block_label)),
  );

  app.patch<{ Params: AgentParams & { block_label: string }; Body: BlockFields | undefined }>(
    "/:agent_id/core-memory/blocks/:block_label",
    { schema: { body: { type: "object", properties: blockFieldsSchema } } },
    async (req) =>
      presentBlock(
        await agents.updateBlockByLabel(req.params.agent_id, req.params.block_label, req.body ?? {}),
      ),
  );

  for (const action of ["attach", "detach"] as const) {
    app.patch<{ Params: AgentTargetParams }>(
      `/:agent_id/core-memory/blocks/${action}/:target_id`,
      async (req) =>
        presentAgent(await agents.relation(req.params.agent_id, "block", action, req.params.target_id)),
    );
    app.patch<{ Params: AgentTargetParams }>(`/:agent_id/tools/${action}/:target_id`, async (req) =>
      presentAgent(await agents.relation(req.params.agent_id, "tool", action, req.params.target_id)),
    );
  }

  app.get<{ Params: AgentParams; Querystring: CursorQueryString }>(
    "/:agent_id/tools",
    { schema: { querystring: cursorQuerySchema } },
    async (req) => pageOfList((await agents.get(req.params.agent_id)).tools, req.query).map(presentTool),
  );
};
