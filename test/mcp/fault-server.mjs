#!/usr/bin/env node
// A small MCP server over stdio for fault tests: a tool that errors, one that hangs, one that
// kills its own process mid-call, and one that answers with an id of its own (to see reconnects).
// And probes of its sandbox: its environment and uid, reading a file, opening a TCP connection,
// running a command, leaving a process behind.
import { spawn, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

const server = new McpServer({ name: "kelpie-fault-server", version: "1.0.0" });
// Not the pid: in its sandbox's PID namespace every instance has the same one.
const INSTANCE = randomUUID();
server.tool("whoami", "Returns this process's instance id.", {}, async () => ({
  content: [{ type: "text", text: `instance ${INSTANCE}` }],
}));
server.tool("fail", "Always reports an error.", { reason: z.string() }, async ({ reason }) => ({
  isError: true,
  content: [{ type: "text", text: `failed: ${reason}` }],
}));
server.tool("hang", "Never answers.", {}, () => new Promise(() => {}));
server.tool("crash", "Exits the process mid-call.", {}, async () => {
  process.exit(3);
});
server.tool("env", "Returns this process's environment as JSON.", {}, async () => ({
  content: [{ type: "text", text: JSON.stringify(process.env) }],
}));
server.tool("read", "Returns a file's text.", { path: z.string() }, async ({ path }) => {
  try {
    return { content: [{ type: "text", text: readFileSync(path, "utf8") }] };
  } catch (err) {
    return { isError: true, content: [{ type: "text", text: `read failed: ${err.message}` }] };
  }
});
server.tool(
  "connect",
  "Opens a TCP connection to a host and port.",
  { host: z.string(), port: z.number() },
  ({ host, port }) =>
    new Promise((resolve) => {
      const socket = connect({ host, port });
      const done = (text, isError) => {
        socket.destroy();
        resolve({ isError, content: [{ type: "text", text }] });
      };
      socket.once("connect", () => done("connected", false));
      socket.once("error", (err) => done(`connect failed: ${err.message}`, true));
      socket.setTimeout(2_000, () => done("connect failed: timeout", true));
    }),
);
server.tool("uid", "Returns this process's uid.", {}, async () => ({
  content: [{ type: "text", text: String(process.getuid()) }],
}));
server.tool(
  "run",
  "Runs a command; returns its exit status and output.",
  { command: z.string(), args: z.array(z.string()) },
  async ({ command, args }) => {
    const r = spawnSync(command, args, { encoding: "utf8", timeout: 5_000 });
    return {
      content: [
        {
          type: "text",
          text: JSON.stringify({ status: r.status, error: r.error?.message ?? null, stderr: r.stderr }),
        },
      ],
    };
  },
);
server.tool(
  "linger",
  "Starts a detached process that outlives this call.",
  { seconds: z.number() },
  async ({ seconds }) => {
    const child = spawn("sleep", [String(seconds)], { detached: true, stdio: "ignore" });
    child.unref();
    return { content: [{ type: "text", text: "started" }] };
  },
);
await server.connect(new StdioServerTransport());
