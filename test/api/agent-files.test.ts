// Letta agent files through the real routes: every real .af file imports, exports and re-imports
// to an equivalent agent that answers through a fake LLM over HTTP; ids are new and consistent;
// options, unsupported parts (warnings), MCP servers, archives and malformed files (422s).
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AGENT_FILE_BYTES_MAX } from "../../src/api/agent-files.ts";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { MessageRecord } from "../../src/storage/types.ts";
import { mcpToolId } from "../../src/tools/mcp/service.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";

const AF_DIR = resolve(import.meta.dirname, "../../../shared/letta/agent-files");
const AF_FILES = readdirSync(AF_DIR).filter((f) => f.endsWith(".af"));
const UUID_ID = /^[a-z_]+-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let fake: FakeLlm;
let t: TestApp;

beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
const llm = () =>
  llmConfigFromEnv({
    OPENAI_API_KEY: "sk-test",
    OPENAI_BASE_URL: `${fake.url}/v1`,
    ANTHROPIC_API_KEY: "sk-ant-test",
    ANTHROPIC_BASE_URL: fake.url,
  });

beforeEach(async () => {
  fake.reset();
  t = await testApp(new MemoryStorage(), { llm: llm() });
});
afterEach(async () => {
  await t.kelpie.close();
});

/** POSTs an agent file as multipart/form-data, as the Letta SDKs and curl -F do. */
async function upload(file: string | object, fields: Record<string, string> = {}, query = "") {
  const form = new FormData();
  form.append("file", new Blob([typeof file === "string" ? file : JSON.stringify(file)]), "agent.af");
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  const encoded = new Response(form);
  const res = await t.kelpie.app.inject({
    method: "POST",
    url: `/v1/agents/import${query}`,
    payload: Buffer.from(await encoded.arrayBuffer()),
    headers: { "content-type": encoded.headers.get("content-type")! },
  });
  return { status: res.statusCode, body: JSON.parse(res.body) };
}

async function importOk(file: string | object, fields: Record<string, string> = {}) {
  const res = await upload(file, fields);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  expect(res.body.agent_ids).toHaveLength(1);
  return {
    id: res.body.agent_ids[0] as string,
    warnings: res.body.warnings as { loc: unknown[]; msg: string }[],
  };
}

async function exportOf(id: string) {
  const res = await t.req("GET", `/v1/agents/${id}/export`);
  expect(res.status).toBe(200);
  return res.body;
}

async function agentOf(id: string) {
  const res = await t.req("GET", `/v1/agents/${id}`);
  expect(res.status).toBe(200);
  return res.body;
}

async function inContext(id: string): Promise<MessageRecord[]> {
  const agent = await agentOf(id);
  return t.kelpie.services.env.storage.getMessages(agent.message_ids);
}

/** What makes two agents the same agent, whatever their ids. */
function shapeOf(agent: any, messages: MessageRecord[]) {
  return {
    system: agent.system,
    agent_type: agent.agent_type,
    llm_model: agent.llm_config.model,
    blocks: agent.blocks
      .map((b: any) => ({
        label: b.label,
        value: b.value,
        limit: b.limit,
        description: b.description,
        read_only: b.read_only,
      }))
      .sort((a: any, b: any) => a.label.localeCompare(b.label)),
    tools: agent.tools
      .map((x: any) => ({ name: x.name, type: x.tool_type, source: x.source_code, schema: x.json_schema }))
      .sort((a: any, b: any) => a.name.localeCompare(b.name)),
    tool_rules: agent.tool_rules,
    messages: messages.map((m) => ({
      role: m.role,
      content: m.content,
      name: m.name,
      tool_calls: m.tool_calls,
      tool_call_id: m.tool_call_id,
      created_at_ms: m.created_at_ms,
    })),
  };
}

const toolCallIds = (messages: MessageRecord[]) =>
  new Set(
    messages.flatMap((m) => [
      ...(m.tool_calls ?? []).map((c) => c.id),
      ...(m.tool_call_id ? [m.tool_call_id] : []),
    ]),
  );

describe("the real Letta agent files", () => {
  for (const name of AF_FILES) {
    it(`${name} imports, exports and re-imports to an equivalent agent that answers`, async () => {
      const text = readFileSync(resolve(AF_DIR, name), "utf8");
      const original = JSON.parse(text);
      const legacy = original.agents === undefined;
      const fileAgent = legacy ? original : original.agents[0];
      const fileBlocks = legacy ? original.core_memory : original.blocks;
      const fileMessages: any[] = fileAgent.messages;
      const fileInContext: any[] = legacy
        ? fileAgent.in_context_message_indices.map((i: number) => fileMessages[i])
        : fileAgent.in_context_message_ids.map((id: string) => fileMessages.find((m) => m.id === id));

      const first = await importOk(text);
      const a = await agentOf(first.id);
      // Kept from the file: blocks, tools (Letta's built-ins by name, the rest as custom tools with their source), rules.
      expect(a.name).toBe(`${fileAgent.name}_copy`);
      expect(a.blocks.map((b: any) => [b.label, b.value]).sort()).toEqual(
        fileBlocks.map((b: any) => [b.label, b.value]).sort(),
      );
      expect(a.tools.map((x: any) => x.name).sort()).toEqual(original.tools.map((x: any) => x.name).sort());
      for (const tool of original.tools.filter((x: any) => x.tool_type === "custom")) {
        const mine = a.tools.find((x: any) => x.name === tool.name);
        expect(mine.tool_type).toBe("custom");
        expect(mine.source_code).toBe(tool.source_code);
        expect(mine.json_schema.parameters.properties).not.toHaveProperty("request_heartbeat");
      }
      expect(a.tool_rules).toEqual(fileAgent.tool_rules);
      // New ids everywhere; the leading system message is Kelpie's own compiled prompt.
      const fileIds = new Set([...fileBlocks, ...original.tools, ...fileMessages].map((x: any) => x.id));
      for (const id of [
        a.id,
        ...a.blocks.map((b: any) => b.id),
        ...a.tools.map((x: any) => x.id),
        ...a.message_ids,
      ]) {
        expect(id).toMatch(UUID_ID);
        expect(fileIds.has(id)).toBe(false);
      }
      expect(fileInContext[0].role).toBe("system");
      const aMessages = await inContext(first.id);
      expect(aMessages.map((m) => m.role)).toEqual(fileInContext.slice(1).map((m) => m.role));
      expect(toolCallIds(aMessages)).toEqual(
        new Set(
          fileInContext.flatMap((m) => [
            ...(m.tool_calls ?? []).map((c: any) => c.id),
            ...(m.tool_call_id ? [m.tool_call_id] : []),
          ]),
        ),
      );
      expect(await t.kelpie.services.env.storage.countMessages(first.id)).toBe(fileMessages.length - 1);

      const exported = await exportOf(first.id);
      expect(exported.blocks).toHaveLength(fileBlocks.length);
      expect(exported.agents[0].in_context_message_ids).toHaveLength(fileInContext.length);
      expect(exported.agents[0].messages[0].role).toBe("system");
      const second = await importOk(exported, { append_copy_suffix: "false" });
      const b = await agentOf(second.id);
      expect(b.name).toBe(a.name);
      expect(shapeOf(b, await inContext(second.id))).toEqual(shapeOf(a, aMessages));
      // Tools are matched by name: the re-import reuses the first import's tools.
      expect(b.tools.map((x: any) => x.id).sort()).toEqual(a.tools.map((x: any) => x.id).sort());

      const reply = await t.req("POST", `/v1/agents/${second.id}/messages`, {
        messages: [{ role: "user", content: "hello imported" }],
      });
      expect(reply.status, JSON.stringify(reply.body)).toBe(200);
      expect(JSON.stringify(reply.body.messages)).toContain("hello imported");
      expect(reply.body.stop_reason.stop_reason).toBe("end_turn");
    });
  }
});

/** A small v2 file to vary. */
function v2File(over: { agent?: Record<string, unknown>; top?: Record<string, unknown> } = {}) {
  return {
    agents: [
      {
        id: "agent-0",
        name: "small",
        agent_type: "memgpt_v2_agent",
        system: "You are small.",
        block_ids: ["block-0"],
        tool_ids: ["tool-0", "tool-1"],
        tool_rules: [],
        llm_config: { model: "gpt-4o-mini", model_endpoint_type: "openai", context_window: 32000 },
        embedding_config: null,
        in_context_message_ids: ["message-0", "message-1", "message-2", "message-3"],
        messages: [
          {
            id: "message-0",
            role: "system",
            content: [{ type: "text", text: "old compiled prompt" }],
            created_at: "2025-01-01T00:00:00Z",
          },
          { id: "message-1", role: "user", content: "hi", created_at: "2025-01-01T00:00:01Z" },
          {
            id: "message-2",
            role: "assistant",
            content: [{ type: "text", text: "thinking" }],
            tool_calls: [
              { id: "call-1", type: "function", function: { name: "shout", arguments: '{"text": "hi"}' } },
            ],
            created_at: "2025-01-01T00:00:02Z",
          },
          {
            id: "message-3",
            role: "tool",
            name: "shout",
            content: [{ type: "text", text: '{"status": "Failed", "message": "boom"}' }],
            tool_call_id: "call-1",
            tool_returns: [{ tool_call_id: "call-1", status: "error" }],
            created_at: "2025-01-01T00:00:03Z",
          },
        ],
        ...over.agent,
      },
    ],
    groups: [],
    blocks: [{ id: "block-0", label: "persona", value: "I am small.", limit: 1000 }],
    files: [],
    sources: [],
    tools: [
      { id: "tool-0", name: "send_message", tool_type: "letta_core" },
      {
        id: "tool-1",
        name: "shout",
        tool_type: "custom",
        source_type: "python",
        source_code:
          'def shout(text: str) -> str:\n    """Shouts.\n\n    Args:\n        text: what to shout\n    """\n    return text.upper()\n',
      },
    ],
    mcp_servers: [],
    ...over.top,
  };
}

describe("import options and mapping", () => {
  it("maps ids consistently and keeps tool errors, history and names as asked", async () => {
    const { id, warnings } = await importOk(v2File(), { name: "renamed" });
    expect(warnings).toEqual([]);
    const agent = await agentOf(id);
    expect(agent.name).toBe("renamed");
    expect(agent.tools.map((x: any) => x.name)).toEqual(["send_message", "shout"]);
    const messages = await inContext(id);
    expect(messages.map((m) => m.role)).toEqual(["user", "assistant", "tool"]);
    expect(messages[1]!.tool_calls![0]!.id).toBe(messages[2]!.tool_call_id);
    expect(messages[2]!.is_err).toBe(true);
    expect(messages[0]!.created_at_ms).toBe(Date.parse("2025-01-01T00:00:01Z"));
    const listed = await t.req("GET", `/v1/agents/${id}/messages`);
    expect(listed.body.find((m: any) => m.message_type === "tool_return_message").status).toBe("error");
  });

  it("strips messages, sets the project, tool variables and model when asked", async () => {
    const { id } = await importOk(v2File(), {
      strip_messages: "true",
      project_id: "proj-1",
      env_vars_json: '{"API_KEY": "k1"}',
      model: "anthropic/claude-sonnet-4-5",
    });
    const agent = await agentOf(id);
    expect(agent.message_ids).toEqual([]);
    expect(agent.project_id).toBe("proj-1");
    // Secrets are write-only: the agent shows the name, and the value masked.
    expect(agent.tool_exec_environment_variables).toEqual([
      { key: "API_KEY", value: "****", description: null, agent_id: id },
    ]);
    const stored = await t.kelpie.services.env.storage.getAgent(id);
    expect(stored?.extra.tool_exec_environment_variables).toEqual([{ key: "API_KEY", value: "k1" }]);
    expect(agent.llm_config).toMatchObject({
      model: "claude-sonnet-4-5",
      model_endpoint_type: "anthropic",
      context_window: 32000,
    });
    // Variable values are secrets: an export names them and leaves them empty.
    expect((await exportOf(id)).agents[0].tool_exec_environment_variables).toEqual({ API_KEY: "" });
  });

  it("reuses a tool of the same name, and replaces it only with override_existing_tools", async () => {
    const first = await importOk(v2File());
    const shout = (await agentOf(first.id)).tools.find((x: any) => x.name === "shout");
    const changed = v2File();
    changed.tools[1]!.source_code = changed.tools[1]!.source_code!.replace(
      "text.upper()",
      "text.upper() + '!'",
    );

    const kept = await importOk(changed, { override_existing_tools: "false" });
    expect(kept.warnings.map((w) => w.msg).join("\n")).toMatch(
      /exists with another definition, which is kept/,
    );
    expect((await t.req("GET", `/v1/tools/${shout.id}`)).body.source_code).toBe(shout.source_code);

    const replaced = await importOk(changed);
    expect(replaced.warnings.map((w) => w.msg).join("\n")).toMatch(/replaced by the file's/);
    const after = (await t.req("GET", `/v1/tools/${shout.id}`)).body;
    expect(after.source_code).toContain("+ '!'");
    expect((await agentOf(replaced.id)).tools.find((x: any) => x.name === "shout").id).toBe(shout.id);
  });

  it("lists what it could not import as warnings instead of dropping it silently", async () => {
    const file = v2File({
      agent: {
        tool_rules: [{ tool_name: "shout", type: "exit_loop" }],
        source_ids: ["source-0"],
        surprise: 1,
      },
      top: { groups: [{ id: "group-0", agent_ids: ["agent-0"], description: "g" }], skills: [{ name: "s" }] },
    });
    file.tools.push({ id: "tool-2", name: "open_files", tool_type: "letta_files_core" } as any);
    (file.agents[0]!.tool_ids as string[]).push("tool-2");
    const { id, warnings } = await importOk(file);
    const text = warnings.map((w) => `${w.loc.join(".")}: ${w.msg}`).join("\n");
    expect(text).toMatch(/groups: groups is not supported/);
    expect(text).toMatch(/skills: skills is not supported/);
    expect(text).toMatch(/agents\.0\.source_ids: source_ids is not supported/);
    expect(text).toMatch(/agents\.0\.surprise: unknown field 'surprise'/);
    expect(text).toMatch(/tool rules are kept/);
    expect(text).toMatch(/'open_files' .* does not exist in Kelpie; not attached/);
    expect((await agentOf(id)).tools.map((x: any) => x.name)).not.toContain("open_files");
  });

  /** The v2 file with an MCP tool `echo` of a server the file describes (`config` as Letta's export). */
  function withMcpTool(server: Record<string, unknown>) {
    const file = v2File();
    file.tools.push({
      id: "tool-2",
      name: "echo",
      tool_type: "external_mcp",
      json_schema: {
        name: "echo",
        description: "Echoes",
        parameters: { type: "object", properties: { message: { type: "string" } }, required: ["message"] },
      },
      metadata_: { mcp: { server_name: "everything", server_id: "mcp_server-0" } },
    } as any);
    (file.agents[0]!.tool_ids as string[]).push("tool-2");
    (file as any).mcp_servers = [{ id: "mcp_server-0", server_name: "everything", ...server }];
    return file;
  }

  it("ties MCP tools to a server of the same name, registering a remote one from the file once", async () => {
    const file = withMcpTool({
      server_type: "streamable_http",
      server_url: "https://mcp.example.com/mcp",
      stdio_config: null,
    });
    const first = await importOk(file);
    expect(first.warnings.map((w) => w.msg).join("\n")).toMatch(
      /MCP server 'everything' \(streamable_http\) was registered/,
    );
    const servers = (await t.req("GET", "/v1/mcp-servers/")).body;
    expect(servers).toHaveLength(1);
    const echo = (await agentOf(first.id)).tools.find((x: any) => x.name === "echo");
    expect(echo.id).toBe(mcpToolId(servers[0].id, "echo"));
    expect(echo.tool_type).toBe("external_mcp");

    const exported = await exportOf(first.id);
    expect(exported.mcp_servers).toEqual([
      expect.objectContaining({
        server_type: "streamable_http",
        server_name: "everything",
        server_url: "https://mcp.example.com/mcp",
      }),
    ]);
    const second = await importOk(exported);
    expect((await t.req("GET", "/v1/mcp-servers/")).body).toHaveLength(1);
    expect((await agentOf(second.id)).tools.find((x: any) => x.name === "echo").id).toBe(echo.id);
  });

  it("never registers (or starts) a stdio MCP server from a file, even where stdio servers are allowed", async () => {
    await t.kelpie.close();
    t = await testApp(new MemoryStorage(), { llm: llm(), mcpStdio: { commands: ["*"], paths: [] } });
    const marker = join(mkdtempSync(join(tmpdir(), "kelpie-af-")), "pwned");
    const file = withMcpTool({
      server_type: "stdio",
      server_url: null,
      stdio_config: { command: "sh", args: ["-c", `touch ${marker}`], env: null },
    });
    const { id, warnings } = await importOk(file);
    const text = warnings.map((w) => `${w.loc.join(".")}: ${w.msg}`).join("\n");
    expect(text).toMatch(/mcp_servers\.0: MCP server 'everything' \(stdio\) was not registered/);
    expect(text).toMatch(/MCP tool 'echo' of stdio server 'everything' not attached/);
    expect((await t.req("GET", "/v1/mcp-servers/")).body).toEqual([]);
    const agent = await agentOf(id);
    expect(agent.tools.map((x: any) => x.name)).not.toContain("echo");
    // The agent works, and nothing ran: not at import, not on the agent's first message.
    fake.script(() => ({ text: "hi" }));
    expect((await t.req("POST", `/v1/agents/${id}/messages`, { input: "hello" })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(marker)).toBe(false);
  });

  it("carries archives and their passages (Kelpie's extension to the format)", async () => {
    const created = await t.req("POST", "/v1/agents/", {
      name: "archivist",
      model: "openai/gpt-4o-mini",
      embedding: "openai/text-embedding-3-small",
    });
    expect(created.status).toBe(200);
    const put = await t.req("POST", `/v1/agents/${created.body.id}/archival-memory`, {
      text: "The vault code is 1234.",
      tags: ["vault"],
    });
    expect(put.status).toBe(200);
    const exported = await exportOf(created.body.id);
    expect(exported.archives).toHaveLength(1);
    expect(exported.archives[0].passages).toEqual([
      expect.objectContaining({ text: "The vault code is 1234.", tags: ["vault"] }),
    ]);
    const { id } = await importOk(exported);
    const listed = await t.req("GET", `/v1/agents/${id}/archival-memory`);
    expect(listed.status).toBe(200);
    expect(listed.body.map((p: any) => p.text)).toEqual(["The vault code is 1234."]);
  });

  it("exports without messages when scrub_messages is set, and refuses what it cannot export", async () => {
    const { id } = await importOk(v2File());
    const scrubbed = (await t.req("GET", `/v1/agents/${id}/export?scrub_messages=true`)).body;
    expect(scrubbed.agents[0].messages).toEqual([]);
    expect(scrubbed.agents[0].in_context_message_ids).toEqual([]);
    const legacy = await t.req("GET", `/v1/agents/${id}/export?use_legacy_format=true`);
    expect(legacy.status).toBe(422);
    expect(legacy.body.detail[0].loc).toEqual(["query", "use_legacy_format"]);
    expect((await t.req("GET", "/v1/agents/agent-00000000-0000-4000-8000-000000000000/export")).status).toBe(
      404,
    );
  });
});

describe("malformed files", () => {
  const cases: [string, () => Promise<{ status: number; body: any }>, (string | number)[]][] = [
    ["text that is not JSON", () => upload("{not json"), ["body", "file"]],
    ["JSON that is no agent file", () => upload({ hello: 1 }), ["body", "file"]],
    [
      "a block id the file does not define",
      () => upload(v2File({ agent: { block_ids: ["block-9"] } })),
      ["body", "file", "agents", 0, "block_ids", 0],
    ],
    [
      "an unknown message role",
      () => {
        const f = v2File();
        (f.agents[0]!.messages[1] as any).role = "robot";
        return upload(f);
      },
      ["body", "file", "agents", 0, "messages", 1, "role"],
    ],
    [
      "an unknown agent type",
      () => upload(v2File({ agent: { agent_type: "robot_agent" } })),
      ["body", "file", "agents", 0, "agent_type"],
    ],
    [
      "a block value over its limit",
      () => {
        const f = v2File();
        f.blocks[0]!.limit = 3;
        return upload(f);
      },
      ["body", "file", "blocks", 0, "value"],
    ],
    [
      "tool source that does not define the tool",
      () => {
        const f = v2File();
        f.tools[1]!.source_code = "x = 1\n";
        return upload(f);
      },
      ["body", "file", "tools", 1, "source_code"],
    ],
    ["a bad boolean option", () => upload(v2File(), { strip_messages: "maybe" }), ["body", "strip_messages"]],
    [
      "env_vars_json that is not JSON",
      () => upload(v2File(), { env_vars_json: "{" }),
      ["body", "env_vars_json"],
    ],
  ];
  for (const [what, send, loc] of cases) {
    it(`answers 4xx naming the field for ${what}, and creates nothing`, async () => {
      const res = await send();
      expect(res.status, JSON.stringify(res.body)).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
      expect(res.body.detail[0].loc).toEqual(loc);
      expect(await t.kelpie.services.env.storage.countAgents()).toBe(0);
      expect((await t.req("GET", "/v1/tools/?name=shout")).body).toEqual([]);
    });
  }

  it("refuses a file over the size bound with 413, without reading it whole", async () => {
    const res = await upload(" ".repeat(AGENT_FILE_BYTES_MAX + 1));
    expect(res.status).toBe(413);
    expect(res.body.detail).toBe(
      `body.file: the agent file is larger than ${AGENT_FILE_BYTES_MAX} bytes, the most an import accepts`,
    );
  });

  it("asks for the file when the request carries none, or is not multipart", async () => {
    const none = await t.kelpie.app.inject({
      method: "POST",
      url: "/v1/agents/import",
      payload: '--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nn\r\n--x--\r\n',
      headers: { "content-type": "multipart/form-data; boundary=x" },
    });
    expect(none.statusCode).toBe(422);
    expect(JSON.parse(none.body).detail[0]).toMatchObject({ loc: ["body", "file"], type: "missing" });
    const json = await t.req("POST", "/v1/agents/import", v2File());
    expect(json.status).toBe(422);
    expect(json.body.detail[0].loc).toEqual(["body", "file"]);
  });
});
