// The older /v1/tools/mcp/servers routes that Letta clients still use: servers addressed by name.
import type { FastifyPluginAsync } from "fastify";
import { KelpieError } from "../core/errors.ts";
import type { McpServerRecord } from "../storage/types.ts";
import type { Services } from "./app.ts";
import { presentMcpConfig, presentTool } from "./present.ts";

/** Letta's StdioServerConfig / SSEServerConfig / StreamableHTTPServerConfig shape, secrets masked. */
function legacyConfig(server: McpServerRecord): Record<string, unknown> {
  return {
    server_name: server.server_name,
    type: server.mcp_server_type,
    ...presentMcpConfig(server.config),
  };
}

type NameParams = { mcp_server_name: string };

export const mcpLegacyRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const mcp = services.mcp;

  app.get("/servers", async () =>
    Object.fromEntries((await mcp.list()).map((s) => [s.server_name, legacyConfig(s)])),
  );

  app.put<{ Body: Record<string, unknown> | undefined }>("/servers", async (req) => {
    const body = req.body ?? {};
    const { server_name, ...config } = body;
    await mcp.create({
      server_name,
      config: { mcp_server_type: config.type ?? config.mcp_server_type, ...config },
    });
    return (await mcp.list()).map(legacyConfig);
  });

  app.get<{ Params: NameParams }>("/servers/:mcp_server_name/tools", async (req) => {
    const server = await mcp.byName(req.params.mcp_server_name);
    const tools = await mcp.syncTools(server.id);
    return tools.map((t) => ({
      name: String(t.metadata.mcp_tool_name ?? t.name),
      description: t.description,
      inputSchema: (t.json_schema as { parameters?: unknown } | null)?.parameters ?? {},
    }));
  });

  app.post<{ Params: NameParams & { mcp_tool_name: string } }>(
    "/servers/:mcp_server_name/:mcp_tool_name",
    async (req) => {
      const server = await mcp.byName(req.params.mcp_server_name);
      const tools = await mcp.syncTools(server.id);
      const tool = tools.find((t) => t.metadata.mcp_tool_name === req.params.mcp_tool_name);
      if (tool === undefined) {
        throw new KelpieError(
          "TOOL_NOT_FOUND",
          `MCP server '${server.server_name}' has no tool '${req.params.mcp_tool_name}'`,
        );
      }
      return presentTool(tool);
    },
  );

  app.post<{
    Params: NameParams & { tool_name: string };
    Body: { args?: Record<string, unknown> } | undefined;
  }>("/servers/:mcp_server_name/tools/:tool_name/execute", async (req) => {
    const server = await mcp.byName(req.params.mcp_server_name);
    return mcp.runTool(server.id, req.params.tool_name, req.body?.args ?? {});
  });

  app.post<{ Params: NameParams }>("/servers/:mcp_server_name/resync", async (req) => {
    const server = await mcp.byName(req.params.mcp_server_name);
    return (await mcp.syncTools(server.id)).map(presentTool);
  });

  app.delete<{ Params: NameParams }>("/servers/:mcp_server_name", async (req) => {
    const server = await mcp.byName(req.params.mcp_server_name);
    await mcp.delete(server.id);
    return (await mcp.list()).map(legacyConfig);
  });
};
