// /v1/mcp-servers: MCP servers (stdio, SSE, streamable HTTP) and their tools. Reads show secrets
// masked; stdio servers only when the operator allows them (403 otherwise).
import type { FastifyPluginAsync } from "fastify";
import { isKelpieError } from "../core/errors.ts";
import type { McpServerInput } from "../tools/mcp/service.ts";
import type { Services } from "./app.ts";
import { presentMcpServer, presentTool } from "./present.ts";
import { SseStream } from "./sse.ts";

type ServerParams = { mcp_server_id: string };

export const mcpServersRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const mcp = services.mcp;

  app.post<{ Body: McpServerInput | undefined }>("/", async (req) =>
    presentMcpServer(await mcp.create(req.body ?? {})),
  );
  app.get("/", async () => (await mcp.list()).map(presentMcpServer));
  app.get<{ Params: ServerParams }>("/:mcp_server_id", async (req) =>
    presentMcpServer(await mcp.get(req.params.mcp_server_id)),
  );
  app.patch<{ Params: ServerParams; Body: McpServerInput | undefined }>("/:mcp_server_id", async (req) =>
    presentMcpServer(await mcp.update(req.params.mcp_server_id, req.body ?? {})),
  );
  app.delete<{ Params: ServerParams }>("/:mcp_server_id", async (req, reply) => {
    await mcp.delete(req.params.mcp_server_id);
    return reply.status(204).send();
  });

  app.get<{ Params: ServerParams }>("/:mcp_server_id/tools", async (req) =>
    (await mcp.syncTools(req.params.mcp_server_id)).map(presentTool),
  );
  app.get<{ Params: ServerParams & { tool_id: string } }>("/:mcp_server_id/tools/:tool_id", async (req) =>
    presentTool(await mcp.tool(req.params.mcp_server_id, req.params.tool_id)),
  );
  app.post<{
    Params: ServerParams & { tool_id: string };
    Body: { args?: Record<string, unknown> } | undefined;
  }>(
    "/:mcp_server_id/tools/:tool_id/run",
    {
      schema: { body: { type: "object", properties: { args: { type: "object" } } } },
    },
    async (req) => {
      const tool = await mcp.tool(req.params.mcp_server_id, req.params.tool_id);
      const name = String(tool.metadata.mcp_tool_name ?? tool.name);
      return mcp.runTool(req.params.mcp_server_id, name, req.body?.args ?? {});
    },
  );
  app.patch<{ Params: ServerParams }>("/:mcp_server_id/refresh", async (req) => {
    const tools = await mcp.syncTools(req.params.mcp_server_id);
    return { status: "refreshed", tools: tools.map(presentTool) };
  });

  // Connection progress as SSE: an attempt, then success with the tools, or the error.
  app.get<{ Params: ServerParams }>("/connect/:mcp_server_id", async (req, reply) => {
    const server = await mcp.get(req.params.mcp_server_id);
    const sse = new SseStream(reply);
    sse.send({ event: "connection_attempt", server_name: server.server_name });
    try {
      const tools = await mcp.syncTools(server.id);
      sse.send({ event: "success", server_name: server.server_name, tools: tools.map(presentTool) });
    } catch (err) {
      sse.send({
        event: "error",
        message: isKelpieError(err) || err instanceof Error ? err.message : String(err),
      });
    }
    sse.end();
  });
};
