// Secrets are write-only over the API: an agent's tool environment variables (and `secrets`), an
// MCP server's auth token, custom header values and stdio env values come back masked from every
// read, and a write that sends the mask back keeps the stored secret. Exports name them, empty.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SECRET_MASK } from "../../src/core/secrets.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { mcpToolId, mcpToolRecord } from "../../src/tools/mcp/service.ts";
import { type TestApp, testApp } from "../support/app.ts";

const TOOL_SECRET = "s3cr3t-value-99";
const AGENT_SECRET = "agent-secret-key-123";
const AUTH_TOKEN = "tok-secret-4711";
const HEADER_SECRET = "hdr-secret-0815";
const ENV_SECRET = "env-secret-2342";
const ALL_SECRETS = [TOOL_SECRET, AGENT_SECRET, AUTH_TOKEN, HEADER_SECRET, ENV_SECRET];

/** Returns the token the tool sees in its environment. */
const PY_TOKEN = `import os

def token(name: str) -> str:
    """Reads a variable.

    Args:
        name: The variable.

    Returns:
        str: Its value.
    """
    return os.environ.get(name, "unset")
`;

let t: TestApp;
/** Every answer the test saw: none may carry a secret. */
const seen: string[] = [];

async function req(method: string, url: string, body?: unknown) {
  const res = await t.req(method, url, body);
  seen.push(JSON.stringify(res.body));
  return res;
}

beforeEach(async () => {
  seen.length = 0;
  t = await testApp(new MemoryStorage(), { mcpStdio: { commands: ["*"], paths: [] } });
});
afterEach(async () => {
  for (const answer of seen) for (const secret of ALL_SECRETS) expect(answer).not.toContain(secret);
  await t.kelpie.close();
});

describe("agent tool environment variables", () => {
  it("are masked on create, get, list and update; a masked value sent back keeps the secret", async () => {
    const tool = (await req("POST", "/v1/tools/", { source_code: PY_TOKEN, source_type: "python" })).body;
    const created = await req("POST", "/v1/agents/", {
      name: "sec",
      model: "openai/gpt-4o-mini",
      tool_ids: [tool.id],
      tool_exec_environment_variables: { SECRET_TOKEN: TOOL_SECRET, EMPTY: "" },
      secrets: { AGENT_KEY: AGENT_SECRET },
    });
    expect(created.status).toBe(200);
    const id = created.body.id;
    expect(created.body.tool_exec_environment_variables).toEqual([
      { key: "SECRET_TOKEN", value: SECRET_MASK, description: null, agent_id: id },
      { key: "EMPTY", value: "", description: null, agent_id: id },
    ]);
    expect(created.body.secrets).toEqual([
      { key: "AGENT_KEY", value: SECRET_MASK, description: null, agent_id: id },
    ]);
    const got = (await req("GET", `/v1/agents/${id}`)).body;
    expect(got.tool_exec_environment_variables[0].value).toBe(SECRET_MASK);
    await req("GET", "/v1/agents/");

    // A client that edits what it read sends the masks back, in AgentState's list form.
    const patched = await req("PATCH", `/v1/agents/${id}`, {
      tool_exec_environment_variables: got.tool_exec_environment_variables,
      secrets: { AGENT_KEY: SECRET_MASK, ADDED: "plain" },
    });
    expect(patched.status).toBe(200);
    const stored = (await t.kelpie.services.env.storage.getAgent(id))!.extra;
    expect(stored.tool_exec_environment_variables).toEqual([
      { key: "SECRET_TOKEN", value: TOOL_SECRET },
      { key: "EMPTY", value: "" },
    ]);
    expect(stored.secrets).toEqual([
      { key: "AGENT_KEY", value: AGENT_SECRET },
      { key: "ADDED", value: "plain" },
    ]);
    // The tool still gets the real values (Letta's object form reaches it too).
    const run = (name: string) => req("POST", `/v1/agents/${id}/tools/token/run`, { args: { name } });
    const direct = await t.req("POST", `/v1/agents/${id}/tools/token/run`, {
      args: { name: "SECRET_TOKEN" },
    });
    expect(direct.body.func_return).toBe(TOOL_SECRET);
    expect((await run("ADDED")).body.func_return).toBe("plain");

    // The mask where no secret is stored is refused, naming the field.
    const unknown = await req("PATCH", `/v1/agents/${id}`, { secrets: { NEW_KEY: SECRET_MASK } });
    expect(unknown.status).toBe(422);
    expect(unknown.body.detail[0].loc).toEqual(["body", "secrets", "NEW_KEY"]);
    const onCreate = await req("POST", "/v1/agents/", {
      model: "openai/gpt-4o-mini",
      secrets: { KEY: SECRET_MASK },
    });
    expect(onCreate.status).toBe(422);
    const notStrings = await req("POST", "/v1/agents/", {
      model: "openai/gpt-4o-mini",
      tool_exec_environment_variables: { KEY: 7 },
    });
    expect(notStrings.status).toBe(422);
    expect(notStrings.body.detail[0].loc).toEqual(["body", "tool_exec_environment_variables", "KEY"]);

    // An export names the variables and leaves their values empty.
    const exported = (await req("GET", `/v1/agents/${id}/export`)).body;
    expect(exported.agents[0].tool_exec_environment_variables).toEqual({ SECRET_TOKEN: "", EMPTY: "" });
    expect(exported.agents[0].secrets).toEqual({ AGENT_KEY: "", ADDED: "" });
  });
});

describe("MCP server credentials", () => {
  it("mask the auth token and header values on every route; masks sent back keep them", async () => {
    const created = await req("POST", "/v1/mcp-servers/", {
      server_name: "remote",
      config: {
        mcp_server_type: "streamable_http",
        server_url: "https://mcp.example.com/mcp",
        auth_header: "Authorization",
        auth_token: AUTH_TOKEN,
        custom_headers: { "X-Api-Key": HEADER_SECRET },
      },
    });
    expect(created.status).toBe(200);
    expect(created.body).toMatchObject({
      auth_header: "Authorization",
      auth_token: SECRET_MASK,
      custom_headers: { "X-Api-Key": SECRET_MASK },
    });
    const id = created.body.id;
    const got = (await req("GET", `/v1/mcp-servers/${id}`)).body;
    expect(got.auth_token).toBe(SECRET_MASK);
    expect((await req("GET", "/v1/mcp-servers/")).body[0].custom_headers).toEqual({
      "X-Api-Key": SECRET_MASK,
    });
    expect((await req("GET", "/v1/tools/mcp/servers")).body.remote.auth_token).toBe(SECRET_MASK);

    // The config as read, sent back with one change: the secrets stay.
    const { id: _id, server_name: _name, ...config } = got;
    const patched = await req("PATCH", `/v1/mcp-servers/${id}`, {
      config: { ...config, server_url: "https://mcp.example.com/v2/mcp" },
    });
    expect(patched.status).toBe(200);
    expect(patched.body.auth_token).toBe(SECRET_MASK);
    const stored = (await t.kelpie.services.env.storage.getMcpServer(id))!.config;
    expect(stored).toMatchObject({
      server_url: "https://mcp.example.com/v2/mcp",
      auth_token: AUTH_TOKEN,
      custom_headers: { "X-Api-Key": HEADER_SECRET },
    });
    // A new value replaces the secret; the mask of a header never stored is refused.
    await req("PATCH", `/v1/mcp-servers/${id}`, { config: { auth_token: "rotated" } });
    expect((await t.kelpie.services.env.storage.getMcpServer(id))!.config.auth_token).toBe("rotated");
    const unknown = await req("PATCH", `/v1/mcp-servers/${id}`, {
      config: { custom_headers: { "X-Other": SECRET_MASK } },
    });
    expect(unknown.status).toBe(422);
    expect(unknown.body.detail[0].loc).toEqual(["body", "config", "custom_headers", "X-Other"]);
    const onCreate = await req("POST", "/v1/mcp-servers/", {
      server_name: "copy",
      config: { mcp_server_type: "sse", server_url: "https://mcp.example.com/sse", auth_token: SECRET_MASK },
    });
    expect(onCreate.status).toBe(422);
    expect(onCreate.body.detail[0].loc).toEqual(["body", "config", "auth_token"]);
  });

  it("mask a stdio server's env values; an export of an agent using it leaves them empty", async () => {
    const created = await req("POST", "/v1/mcp-servers/", {
      server_name: "local",
      config: { mcp_server_type: "stdio", command: "true", args: [], env: { TOKEN: ENV_SECRET, MODE: "x" } },
    });
    expect(created.status).toBe(200);
    expect(created.body.env).toEqual({ TOKEN: SECRET_MASK, MODE: SECRET_MASK });
    expect((await req("GET", "/v1/tools/mcp/servers")).body.local.env).toEqual({
      TOKEN: SECRET_MASK,
      MODE: SECRET_MASK,
    });
    const id = created.body.id;
    await req("PATCH", `/v1/mcp-servers/${id}`, { config: { env: { TOKEN: SECRET_MASK, MODE: "y" } } });
    const stored = (await t.kelpie.services.env.storage.getMcpServer(id))!;
    expect(stored.config.env).toEqual({ TOKEN: ENV_SECRET, MODE: "y" });

    // An agent with one of its tools (the row a listing would make), exported.
    const tool = mcpToolRecord(
      stored,
      { name: "echo", description: "Echoes", inputSchema: { type: "object", properties: {} } },
      mcpToolId(id, "echo"),
      "echo",
      undefined,
      0,
    );
    await t.kelpie.services.env.storage.commit([{ op: "put_tool", tool, create: true }]);
    const agent = (await req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", tool_ids: [tool.id] }))
      .body;
    const exported = (await req("GET", `/v1/agents/${agent.id}/export`)).body;
    expect(exported.mcp_servers).toEqual([
      expect.objectContaining({
        server_type: "stdio",
        stdio_config: { command: "true", args: [], env: { TOKEN: "", MODE: "" } },
      }),
    ]);
  });
});
