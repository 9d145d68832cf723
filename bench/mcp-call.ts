// MCP tool-call overhead per transport: `echo` on server-everything through Kelpie's MCP service
// (connection manager, tool row lookup, result mapping), against the bare SDK client calling the
// same server (`limit_ms`), over stdio and streamable HTTP.
import { spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SystemClock } from "../src/core/clock.ts";
import { SystemRng } from "../src/core/rng.ts";
import { Egress } from "../src/net/egress-fetch.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { McpConnections } from "../src/tools/mcp/connections.ts";
import { McpService } from "../src/tools/mcp/service.ts";
import { nowMs, percentileMs, round3 } from "./stats.ts";

const ROOT = resolve(import.meta.dirname, "..");
const EVERYTHING = join(ROOT, "node_modules/.bin/mcp-server-everything");
const CALLS_COUNT = 500;
const WARMUP_COUNT = 50;

async function time(fn: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < WARMUP_COUNT + CALLS_COUNT; i++) {
    const t0 = nowMs();
    await fn();
    if (i >= WARMUP_COUNT) samples.push(nowMs() - t0);
  }
  return samples;
}

async function httpServer(): Promise<{ url: string; stop(): void }> {
  const port = 30_000 + Math.floor(Math.random() * 20_000);
  const child = spawn(EVERYTHING, ["streamableHttp"], {
    env: { ...process.env, PORT: String(port) },
    stdio: "ignore",
  });
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return { url: `http://127.0.0.1:${port}/mcp`, stop: () => child.kill("SIGKILL") };
}

export async function run(): Promise<Record<string, unknown>> {
  const clock = new SystemClock();
  const env = { clock, rng: new SystemRng(), storage: new MemoryStorage() };
  // Kelpie's stdio server runs in its sandbox; the bare client's does not (the sandbox's cost is in the ratio).
  // The HTTP server runs on loopback: allowed, as an operator would, so the policy's cost is measured.
  const egress = new Egress({ allow: ["127.0.0.1"] });
  const mcp = new McpService(
    env,
    new McpConnections(clock, egress.fetch, { commands: [EVERYTHING], paths: [] }),
  );
  const http = await httpServer();
  const figures: Record<string, unknown> = {};
  for (const [label, config] of [
    ["stdio", { mcp_server_type: "stdio", command: EVERYTHING, args: ["stdio"] }],
    ["http", { mcp_server_type: "streamable_http", server_url: http.url }],
  ] as const) {
    const server = await mcp.create({ server_name: label, config });
    await mcp.syncTools(server.id);
    const ours = await time(() => mcp.runTool(server.id, "echo", { message: "x" }));
    const bare = new Client({ name: "bench", version: "1" });
    await bare.connect(
      label === "stdio"
        ? new StdioClientTransport({ command: EVERYTHING, args: ["stdio"], stderr: "ignore" })
        : new StreamableHTTPClientTransport(new URL(http.url)),
    );
    const limit = await time(() => bare.callTool({ name: "echo", arguments: { message: "x" } }));
    await bare.close();
    figures[`${label}_p50_ms`] = percentileMs(ours, 50);
    figures[`${label}_p99_ms`] = percentileMs(ours, 99);
    figures[`${label}_limit_ms`] = percentileMs(limit, 50);
    figures[`${label}_ratio`] = round3(percentileMs(ours, 50) / percentileMs(limit, 50));
  }
  await mcp.connections.closeAll();
  await egress.close();
  http.stop();
  console.log(`${CALLS_COUNT} echo calls per transport on server-everything`);
  return figures;
}
