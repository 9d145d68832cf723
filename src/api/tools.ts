// /v1/tools: the tool catalogue (built-ins now; custom tools arrive with the sandbox).
import type { FastifyPluginAsync } from "fastify";
import type { Services } from "./app.ts";
import { presentTool } from "./present.ts";
import { type PageQueryString, pageOf, pageQuerySchema, stringArray } from "./schemas.ts";

interface ToolListQueryString extends PageQueryString {
  name?: string;
  names?: string[];
  tool_ids?: string[];
  search?: string;
  tool_types?: string[];
  exclude_tool_types?: string[];
}

export const toolsRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { tools } = services;

  app.get<{ Querystring: ToolListQueryString }>(
    "/",
    {
      schema: {
        querystring: {
          type: "object",
          properties: {
            ...pageQuerySchema("desc"),
            name: { type: "string" },
            names: stringArray,
            tool_ids: stringArray,
            search: { type: "string" },
            tool_types: stringArray,
            exclude_tool_types: stringArray,
            return_only_letta_tools: { type: "boolean" },
          },
        },
      },
    },
    async (req) => {
      const q = req.query;
      const list = await tools.list({
        ...pageOf(q),
        name: q.name,
        names: q.names,
        tool_ids: q.tool_ids,
        search: q.search,
        tool_types: q.tool_types,
        exclude_tool_types: q.exclude_tool_types,
      });
      return list.map(presentTool);
    },
  );

  app.get("/count", async () => tools.count());

  app.get<{ Params: { tool_id: string } }>("/:tool_id", async (req) =>
    presentTool(await tools.get(req.params.tool_id)),
  );
};
