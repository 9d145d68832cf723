// MCP end to end against real MCP servers started by the test: @modelcontextprotocol/server-everything
// over stdio, streamable HTTP and SSE, and a fault server of our own (errors, hangs, crashes). Stdio
// servers are allowed here (any command) and run in their sandbox, which binds the project's
// node_modules and this directory (the fault server's script) read-only.
import { type ChildProcess, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { freePort } from "../support/server-process.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const EVERYTHING = join(ROOT, "node_modules/.bin/mcp-server-everything");
const FAULT_SERVER = join(ROOT, "test/mcp/fault-server.mjs");
const MCP_STDIO = { commands: ["*"], paths: [join(ROOT, "node_modules"), join(ROOT, "test/mcp")] };

let fake: FakeLlm;
let t: TestApp;
const children: ChildProcess[] = [];

beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
  for (const c of children) c.kill("SIGKILL");
});
beforeEach(async () => {
  fake.reset();
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
    mcpStdio: MCP_STDIO,
    // The HTTP MCP servers here run on loopback, which the egress policy refuses unless allowed.
    egress: { allow: ["127.0.0.1"] },
  });
});
afterEach(async () => {
  await t.kelpie.close();
});

async function startHttpEverything(mode: "streamableHttp" | "sse"): Promise<string> {
  const port = await freePort();
  const child = spawn(EVERYTHING, [mode], { env: { ...process.env, PORT: String(port) }, stdio: "ignore" });
  children.push(child);
  const url = `http://127.0.0.1:${port}${mode === "sse" ? "/sse" : "/mcp"}`;
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      return url;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`server-everything ${mode} did not start`);
}

async function register(server_name: string, config: Record<string, unknown>) {
  const res = await t.req("POST", "/v1/mcp-servers/", { server_name, config });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}

async function toolNamed(serverId: string, name: string) {
  const tools = (await t.req("GET", `/v1/mcp-servers/${serverId}/tools`)).body;
  return tools.find((x: any) => x.name === name);
}

describe("MCP servers", () => {
  for (const transport of ["stdio", "streamable_http", "sse"] as const) {
    it(`lists and runs server-everything tools over ${transport}`, async () => {
      const config =
        transport === "stdio"
          ? { mcp_server_type: "stdio", command: EVERYTHING, args: ["stdio"] }
          : {
              mcp_server_type: transport,
              server_url: await startHttpEverything(transport === "sse" ? "sse" : "streamableHttp"),
            };
      const server = await register(`everything-${transport}`, config);
      expect(server).toMatchObject({ server_name: `everything-${transport}`, mcp_server_type: transport });
      expect(server.id).toMatch(/^mcp_server-/);
      const echo = await toolNamed(server.id, "echo");
      expect(echo).toMatchObject({ tool_type: "external_mcp" });
      expect(echo.json_schema.parameters.properties).toHaveProperty("message");
      // The id is stable: listing again gives the same rows.
      expect((await toolNamed(server.id, "echo")).id).toBe(echo.id);
      const run = await t.req("POST", `/v1/mcp-servers/${server.id}/tools/${echo.id}/run`, {
        args: { message: `hi ${transport}` },
      });
      expect(run.body).toMatchObject({ status: "success" });
      expect(run.body.func_return).toContain(`hi ${transport}`);
      expect((await t.req("GET", "/v1/tools/?limit=1000")).body.map((x: any) => x.id)).toContain(echo.id);
    });
  }

  it("an agent with an attached MCP tool sees its schema and calls it through the model", async () => {
    const server = await register("everything", {
      mcp_server_type: "stdio",
      command: EVERYTHING,
      args: ["stdio"],
    });
    const echo = await toolNamed(server.id, "echo");
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini" })).body;
    expect((await t.req("PATCH", `/v1/agents/${agent.id}/tools/attach/${echo.id}`)).status).toBe(200);
    let offered: any;
    fake.script((req: ScriptRequest) => {
      offered = req.tools.find((x) => x.name === "echo");
      const i = req.messages.map((m) => m.role).lastIndexOf("user");
      const tool = req.messages.slice(i + 1).find((m) => m.role === "tool");
      if (!tool)
        return { toolCalls: [{ name: "echo", args: { message: "via agent", request_heartbeat: true } }] };
      return { toolCalls: [{ name: "send_message", args: { message: `got ${tool.text}` } }] };
    });
    const res = await t.req("POST", `/v1/agents/${agent.id}/messages`, { input: "use echo" });
    expect(res.status).toBe(200);
    expect(offered.parameters.properties).toHaveProperty("message");
    const ret = res.body.messages.find((m: any) => m.message_type === "tool_return_message");
    expect(ret.status).toBe("success");
    expect(ret.tool_return).toContain("via agent");
  });

  it("reports tool errors, crashes, unreachable servers and bad configs clearly, and recovers", async () => {
    const server = await register("faults", {
      mcp_server_type: "stdio",
      command: process.execPath,
      args: [FAULT_SERVER],
    });
    const tools = (await t.req("GET", `/v1/mcp-servers/${server.id}/tools`)).body;
    const id = (name: string) => tools.find((x: any) => x.name === name).id;
    const run = (name: string, args = {}) =>
      t.req("POST", `/v1/mcp-servers/${server.id}/tools/${id(name)}/run`, { args });

    const failed = await run("fail", { reason: "on purpose" });
    expect(failed.body).toMatchObject({ status: "error", func_return: "failed: on purpose" });

    const before = (await run("whoami")).body.func_return;
    const crashed = await run("crash");
    expect(crashed.status).toBe(502);
    expect(crashed.body.detail).toContain("faults");
    const after = (await run("whoami")).body.func_return;
    expect(after).toMatch(/^instance [\w-]+$/);
    expect(after).not.toBe(before); // a new child: it reconnected

    const broken = await register("broken", {
      mcp_server_type: "stdio",
      command: "/nonexistent/mcp-binary",
      args: [],
    });
    const listed = await t.req("GET", `/v1/mcp-servers/${broken.id}/tools`);
    expect(listed.status).toBe(502);
    expect(listed.body.detail).toContain("broken");
    const unreachable = await register("nowhere", {
      mcp_server_type: "streamable_http",
      server_url: `http://127.0.0.1:${await freePort()}/mcp`,
    });
    expect((await t.req("GET", `/v1/mcp-servers/${unreachable.id}/tools`)).status).toBe(502);

    expect(
      (
        await t.req("POST", "/v1/mcp-servers/", {
          server_name: "x",
          config: { mcp_server_type: "carrier-pigeon" },
        })
      ).status,
    ).toBe(422);
    expect(
      (await t.req("POST", "/v1/mcp-servers/", { server_name: "x", config: { mcp_server_type: "stdio" } }))
        .body.detail[0].loc,
    ).toEqual(["body", "config", "command"]);
    expect(
      (await t.req("POST", "/v1/mcp-servers/", { server_name: "faults", config: { command: "x", args: [] } }))
        .status,
    ).toBe(409);
    expect((await t.req("GET", "/health")).status).toBe(200);
  });

  it("an MCP tool error reaches the model as a tool error, and the agent goes on", async () => {
    const server = await register("faults", {
      mcp_server_type: "stdio",
      command: process.execPath,
      args: [FAULT_SERVER],
    });
    const fail = await toolNamed(server.id, "fail");
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", tool_ids: [fail.id] }))
      .body;
    fake.script((req) => {
      const i = req.messages.map((m) => m.role).lastIndexOf("user");
      const tool = req.messages.slice(i + 1).find((m) => m.role === "tool");
      if (!tool)
        return { toolCalls: [{ name: "fail", args: { reason: "model asked", request_heartbeat: true } }] };
      return { toolCalls: [{ name: "send_message", args: { message: "handled" } }] };
    });
    const res = await t.req("POST", `/v1/agents/${agent.id}/messages`, { input: "try it" });
    const ret = res.body.messages.find((m: any) => m.message_type === "tool_return_message");
    expect(ret.status).toBe("error");
    expect(ret.tool_return).toContain("failed: model asked");
  });

  it("updates, refreshes, lists by the legacy routes, and deletes a server with its tools", async () => {
    const server = await register("everything", {
      mcp_server_type: "stdio",
      command: EVERYTHING,
      args: ["stdio"],
    });
    const echo = await toolNamed(server.id, "echo");
    const agent = (await t.req("POST", "/v1/agents/", { model: "openai/gpt-4o-mini", tool_ids: [echo.id] }))
      .body;
    const legacy = (await t.req("GET", "/v1/tools/mcp/servers")).body;
    expect(legacy.everything).toMatchObject({ type: "stdio", command: EVERYTHING });
    const legacyTools = (await t.req("GET", "/v1/tools/mcp/servers/everything/tools")).body;
    expect(legacyTools.map((x: any) => x.name)).toContain("echo");
    expect(
      (
        await t.req("PATCH", `/v1/mcp-servers/${server.id}`, {
          server_name: "renamed",
          config: { args: ["stdio"] },
        })
      ).body.server_name,
    ).toBe("renamed");
    expect((await t.req("PATCH", `/v1/mcp-servers/${server.id}/refresh`)).status).toBe(200);
    expect((await t.req("DELETE", `/v1/mcp-servers/${server.id}`)).status).toBe(204);
    expect((await t.req("GET", `/v1/mcp-servers/${server.id}`)).status).toBe(404);
    expect((await t.req("GET", `/v1/tools/${echo.id}`)).status).toBe(404);
    const left = (await t.req("GET", `/v1/agents/${agent.id}`)).body.tools.map((x: any) => x.id);
    expect(left).not.toContain(echo.id);
    expect(left.length).toBeGreaterThan(0);
  });
});
