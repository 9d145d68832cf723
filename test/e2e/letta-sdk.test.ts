// The official Letta TypeScript SDK (@letta-ai/letta-client) against a real `kelpie serve` process
// and a fake LLM over HTTP: every call as the SDK's docs show it, with no workaround. Agents and
// auto-pagination, core memory and blocks, custom tools, messages (plain and streamed), archival
// memory, MCP servers (a real stdio server-everything), and agent files in and out.
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import Letta, { NotFoundError, toFile } from "@letta-ai/letta-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const EVERYTHING = join(ROOT, "node_modules/.bin/mcp-server-everything");
const AF_FILE = resolve(
  ROOT,
  "../shared/letta/agent-files/test_basic_agent_with_blocks_tools_messages_v2.af",
);
const MODEL = "openai/gpt-4o-mini";
const EMBEDDING = "openai/text-embedding-3-small";
const PAGE_AGENTS_COUNT = 7;
/** A hung request fails the test quickly instead of eating the whole run. */
const SDK_REQUEST_TIMEOUT_MS = 15_000;

const SHOUT_SOURCE = `def shout(text: str) -> str:
    """Shouts the text back.

    Args:
        text: What to shout.

    Returns:
        str: The text in capitals.
    """
    return text.upper()
`;

/** Echoes the user, except "shout: X", which calls the shout tool and then reports its result. */
function script(req: ScriptRequest) {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  const user = req.messages[i]?.text ?? "";
  const tool = req.messages.slice(i + 1).find((m) => m.role === "tool");
  if (user.startsWith("shout: ")) {
    if (tool === undefined)
      return { toolCalls: [{ name: "shout", args: { text: user.slice(7), request_heartbeat: true } }] };
    return { text: `shouted ${tool.text}` };
  }
  return { text: `echo: ${user}` };
}

describe("the Letta TypeScript SDK against a real Kelpie process", () => {
  const data = tempDataDir();
  let fake: FakeLlm;
  let server: ServerProcess;
  let client: Letta;

  beforeAll(async () => {
    fake = await startFakeLlm();
    fake.script(script);
    server = await startServer({
      dataDir: data.dir,
      env: {
        OPENAI_API_KEY: "sk-test",
        OPENAI_BASE_URL: `${fake.url}/v1`,
        ANTHROPIC_API_KEY: "sk-ant-test",
        ANTHROPIC_BASE_URL: fake.url,
        // The stdio MCP test's server, sandboxed (its node_modules is bound for it).
        KELPIE_MCP_STDIO_COMMANDS: EVERYTHING,
      },
    });
    client = new Letta({
      baseURL: server.url,
      apiKey: "unused",
      maxRetries: 0,
      timeout: SDK_REQUEST_TIMEOUT_MS,
    });
  });
  afterAll(async () => {
    await server?.kill();
    await fake?.close();
    data.remove();
  });

  it("creates, lists (auto-paginating), retrieves, updates and deletes agents", async () => {
    const agent = await client.agents.create({
      name: "sdk-agent",
      model: MODEL,
      embedding: EMBEDDING,
      memory_blocks: [
        { label: "persona", value: "SDK persona" },
        { label: "human", value: "SDK human", limit: 5000 },
      ],
      tags: ["sdk"],
    });
    expect(agent.id).toMatch(/^agent-/);
    expect(agent.memory.blocks.map((b) => b.label)).toEqual(["persona", "human"]);
    for (let i = 0; i < PAGE_AGENTS_COUNT; i++)
      await client.agents.create({ name: `sdk-page-${i}`, model: MODEL });

    const seen: string[] = [];
    for await (const a of client.agents.list({ limit: 3 })) seen.push(a.id);
    expect(seen.length).toBeGreaterThanOrEqual(PAGE_AGENTS_COUNT + 1);
    expect(new Set(seen).size).toBe(seen.length);
    const tagged = await client.agents.list({ tags: ["sdk"] });
    expect(tagged.items.map((a) => a.id)).toEqual([agent.id]);

    expect((await client.agents.retrieve(agent.id)).name).toBe("sdk-agent");
    const updated = await client.agents.update(agent.id, {
      name: "sdk-renamed",
      description: "renamed by the SDK",
    });
    expect(updated).toMatchObject({ name: "sdk-renamed", description: "renamed by the SDK" });

    const doomed = await client.agents.create({ name: "sdk-doomed", model: MODEL });
    await client.agents.delete(doomed.id);
    const gone = await client.agents.retrieve(doomed.id).catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(NotFoundError);
  });

  it("reads and edits core memory and standalone blocks", async () => {
    const agent = await client.agents.create({
      model: MODEL,
      memory_blocks: [
        { label: "persona", value: "P" },
        { label: "human", value: "H" },
      ],
    });
    expect((await client.agents.blocks.retrieve("persona", { agent_id: agent.id })).value).toBe("P");
    const edited = await client.agents.blocks.update("human", {
      agent_id: agent.id,
      value: "The user is Ada.",
    });
    expect(edited.value).toBe("The user is Ada.");
    const labels: string[] = [];
    for await (const b of client.agents.blocks.list(agent.id)) labels.push(b.label ?? "");
    expect(labels.sort()).toEqual(["human", "persona"]);

    const shared = await client.blocks.create({ label: "team", value: "Team notes", limit: 1000 });
    expect(shared.id).toMatch(/^block-/);
    expect((await client.blocks.retrieve(shared.id)).value).toBe("Team notes");
    expect((await client.blocks.update(shared.id, { value: "Team notes v2" })).value).toBe("Team notes v2");
    const listed: string[] = [];
    for await (const b of client.blocks.list({ label: "team" })) listed.push(b.id!);
    expect(listed).toContain(shared.id);
    await client.agents.blocks.attach(shared.id, { agent_id: agent.id });
    expect((await client.agents.blocks.retrieve("team", { agent_id: agent.id })).id).toBe(shared.id);
    const holders: string[] = [];
    for await (const a of client.blocks.agents.list(shared.id)) holders.push(a.id);
    expect(holders).toEqual([agent.id]);
    await client.agents.blocks.detach(shared.id, { agent_id: agent.id });
    await client.blocks.delete(shared.id);
    expect(await client.blocks.retrieve(shared.id).catch((e: unknown) => e)).toBeInstanceOf(NotFoundError);
  });

  it("creates a tool from source, attaches it, and the agent calls it", async () => {
    const tool = await client.tools.create({ source_code: SHOUT_SOURCE });
    expect(tool).toMatchObject({ name: "shout", tool_type: "custom" });
    expect(tool.json_schema?.parameters).toMatchObject({ properties: { text: { type: "string" } } });
    expect((await client.tools.retrieve(tool.id)).source_code).toBe(SHOUT_SOURCE);
    const agent = await client.agents.create({ model: MODEL, agent_type: "letta_v1_agent" });
    await client.agents.tools.attach(tool.id, { agent_id: agent.id });
    const names: string[] = [];
    for await (const t of client.agents.tools.list(agent.id)) names.push(t.name ?? "");
    expect(names).toContain("shout");

    const res = await client.agents.messages.create(agent.id, {
      messages: [{ role: "user", content: "shout: hi" }],
    });
    const returned = res.messages.find((m) => m.message_type === "tool_return_message");
    expect(returned).toMatchObject({ status: "success" });
    expect(JSON.stringify(res.messages)).toContain("shouted");
    expect(JSON.stringify(res.messages)).toContain("HI");

    const all: string[] = [];
    for await (const t of client.tools.list({ limit: 5 })) all.push(t.name ?? "");
    expect(all).toContain("shout");
    expect(all).toContain("send_message");
    await client.agents.tools.detach(tool.id, { agent_id: agent.id });
    await client.tools.delete(tool.id);
    expect(await client.tools.retrieve(tool.id).catch((e: unknown) => e)).toBeInstanceOf(NotFoundError);
  });

  it("sends messages, plain and streamed, and lists them", async () => {
    const agent = await client.agents.create({
      model: MODEL,
      memory_blocks: [{ label: "persona", value: "P" }],
    });
    const res = await client.agents.messages.create(agent.id, {
      messages: [{ role: "user", content: "hello sdk" }],
    });
    const said = res.messages.filter((m) => m.message_type === "assistant_message");
    expect(JSON.stringify(said)).toContain("echo: hello sdk");
    expect(res.stop_reason?.stop_reason).toBe("end_turn");

    const stream = await client.agents.messages.stream(agent.id, {
      messages: [{ role: "user", content: "stream sdk" }],
    });
    const types: string[] = [];
    let streamed = "";
    for await (const chunk of stream) {
      types.push(String(chunk.message_type));
      if (chunk.message_type === "assistant_message") streamed += JSON.stringify(chunk.content);
    }
    expect(streamed).toContain("echo: stream sdk");
    expect(types).toContain("stop_reason");

    const listed: string[] = [];
    for await (const m of client.agents.messages.list(agent.id, { limit: 2 }))
      listed.push(String(m.message_type));
    expect(listed).toContain("user_message");
    expect(listed).toContain("assistant_message");
  });

  it("inserts, lists, searches and deletes archival memory", async () => {
    const agent = await client.agents.create({ model: MODEL, embedding: EMBEDDING });
    const [passage] = await client.agents.passages.create(agent.id, {
      text: "The vault code is 1234.",
      tags: ["vault"],
    });
    expect(passage?.id).toMatch(/^passage-/);
    await client.agents.passages.create(agent.id, { text: "Lunch is at noon." });
    const all = await client.agents.passages.list(agent.id);
    expect(all.map((p) => p.text).sort()).toEqual(["Lunch is at noon.", "The vault code is 1234."]);
    const found = await client.agents.passages.search(agent.id, { query: "vault code", tags: ["vault"] });
    expect(found.count).toBe(found.results.length);
    expect(found.results[0]?.content).toBe("The vault code is 1234.");
    await client.agents.passages.delete(String(passage?.id), { agent_id: agent.id });
    expect((await client.agents.passages.list(agent.id)).map((p) => p.text)).toEqual(["Lunch is at noon."]);
  });

  it("registers a stdio MCP server, lists and runs its tools, and deletes it", async () => {
    const created = await client.mcpServers.create({
      server_name: "everything",
      config: { mcp_server_type: "stdio", command: EVERYTHING, args: ["stdio"] },
    });
    expect(created.id).toMatch(/^mcp_server-/);
    expect((await client.mcpServers.list()).map((s) => s.server_name)).toContain("everything");
    expect((await client.mcpServers.retrieve(created.id!)).server_name).toBe("everything");
    const tools = await client.mcpServers.tools.list(created.id!);
    const echo = tools.find((t) => t.name === "echo");
    expect(echo?.tool_type).toBe("external_mcp");
    const run = await client.mcpServers.tools.run(echo!.id, {
      mcp_server_id: created.id!,
      args: { message: "via sdk" },
    });
    expect(run.status).toBe("success");
    expect(JSON.stringify(run.func_return)).toContain("via sdk");
    await client.mcpServers.delete(created.id!);
    expect((await client.mcpServers.list()).map((s) => s.server_name)).not.toContain("everything");
  });

  it("imports a Letta agent file, exports it and imports the export again", async () => {
    const imported = await client.agents.importFile({
      file: await toFile(readFileSync(AF_FILE), "agent.af"),
      append_copy_suffix: false,
    });
    expect(imported.agent_ids).toHaveLength(1);
    const original = await client.agents.retrieve(imported.agent_ids[0]!);
    expect(original.name).toBe(JSON.parse(readFileSync(AF_FILE, "utf8")).agents[0].name);

    const exported: unknown = await client.agents.exportFile(original.id);
    const text = typeof exported === "string" ? exported : JSON.stringify(exported);
    expect(JSON.parse(text).blocks).toHaveLength(original.memory.blocks.length);
    const again = await client.agents.importFile({
      file: await toFile(Buffer.from(text), "export.af"),
      name: "again",
    });
    const copy = await client.agents.retrieve(again.agent_ids[0]!);
    expect(copy.name).toBe("again");
    const blocksOf = (a: typeof copy) => a.memory.blocks.map((b) => [b.label, b.value]).sort();
    expect(blocksOf(copy)).toEqual(blocksOf(original));
    expect(copy.tools.map((t) => t.name).sort()).toEqual(original.tools.map((t) => t.name).sort());
    expect(copy.message_ids).toHaveLength(original.message_ids?.length ?? 0);

    const res = await client.agents.messages.create(copy.id, {
      messages: [{ role: "user", content: "hello imported" }],
    });
    expect(JSON.stringify(res.messages)).toContain("echo: hello imported");
  });
});
