// Live connections to MCP servers through the official SDK (stdio, SSE, streamable HTTP). One
// client per server, made on first use; a failed or closed connection is dropped, and the next use
// connects again — at once after the first failure, then with exponential backoff on the injected
// clock. Stdio children run sandboxed (stdio-sandbox.ts), only when the operator's allow-list names
// their command (checked here too, before every start: a server stored before the list changed
// does not start), and are closed (killed) with the connection.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { Clock } from "../../core/clock.ts";
import { KelpieError } from "../../core/errors.ts";
import { EgressRefusedError, egressRefusalIn } from "../../net/egress.ts";
import type { McpServerRecord } from "../../storage/types.ts";
import {
  MCP_STDIO_OFF,
  type McpStdioPolicy,
  sandboxedStdio,
  stdioRefusal,
  stdioUidRelease,
} from "./stdio-sandbox.ts";
import { SandboxedStdioTransport } from "./stdio-transport.ts";

export const MCP_CONNECT_TIMEOUT_MS = 30_000;
export const MCP_CALL_TIMEOUT_MS = 60_000;
export const MCP_RECONNECT_BACKOFF_MS_BASE = 250;
export const MCP_RECONNECT_BACKOFF_MS_MAX = 30_000;
export const MCP_CLIENT_NAME = "kelpie";
/** Stdio servers running at once (each a sandboxed process); past it the least recently used idle one is closed. */
export const MCP_STDIO_LIVE_MAX = 16;

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

/** A stdio server with a live (or opening) connection: what choosing one to close looks at. */
interface StdioUsage {
  lastUsedMs: number;
  inFlightCount: number;
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

/** A transport, and for a stdio server the tail of what it printed on stderr so far. */
interface Opened {
  transport: Transport;
  stderrTail?: () => string;
}

/** A stdio server's transport: sandboxed, with only its config's env; its uid is freed when it exits. */
function stdioTransport(config: Record<string, unknown>, policy: McpStdioPolicy): Opened {
  const sandboxed = sandboxedStdio(policy, {
    command: String(config.command),
    args: Array.isArray(config.args) ? config.args.map(String) : [],
    env: stringRecord(config.env),
  });
  const transport = new SandboxedStdioTransport(sandboxed, () => stdioUidRelease(sandboxed.uid));
  return { transport, stderrTail: () => transport.stderrTail() };
}

function transportFor(server: McpServerRecord, policy: McpStdioPolicy, httpFetch: typeof fetch): Opened {
  const config = server.config;
  if (server.mcp_server_type === "stdio") return stdioTransport(config, policy);
  const url = new URL(String(config.server_url));
  // The egress-policy fetch: a server_url on loopback or a private network is refused (src/net).
  const options = { requestInit: { headers: headersOf(config) }, fetch: httpFetch };
  return {
    transport:
      server.mcp_server_type === "sse"
        ? new SSEClientTransport(url, options)
        : new StreamableHTTPClientTransport(url, options),
  };
}

/** The SSE transport reports a failed fetch as text only: keep what the egress policy refused. */
function recordingRefusals(httpFetch: typeof fetch): {
  fetch: typeof fetch;
  refusal: () => EgressRefusedError | undefined;
} {
  let refusal: EgressRefusedError | undefined;
  return {
    fetch: async (input, init) => {
      try {
        return await httpFetch(input, init);
      } catch (err) {
        refusal ??= egressRefusalIn(err);
        throw err;
      }
    },
    refusal: () => refusal,
  };
}

function unavailable(server: McpServerRecord, err: unknown, stderrTail = ""): KelpieError {
  // A URL the egress policy refuses is the request's fault (403), not a server that is down.
  const refusal = egressRefusalIn(err);
  if (refusal !== undefined)
    return new EgressRefusedError(`MCP server '${server.server_name}': ${refusal.message}`);
  const message = err instanceof Error ? err.message : String(err);
  const reason = stderrTail === "" ? message : `${message}; its stderr ends: ${stderrTail}`;
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
  private readonly stdioUsage = new Map<string, StdioUsage>();

  /** `httpFetch` carries SSE and streamable HTTP traffic: the egress-policy fetch (src/net). */
  constructor(
    private readonly clock: Clock,
    private readonly httpFetch: typeof fetch,
    readonly stdio: McpStdioPolicy = MCP_STDIO_OFF,
    private readonly stdioLiveMax = MCP_STDIO_LIVE_MAX,
  ) {}

  /** Why a stdio server with this command may not be registered or started here, or null. */
  stdioRefusal(command: string): KelpieError | null {
    return stdioRefusal(this.stdio, command);
  }

  private connection(server: McpServerRecord): Promise<Connection> {
    let pending = this.live.get(server.id);
    if (pending !== undefined) return pending;
    if (server.mcp_server_type === "stdio") {
      const refusal = this.stdioRefusal(String(server.config.command));
      if (refusal !== null) return Promise.reject(refusal);
    }
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
    if (server.mcp_server_type === "stdio") {
      const full = this.stdioMakeRoom(server);
      if (full !== null) return Promise.reject(full);
      this.stdioUsage.set(server.id, { lastUsedMs: this.clock.monotonicMs(), inFlightCount: 0 });
    }
    pending = this.open(server);
    this.live.set(server.id, pending);
    pending.catch(() => {});
    return pending;
  }

  /** Closes the least recently used idle stdio server when MCP_STDIO_LIVE_MAX run; an error if all are busy. */
  private stdioMakeRoom(server: McpServerRecord): KelpieError | null {
    if (this.stdioUsage.size < this.stdioLiveMax) return null;
    let idleId: string | undefined;
    let idleLastUsedMs = Number.POSITIVE_INFINITY;
    for (const [id, usage] of this.stdioUsage) {
      if (usage.inFlightCount === 0 && usage.lastUsedMs < idleLastUsedMs) {
        idleId = id;
        idleLastUsedMs = usage.lastUsedMs;
      }
    }
    if (idleId === undefined) {
      return new KelpieError(
        "MCP_UNAVAILABLE",
        `MCP server '${server.server_name}' cannot start: all ${this.stdioLiveMax} stdio MCP servers this server runs at once are busy; try again`,
      );
    }
    void this.close(idleId);
    return null;
  }

  private async open(server: McpServerRecord): Promise<Connection> {
    const client = new Client({ name: MCP_CLIENT_NAME, version: "0.1.0" });
    let opened: Opened | undefined;
    const refusals = recordingRefusals(this.httpFetch);
    try {
      opened = transportFor(server, this.stdio, refusals.fetch);
      await client.connect(opened.transport, { timeout: MCP_CONNECT_TIMEOUT_MS });
    } catch (err) {
      this.live.delete(server.id);
      this.stdioUsage.delete(server.id);
      this.noteFailure(server.id);
      await client.close().catch(() => {});
      throw unavailable(server, refusals.refusal() ?? err, opened?.stderrTail?.());
    }
    const transport = opened.transport;
    // A closed transport (a crashed child, a dropped stream) ends this connection; the next use reconnects.
    client.onclose = () => {
      if (this.live.get(server.id) !== current) return;
      this.live.delete(server.id);
      this.stdioUsage.delete(server.id);
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
    const pending = this.connection(server);
    // Counted from now: a stdio server being connected to or called is never the one closed for room.
    const usage = this.stdioUsage.get(server.id);
    if (usage !== undefined) usage.inFlightCount++;
    try {
      const { client } = await pending;
      try {
        return await fn(client);
      } catch (err) {
        // Tool-level errors come back as results; anything thrown here is the connection or protocol.
        await this.close(server.id);
        this.noteFailure(server.id);
        throw unavailable(server, err);
      }
    } finally {
      if (usage !== undefined) {
        usage.inFlightCount--;
        usage.lastUsedMs = this.clock.monotonicMs();
      }
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
    this.stdioUsage.delete(serverId);
    if (pending === undefined) return;
    const connection = await pending.catch(() => undefined);
    await connection?.client.close().catch(() => {});
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.live.keys()].map((id) => this.close(id)));
  }
}
