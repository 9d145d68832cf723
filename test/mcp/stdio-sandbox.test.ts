// stdio MCP servers are host commands a client names: off unless the operator allows them
// (KELPIE_MCP_STDIO_COMMANDS), refused on every route that would register or start one, and when
// allowed they run in a bubblewrap sandbox with only the environment their config names, no host
// files beyond their own and the operator's, and no network.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { configFromEnv } from "../../src/config.ts";
import { SystemClock } from "../../src/core/clock.ts";
import { SystemRng } from "../../src/core/rng.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { McpServerRecord } from "../../src/storage/types.ts";
import { McpConnections } from "../../src/tools/mcp/connections.ts";
import { McpService } from "../../src/tools/mcp/service.ts";
import { MCP_STDIO_UID_BASE, type McpStdioPolicy } from "../../src/tools/mcp/stdio-sandbox.ts";
import { type TestApp, testApp } from "../support/app.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const FAULT_SERVER = join(ROOT, "test/mcp/fault-server.mjs");
const FAULT_BINDS = [join(ROOT, "node_modules"), join(ROOT, "test/mcp")];
/** The server's own environment: a sandboxed server must never see it. */
const CANARY_NAME = "KELPIE_TEST_CANARY_SECRET";
const CANARY_VALUE = `canary-${process.pid}-4711`;
/** Time for a command that was (wrongly) started to have left its mark. */
const SETTLE_MS = 300;

let t: TestApp | undefined;
let scratch: string;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "kelpie-mcp-stdio-"));
  process.env[CANARY_NAME] = CANARY_VALUE;
});
afterAll(() => {
  delete process.env[CANARY_NAME];
  rmSync(scratch, { recursive: true, force: true });
});
afterEach(async () => {
  await t?.kelpie.close();
  t = undefined;
});

async function app(mcpStdio?: McpStdioPolicy): Promise<TestApp> {
  t = await testApp(undefined, mcpStdio === undefined ? {} : { mcpStdio });
  return t;
}

function marker(name: string): string {
  return join(scratch, name);
}

/** A stdio config whose command, if it ever ran, would leave `path` behind. */
function touching(path: string) {
  return { mcp_server_type: "stdio", command: "sh", args: ["-c", `touch ${path}`] };
}

/** A stdio server stored directly, as one registered before the operator turned stdio off would be. */
async function storedServer(app: TestApp, command: string, args: string[]): Promise<McpServerRecord> {
  const server: McpServerRecord = {
    id: "mcp_server-00000000-0000-4000-8000-000000000001",
    server_name: "from-before",
    mcp_server_type: "stdio",
    config: { command, args, env: null },
    created_at_ms: 0,
    updated_at_ms: 0,
  };
  await app.kelpie.services.env.storage.commit([{ op: "put_mcp_server", server, create: true }]);
  return server;
}

async function runTool(app: TestApp, serverId: string, name: string, args: Record<string, unknown> = {}) {
  const tools = await app.req("GET", `/v1/mcp-servers/${serverId}/tools`);
  expect(tools.status, JSON.stringify(tools.body)).toBe(200);
  const tool = tools.body.find((x: any) => x.name === name);
  const res = await app.req("POST", `/v1/mcp-servers/${serverId}/tools/${tool.id}/run`, { args });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { status: string; func_return: string };
}

describe("stdio MCP servers, off by default", () => {
  it("refuses to register one (403 saying how to enable it) on every route, and its command never runs", async () => {
    const a = await app();
    const created = await a.req("POST", "/v1/mcp-servers/", {
      server_name: "pwn",
      config: touching(marker("created")),
    });
    expect(created.status).toBe(403);
    expect(created.body.code).toBe("MCP_STDIO_FORBIDDEN");
    expect(created.body.detail).toMatch(/disabled.*KELPIE_MCP_STDIO_COMMANDS/);

    // Letta's older route, by name.
    const legacy = await a.req("PUT", "/v1/tools/mcp/servers", {
      server_name: "pwn",
      type: "stdio",
      command: "sh",
      args: ["-c", `touch ${marker("legacy")}`],
    });
    expect(legacy.status).toBe(403);

    // A remote server turned into a stdio one.
    const remote = await a.req("POST", "/v1/mcp-servers/", {
      server_name: "remote",
      config: { mcp_server_type: "streamable_http", server_url: "https://mcp.example.com/mcp" },
    });
    expect(remote.status).toBe(200);
    const patched = await a.req("PATCH", `/v1/mcp-servers/${remote.body.id}`, {
      config: touching(marker("patched")),
    });
    expect(patched.status).toBe(403);
    expect((await a.req("GET", `/v1/mcp-servers/${remote.body.id}`)).body.mcp_server_type).toBe(
      "streamable_http",
    );
    expect((await a.req("GET", "/v1/mcp-servers/")).body.map((s: any) => s.server_name)).toEqual(["remote"]);

    await new Promise((r) => setTimeout(r, SETTLE_MS));
    for (const name of ["created", "legacy", "patched"]) expect(existsSync(marker(name))).toBe(false);
  });

  it("does not start a stdio server stored before: listing, running and the legacy routes answer 403", async () => {
    const a = await app();
    const server = await storedServer(a, "sh", ["-c", `touch ${marker("stored")}`]);
    const listed = await a.req("GET", `/v1/mcp-servers/${server.id}/tools`);
    expect(listed.status).toBe(403);
    expect(listed.body.detail).toMatch(/KELPIE_MCP_STDIO_COMMANDS/);
    expect((await a.req("GET", "/v1/tools/mcp/servers/from-before/tools")).status).toBe(403);
    expect(
      (await a.req("POST", "/v1/tools/mcp/servers/from-before/tools/echo/execute", { args: {} })).status,
    ).toBe(403);
    // It can still be seen and deleted.
    expect((await a.req("GET", `/v1/mcp-servers/${server.id}`)).status).toBe(200);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    expect(existsSync(marker("stored"))).toBe(false);
    expect((await a.req("DELETE", `/v1/mcp-servers/${server.id}`)).status).toBe(204);
  });
});

describe("stdio MCP servers on an allow-list", () => {
  it("refuses a command not on the list, naming the list, and runs one on it", async () => {
    const a = await app({ commands: [process.execPath], paths: FAULT_BINDS });
    const refused = await a.req("POST", "/v1/mcp-servers/", {
      server_name: "pwn",
      config: touching(marker("unlisted")),
    });
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toBe(
      `command 'sh' is not in this server's KELPIE_MCP_STDIO_COMMANDS allow-list (${process.execPath})`,
    );
    const stored = await storedServer(a, "sh", ["-c", `touch ${marker("unlisted-stored")}`]);
    expect((await a.req("GET", `/v1/mcp-servers/${stored.id}/tools`)).status).toBe(403);

    const allowed = await a.req("POST", "/v1/mcp-servers/", {
      server_name: "faults",
      config: { mcp_server_type: "stdio", command: process.execPath, args: [FAULT_SERVER] },
    });
    expect(allowed.status).toBe(200);
    expect((await runTool(a, allowed.body.id, "whoami")).func_return).toMatch(/^instance /);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    expect(existsSync(marker("unlisted"))).toBe(false);
    expect(existsSync(marker("unlisted-stored"))).toBe(false);
  });

  it("runs an allowed server sandboxed: its config's env only, no host files beyond its binds, no network", async () => {
    const a = await app({ commands: ["*"], paths: FAULT_BINDS });
    // A file of the server's, as its data directory would hold: outside everything bound.
    const dataDir = mkdtempSync(join(scratch, "data-"));
    const secretFile = join(dataDir, "kelpie.db");
    writeFileSync(secretFile, "agents and their keys");
    const server = (
      await a.req("POST", "/v1/mcp-servers/", {
        server_name: "faults",
        config: {
          mcp_server_type: "stdio",
          command: process.execPath,
          args: [FAULT_SERVER],
          env: { MCP_GREETING: "hello" },
        },
      })
    ).body;

    const env = JSON.parse((await runTool(a, server.id, "env")).func_return) as Record<string, string>;
    expect(env.MCP_GREETING).toBe("hello");
    expect(env[CANARY_NAME]).toBeUndefined();
    expect(JSON.stringify(env)).not.toContain(CANARY_VALUE);
    expect(Object.keys(env).sort()).toEqual(["HOME", "MCP_GREETING", "PATH", "PWD", "TMPDIR"]);

    const secret = await runTool(a, server.id, "read", { path: secretFile });
    expect(secret.status).toBe("error");
    expect(secret.func_return).toContain("ENOENT");
    expect((await runTool(a, server.id, "read", { path: "/etc/passwd" })).status).toBe("error");
    // The control: what is bound is readable.
    const own = await runTool(a, server.id, "read", { path: FAULT_SERVER });
    expect(own.status).toBe("success");
    expect(own.func_return).toContain("kelpie-fault-server");

    const listener: Server = createServer((socket) => socket.end());
    await new Promise<void>((r) => listener.listen(0, "127.0.0.1", () => r()));
    const port = (listener.address() as { port: number }).port;
    try {
      const connected = await runTool(a, server.id, "connect", { host: "127.0.0.1", port });
      expect(connected.status).toBe("error");
      expect(connected.func_return).toMatch(/connect failed/);
    } finally {
      listener.close();
    }
  });

  it("shares the host's network only when the operator says so (KELPIE_MCP_STDIO_NETWORK=1), still without the server's env or files", async () => {
    expect(configFromEnv({ KELPIE_MCP_STDIO_COMMANDS: "node" }).mcpStdio.network).toBe(false);
    expect(
      configFromEnv({ KELPIE_MCP_STDIO_COMMANDS: "node", KELPIE_MCP_STDIO_NETWORK: "1" }).mcpStdio.network,
    ).toBe(true);
    const a = await app({ commands: ["*"], paths: FAULT_BINDS, network: true });
    const server = (
      await a.req("POST", "/v1/mcp-servers/", {
        server_name: "faults",
        config: { mcp_server_type: "stdio", command: process.execPath, args: [FAULT_SERVER] },
      })
    ).body;
    const listener: Server = createServer((socket) => socket.end());
    await new Promise<void>((r) => listener.listen(0, "127.0.0.1", () => r()));
    const port = (listener.address() as { port: number }).port;
    try {
      const connected = await runTool(a, server.id, "connect", { host: "127.0.0.1", port });
      expect(connected.func_return).toBe("connected");
    } finally {
      listener.close();
    }
    const env = JSON.parse((await runTool(a, server.id, "env")).func_return) as Record<string, string>;
    expect(JSON.stringify(env)).not.toContain(CANARY_VALUE);
    expect((await runTool(a, server.id, "read", { path: "/etc/passwd" })).status).toBe("error");
  });

  it("runs it without privileges: no nested namespaces, not as root, and nothing it started outlives it", async () => {
    const a = await app({ commands: ["*"], paths: FAULT_BINDS });
    const server = (
      await a.req("POST", "/v1/mcp-servers/", {
        server_name: "faults",
        config: { mcp_server_type: "stdio", command: process.execPath, args: [FAULT_SERVER] },
      })
    ).body;
    const nested = JSON.parse(
      (await runTool(a, server.id, "run", { command: "unshare", args: ["-U", "-r", "true"] })).func_return,
    );
    expect(nested.error).toBeNull(); // it ran, and the kernel said no
    expect(nested.status).not.toBe(0);
    if (process.getuid?.() === 0) {
      // As root, the sandbox runs as a uid of its own (inside its user namespace it is that uid too).
      expect(Number((await runTool(a, server.id, "uid")).func_return)).toBeGreaterThanOrEqual(
        MCP_STDIO_UID_BASE,
      );
    }
    const seconds = 4000 + (process.pid % 1000);
    await runTool(a, server.id, "linger", { seconds });
    const lingering = () => spawnSync("pgrep", ["-f", `^sleep ${seconds}$`]).status === 0;
    expect(lingering()).toBe(true);
    expect((await a.req("DELETE", `/v1/mcp-servers/${server.id}`)).status).toBe(204);
    for (let i = 0; i < 50 && lingering(); i++) await new Promise((r) => setTimeout(r, 100));
    expect(lingering()).toBe(false);
  });

  it("runs at most its live bound at once: the least recently used idle server is closed, busy ones never", async () => {
    const clock = new SystemClock();
    const env = { clock, rng: new SystemRng(), storage: new MemoryStorage() };
    const connections = new McpConnections(clock, fetch, { commands: ["*"], paths: FAULT_BINDS }, 2);
    const mcp = new McpService(env, connections);
    try {
      const servers = [];
      for (const name of ["a", "b", "c"]) {
        servers.push(
          await mcp.create({
            server_name: name,
            config: { mcp_server_type: "stdio", command: process.execPath, args: [FAULT_SERVER] },
          }),
        );
      }
      const [a, b, c] = servers as [McpServerRecord, McpServerRecord, McpServerRecord];
      const whoami = async (s: McpServerRecord) => (await mcp.runTool(s.id, "whoami", {})).func_return;
      const aFirst = await whoami(a);
      const bFirst = await whoami(b);
      await whoami(c); // a, the least recently used, makes room
      expect(await whoami(b)).toBe(bFirst);
      expect(await whoami(a)).not.toBe(aFirst); // started again (c made room this time)

      // Both live servers busy: a third cannot start, and says why.
      const hanging = [a, b].map((s) => mcp.runTool(s.id, "hang", {}).catch(() => "ended"));
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      await expect(mcp.runTool(c.id, "whoami", {})).rejects.toThrow(/all 2 stdio MCP servers .* are busy/);
      await connections.closeAll();
      expect(await Promise.all(hanging)).toEqual(["ended", "ended"]);
    } finally {
      await connections.closeAll();
    }
  });

  it("refuses a relative command path and bad env names with 422 naming the field", async () => {
    const a = await app({ commands: ["*"], paths: [] });
    const relative = await a.req("POST", "/v1/mcp-servers/", {
      server_name: "x",
      config: { mcp_server_type: "stdio", command: "./server", args: [] },
    });
    expect(relative.status).toBe(422);
    expect(relative.body.detail[0].loc).toEqual(["body", "config", "command"]);
    const badEnv = await a.req("POST", "/v1/mcp-servers/", {
      server_name: "x",
      config: { mcp_server_type: "stdio", command: "sh", args: [], env: { "A=B": "c" } },
    });
    expect(badEnv.status).toBe(422);
    expect(badEnv.body.detail[0].loc).toEqual(["body", "config", "env", "A=B"]);
  });
});

describe("the operator's settings", () => {
  it("reads the allow-list and extra paths from the environment; off when unset", () => {
    expect(configFromEnv({}).mcpStdio).toEqual({ commands: [], paths: [], network: false });
    expect(
      configFromEnv({
        KELPIE_MCP_STDIO_COMMANDS: "node, /usr/bin/python3 ,",
        KELPIE_MCP_STDIO_PATHS: "/opt/mcp,/srv/tools",
      }).mcpStdio,
    ).toEqual({
      commands: ["node", "/usr/bin/python3"],
      paths: ["/opt/mcp", "/srv/tools"],
      network: false,
    });
    expect(() => configFromEnv({ KELPIE_MCP_STDIO_PATHS: "tools" })).toThrow(/absolute paths, got 'tools'/);
  });
});
