// Live connections to MCP servers through the official SDK (stdio, SSE, streamable HTTP). One
// client per server, made on first use; a failed or closed connection is dropped, and the next use
// connects again — at once after the first failure, then with exponential backoff on the injected
// clock. Stdio children are closed (killed) with the connection.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { Clock } from "../../core/clock.ts";
import { KelpieError } from "../../core/errors.ts";
import type { McpServerRecord } from "../../storage/types.ts";

export const MCP_CONNECT_TIMEOUT_MS = 30_000;
export const MCP_CALL_TIMEOUT_MS = 60_000;
export const MCP_RECONNECT_BACKOFF_MS_BASE = 250;
export const MCP_RECONNECT_BACKOFF_MS_MAX = 30_000;
export const MCP_CLIENT_NAME = "kelpie";

export interface McpToolInfo {
  name: string;
  description: string;
  inputSchema: Record<string, unknown>;
}

export interface McpCallResult {
  isError: boolean;
  text: string;
}

interface Connection {
  client: Client;
  transport: Transport;
}

interface Health {
  failuresCount: number;
  retryAtMs: number;
}

function stringRecord(value: unknown): Record<string, string> {
  if (value === null || typeof value !== "object") return {};
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).filter(
      (e): e is [string, string] => typeof e[1] === "string",
    ),
  );
}

/** The HTTP headers a remote server's config asks for (auth header/token and custom headers). */
export function headersOf(config: Record<string, unknown>): Record<string, string> {
  const headers = stringRecord(config.custom_headers);
  if (typeof config.auth_token === "string" && config.auth_token.length > 0) {
    const name =
      typeof config.auth_header === "string" && config.auth_header.length > 0
        ? config.auth_header
        : "Authorization";
    const token = config.auth_token;
    headers[name] =
      name.toLowerCase() === "authorization" && !/^\w+ /.test(token) ? `Bearer ${token}` : token;
  }
  return headers;
}

function transportFor(server: McpServerRecord): Transport {
  const config = server.config;
  if (server.mcp_server_type === "stdio") {
    return new StdioClientTransport({
      command: String(config.command),
      args: Array.isArray(config.args) ? config.args.map(String) : [],
      env: { ...stringRecord(process.env), ...stringRecord(config.env) },
      stderr: "ignore",
    });
  }
  const url = new URL(String(config.server_url));
  const requestInit = { headers: headersOf(config) };
  return server.mcp_server_type === "sse"
    ? new SSEClientTransport(url, { requestInit })
    : new StreamableHTTPClientTransport(url, { requestInit });
}

function unavailable(server: McpServerRecord, err: unknown): KelpieError {
  const reason = err instanceof Error ? err.message : String(err);
  return new KelpieError(
    "MCP_UNAVAILABLE",
    `MCP server '${server.server_name}' (${server.mcp_server_type}): ${reason}`,
    {
      cause: err,
    },
  );
}

export class McpConnections {
  private readonly live = new Map<string, Promise<Connection>>();
  private readonly health = new Map<string, Health>();

  constructor(private readonly clock: Clock) {}

  private connection(server: McpServerRecord): Promise<Connection> {
    let pending = this.live.get(server.id);
    if (pending !== undefined) return pending;
    const health = this.health.get(server.id);
    if (health !== undefined && this.clock.monotonicMs() < health.retryAtMs) {
      const waitMs = Math.ceil(health.retryAtMs - this.clock.monotonicMs());
      return Promise.reject(
        new KelpieError(
          "MCP_UNAVAILABLE",
          `MCP server '${server.server_name}' failed ${health.failuresCount} times in a row; next attempt in ${waitMs} ms`,
        ),
      );
    }
    pending = this.open(server);
    this.live.set(server.id, pending);
    pending.catch(() => {});
    return pending;
  }

  private async open(server: McpServerRecord): Promise<Connection> {
    const client = new Client({ name: MCP_CLIENT_NAME, version: "0.1.0" });
    let transport: Transport;
    try {
      transport = transportFor(server);
      await client.connect(transport, { timeout: MCP_CONNECT_TIMEOUT_MS });
    } catch (err) {
      this.live.delete(server.id);
      this.noteFailure(server.id);
      await client.close().catch(() => {});
      throw unavailable(server, err);
    }
    // A closed transport (a crashed child, a dropped stream) ends this connection; the next use reconnects.
    client.onclose = () => {
      if (this.live.get(server.id) === current) this.live.delete(server.id);
    };
    const connection = { client, transport };
    const current = Promise.resolve(connection);
    this.live.set(server.id, current);
    this.health.delete(server.id);
    return connection;
  }

  private noteFailure(serverId: string): void {
    const failuresCount = (this.health.get(serverId)?.failuresCount ?? 0) + 1;
    // The first failure allows an immediate retry; later ones back off exponentially.
    const backoffMs =
      failuresCount <= 1
        ? 0
        : Math.min(MCP_RECONNECT_BACKOFF_MS_MAX, MCP_RECONNECT_BACKOFF_MS_BASE * 2 ** (failuresCount - 2));
    this.health.set(serverId, { failuresCount, retryAtMs: this.clock.monotonicMs() + backoffMs });
  }

  /** Runs `fn` on the server's client; a transport failure drops the connection and is reported clearly. */
  private async use<T>(server: McpServerRecord, fn: (client: Client) => Promise<T>): Promise<T> {
    const { client } = await this.connection(server);
    try {
      return await fn(client);
    } catch (err) {
      // Tool-level errors come back as results; anything thrown here is the connection or protocol.
      await this.close(server.id);
      this.noteFailure(server.id);
      throw unavailable(server, err);
    }
  }

  async listTools(server: McpServerRecord): Promise<McpToolInfo[]> {
    return this.use(server, async (client) => {
      const tools: McpToolInfo[] = [];
      let cursor: string | undefined;
      do {
        const page = await client.listTools(cursor === undefined ? {} : { cursor }, {
          timeout: MCP_CALL_TIMEOUT_MS,
        });
        for (const t of page.tools) {
          tools.push({
            name: t.name,
            description: t.description ?? "",
            inputSchema: t.inputSchema as Record<string, unknown>,
          });
        }
        cursor = page.nextCursor;
      } while (cursor !== undefined);
      return tools;
    });
  }

  async callTool(
    server: McpServerRecord,
    name: string,
    args: Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<McpCallResult> {
    return this.use(server, async (client) => {
      const result = await client.callTool({ name, arguments: args }, undefined, {
        timeout: MCP_CALL_TIMEOUT_MS,
        ...(signal ? { signal } : {}),
      });
      const parts = Array.isArray(result.content) ? result.content : [];
      const text = parts
        .map((p: { type: string; text?: string }) => (p.type === "text" ? (p.text ?? "") : JSON.stringify(p)))
        .join("\n");
      return { isError: result.isError === true, text };
    });
  }

  async close(serverId: string): Promise<void> {
    const pending = this.live.get(serverId);
    this.live.delete(serverId);
    if (pending === undefined) return;
    const connection = await pending.catch(() => undefined);
    await connection?.client.close().catch(() => {});
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.live.keys()].map((id) => this.close(id)));
  }
}
