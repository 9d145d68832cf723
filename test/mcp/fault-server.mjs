#!/usr/bin/env node
// A small MCP server over stdio for fault tests: a tool that errors, one that hangs, one that
// kills its own process mid-call, and one that answers with the process id (to see reconnects).
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

const server = new McpServer({ name: "kelpie-fault-server", version: "1.0.0" });
server.tool("whoami", "Returns this process's id.", {}, async () => ({
  content: [{ type: "text", text: `pid ${process.pid}` }],
}));
server.tool("fail", "Always reports an error.", { reason: z.string() }, async ({ reason }) => ({
  isError: true,
  content: [{ type: "text", text: `failed: ${reason}` }],
}));
server.tool("hang", "Never answers.", {}, () => new Promise(() => {}));
server.tool("crash", "Exits the process mid-call.", {}, async () => {
  process.exit(3);
});
await server.connect(new StdioServerTransport());
