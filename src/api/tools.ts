// /v1/tools: the tool catalogue — Letta built-ins, custom tools (source run in a sandbox), MCP tools.
import type { FastifyPluginAsync } from "fastify";
import { KelpieError, notFound } from "../core/errors.ts";
import type { ToolInput } from "../tools/custom/service.ts";
import type { SandboxResult } from "../tools/sandbox/limits.ts";
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

  const custom = services.customTools;
  app.post<{ Body: ToolInput | undefined }>("/", async (req) =>
    presentTool(await custom.create(req.body ?? {})),
  );
  app.put<{ Body: ToolInput | undefined }>("/", async (req) =>
    presentTool(await custom.upsert(req.body ?? {})),
  );
  app.patch<{ Params: { tool_id: string }; Body: ToolInput | undefined }>("/:tool_id", async (req) =>
    presentTool(await custom.update(req.params.tool_id, req.body ?? {})),
  );
  app.delete<{ Params: { tool_id: string } }>("/:tool_id", async (req) => {
    await custom.delete(req.params.tool_id);
    return {};
  });
  app.post("/add-base-tools", async () => {
    await tools.ensureBuiltins();
    return (
      await tools.list({ limit: 1_000, order: "asc", exclude_tool_types: ["custom", "external_mcp"] })
    ).map(presentTool);
  });
  app.post<{ Body: (ToolInput & { args?: unknown; env_vars?: unknown }) | undefined }>("/run", async (req) =>
    executionResult(await custom.runSource(req.body ?? {})),
  );

  app.get<{ Params: { tool_id: string } }>("/:tool_id", async (req) =>
    presentTool(await tools.get(req.params.tool_id)),
  );
};

/** Letta's ToolExecutionResult, with the sandbox level that ran the tool. */
export function executionResult(result: SandboxResult): Record<string, unknown> {
  return {
    status: result.ok ? "success" : "error",
    func_return: result.value,
    stdout: result.stdout,
    stderr: result.stderr,
    agent_state: null,
    sandbox_config_fingerprint: null,
    sandbox: result.level,
  };
}

/** POST /v1/agents/{agent_id}/tools/{tool_name}/run: one of the agent's tools, with its env vars. */
export const agentToolRunRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  app.post<{
    Params: { agent_id: string; tool_name: string };
    Body: { args?: Record<string, unknown> } | undefined;
  }>("/:agent_id/tools/:tool_name/run", async (req) => {
    const { tools } = await services.agents.get(req.params.agent_id);
    const tool = tools.find((t) => t.name === req.params.tool_name);
    if (tool === undefined) throw notFound("tool", req.params.tool_name);
    const args = req.body?.args ?? {};
    if (tool.tool_type === "custom") {
      return executionResult(await services.customTools.runTool(tool, args, req.params.agent_id));
    }
    if (tool.tool_type === "external_mcp") {
      return services.mcp.runTool(
        String(tool.metadata.mcp_server_id),
        String(tool.metadata.mcp_tool_name ?? tool.name),
        args,
      );
    }
    throw new KelpieError(
      "BAD_REQUEST",
      `tool '${tool.name}' is a built-in that runs inside the agent's turn`,
    );
  });
};
