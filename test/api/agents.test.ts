// The Letta REST surface of the spine: agents, blocks, tools, messages, pagination and errors.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type TestApp, testApp } from "../support/app.ts";

let t: TestApp;
beforeEach(async () => {
  t = await testApp();
});
afterEach(async () => {
  await t.kelpie.close();
});

const UNKNOWN_AGENT = "agent-00000000-0000-4000-8000-000000000000";

async function createAgent(body: Record<string, unknown> = {}) {
  const res = await t.req("POST", "/v1/agents/", body);
  expect(res.status).toBe(200);
  return res.body;
}

describe("agents", () => {
  it("creates an agent in Letta's shape with its blocks, default tools and configs", async () => {
    const a = await createAgent({
      name: "ada",
      memory_blocks: [
        { label: "persona", value: "I am a test persona.", description: "who I am" },
        { label: "human", value: "The user is Ada.", limit: 5000, read_only: true },
      ],
      tags: ["t1"],
      metadata: { k: "v" },
      model: "anthropic/claude-sonnet-4-5",
    });
    expect(a.id).toMatch(/^agent-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a.name).toBe("ada");
    expect(a.agent_type).toBe("memgpt_v2_agent");
    expect(a.blocks.map((b: any) => b.label)).toEqual(["persona", "human"]);
    expect(a.memory.blocks).toEqual(a.blocks);
    const human = a.blocks.find((b: any) => b.label === "human");
    expect(human).toMatchObject({ limit: 5000, read_only: true, value: "The user is Ada." });
    expect(human.id).toMatch(/^block-/);
    expect(a.blocks[0].limit).toBe(100_000);
    expect(a.tags).toEqual(["t1"]);
    expect(a.metadata).toEqual({ k: "v" });
    expect(a.llm_config).toMatchObject({ model: "claude-sonnet-4-5", model_endpoint_type: "anthropic" });
    expect(a.model).toBe("anthropic/claude-sonnet-4-5");
    expect(a.embedding_config.embedding_model).toBeTypeOf("string");
    expect(a.tools.length).toBeGreaterThan(0);
    expect(a.tools.every((tool: any) => tool.id.startsWith("tool-"))).toBe(true);
    expect(a.system.length).toBeGreaterThan(0);
    expect(typeof a.created_at).toBe("string");
  });

  it("gives each agent type Letta's default tools, and none without base tools", async () => {
    const v1 = await createAgent({ agent_type: "letta_v1_agent" });
    const memgpt = await createAgent({ agent_type: "memgpt_agent" });
    expect(memgpt.tools.map((x: any) => x.name)).toContain("send_message");
    expect(v1.tools.map((x: any) => x.name)).not.toContain("send_message");
    const bare = await createAgent({ include_base_tools: false });
    expect(bare.tools).toEqual([]);
    const named = await createAgent({ include_base_tools: false, tools: ["archival_memory_search"] });
    expect(named.tools.map((x: any) => x.name)).toEqual(["archival_memory_search"]);
  });

  it("reads with and without a trailing slash, counts, patches and deletes", async () => {
    const a = await createAgent({ name: "one" });
    expect((await t.req("GET", `/v1/agents/${a.id}`)).status).toBe(200);
    expect((await t.req("GET", `/v1/agents/${a.id}/`)).status).toBe(200);
    expect((await t.req("GET", "/v1/agents/count")).body).toBe(1);
    const p = await t.req("PATCH", `/v1/agents/${a.id}`, { name: "two", tags: ["a", "b"], description: "d" });
    expect(p.status).toBe(200);
    expect(p.body).toMatchObject({ name: "two", tags: ["a", "b"], description: "d" });
    expect((await t.req("GET", `/v1/agents/${a.id}`)).body.name).toBe("two");
    expect((await t.req("DELETE", `/v1/agents/${a.id}`)).status).toBe(200);
    expect((await t.req("GET", `/v1/agents/${a.id}`)).status).toBe(404);
    expect((await t.req("DELETE", `/v1/agents/${a.id}`)).status).toBe(404);
    expect((await t.req("GET", "/v1/agents/count")).body).toBe(0);
  });

  it("paginates with after/before/limit/order like Letta clients, ending on an empty page", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await createAgent({ name: `p${i}` })).id);
    const seen: string[] = [];
    let after: string | undefined;
    for (let pages = 0; pages < 10; pages++) {
      const page = (await t.req("GET", `/v1/agents/?limit=3${after ? `&after=${after}` : ""}`)).body;
      if (page.length === 0) break;
      expect(page.length).toBeLessThanOrEqual(3);
      seen.push(...page.map((x: any) => x.id));
      after = page.at(-1).id;
    }
    expect(seen).toEqual([...ids].reverse()); // default order is newest first
    const asc = (await t.req("GET", "/v1/agents/?order=asc&limit=100")).body.map((x: any) => x.id);
    expect(asc).toEqual(ids);
    const before = (await t.req("GET", `/v1/agents/?order=asc&before=${ids[3]}`)).body.map((x: any) => x.id);
    expect(before).toEqual(ids.slice(0, 3));
  });

  it("filters by name, tags and query_text", async () => {
    await createAgent({ name: "alpha", tags: ["red", "big"] });
    await createAgent({ name: "beta", tags: ["red"] });
    await createAgent({ name: "gamma", tags: ["blue"] });
    const names = async (q: string) =>
      (await t.req("GET", `/v1/agents/?${q}`)).body.map((x: any) => x.name).sort();
    expect(await names("name=beta")).toEqual(["beta"]);
    expect(await names("tags=red")).toEqual(["alpha", "beta"]);
    expect(await names("tags=red&tags=blue")).toEqual(["alpha", "beta", "gamma"]);
    expect(await names("tags=red&tags=big&match_all_tags=true")).toEqual(["alpha"]);
    expect(await names("query_text=AMM")).toEqual(["gamma"]);
  });

  it("rejects bad input with a 4xx naming the field, never a 500", async () => {
    const bad = await t.req("POST", "/v1/agents/", "not json");
    expect(bad.status).toBe(422);
    const wrongType = await t.req("POST", "/v1/agents/", { memory_blocks: "nope" });
    expect(wrongType.status).toBe(422);
    expect(JSON.stringify(wrongType.body.detail)).toContain("memory_blocks");
    const missingLabel = await t.req("POST", "/v1/agents/", { memory_blocks: [{ value: "x" }] });
    expect(missingLabel.status).toBe(422);
    expect(missingLabel.body.detail[0].loc).toEqual(["body", "memory_blocks", 0, "label"]);
    const overLimit = await t.req("POST", "/v1/agents/", {
      memory_blocks: [{ label: "h", value: "xxxx", limit: 2 }],
    });
    expect(overLimit.status).toBe(422);
    expect(overLimit.body.detail[0].loc).toEqual(["body", "memory_blocks", 0, "value"]);
    expect((await t.req("POST", "/v1/agents/", { agent_type: "nope" })).status).toBe(422);
    expect((await t.req("POST", "/v1/agents/", { tools: ["no_such_tool"] })).status).toBe(422);
    expect((await t.req("POST", "/v1/agents/", { name: 5 })).status).toBe(422);
    expect((await t.req("GET", "/v1/agents/?limit=-5")).status).toBe(422);
    expect((await t.req("GET", "/v1/agents/?limit=abc")).status).toBe(422);
    expect((await t.req("GET", "/v1/agents/?order=sideways")).status).toBe(422);
    const unknownCursor = await t.req("GET", `/v1/agents/?after=${UNKNOWN_AGENT}`);
    expect(unknownCursor.status).toBe(422);
    const missing = await t.req("GET", `/v1/agents/${UNKNOWN_AGENT}`);
    expect(missing.status).toBe(404);
    expect(missing.body.detail).toContain(UNKNOWN_AGENT);
    expect((await t.req("PATCH", `/v1/agents/${UNKNOWN_AGENT}`, { name: "x" })).status).toBe(404);
    expect((await t.req("GET", `/v1/agents/${UNKNOWN_AGENT}/messages`)).status).toBe(404);
    expect((await t.req("GET", "/v1/nothing-here")).status).toBe(404);
    expect((await t.req("GET", "/v1/agents/count")).body).toBe(0); // nothing half-created
  });
});

describe("blocks and core memory", () => {
  it("a block shared by two agents is one block: an edit is seen by both", async () => {
    const a1 = await createAgent({ name: "a1" });
    const a2 = await createAgent({ name: "a2" });
    const block = (await t.req("POST", "/v1/blocks/", { label: "shared", value: "v1", limit: 50 })).body;
    expect(block.id).toMatch(/^block-/);
    expect((await t.req("PATCH", `/v1/agents/${a1.id}/core-memory/blocks/attach/${block.id}`)).status).toBe(
      200,
    );
    expect((await t.req("PATCH", `/v1/agents/${a2.id}/core-memory/blocks/attach/${block.id}`)).status).toBe(
      200,
    );
    expect((await t.req("PATCH", `/v1/blocks/${block.id}`, { value: "v2" })).status).toBe(200);
    for (const a of [a1, a2]) {
      expect((await t.req("GET", `/v1/agents/${a.id}/core-memory/blocks/shared`)).body.value).toBe("v2");
    }
    const agents = (await t.req("GET", `/v1/blocks/${block.id}/agents`)).body.map((x: any) => x.id).sort();
    expect(agents).toEqual([a1.id, a2.id].sort());
    const over = await t.req("PATCH", `/v1/blocks/${block.id}`, { value: "x".repeat(80) });
    expect(over.status).toBe(422);
    expect((await t.req("GET", `/v1/blocks/${block.id}`)).body.value).toBe("v2");
    expect((await t.req("PATCH", `/v1/agents/${a1.id}/core-memory/blocks/detach/${block.id}`)).status).toBe(
      200,
    );
    expect((await t.req("GET", `/v1/agents/${a1.id}/core-memory/blocks/shared`)).status).toBe(404);
    expect((await t.req("DELETE", `/v1/blocks/${block.id}`)).status).toBe(200);
    expect((await t.req("GET", `/v1/agents/${a2.id}`)).body.blocks).toEqual([]);
  });

  it("edits an agent's block by label within its limit", async () => {
    const a = await createAgent({ memory_blocks: [{ label: "human", value: "Ada", limit: 10 }] });
    const ok = await t.req("PATCH", `/v1/agents/${a.id}/core-memory/blocks/human`, { value: "Ada L." });
    expect(ok.body.value).toBe("Ada L.");
    const tooLong = await t.req("PATCH", `/v1/agents/${a.id}/core-memory/blocks/human`, {
      value: "x".repeat(11),
    });
    expect(tooLong.status).toBe(422);
    expect((await t.req("GET", `/v1/agents/${a.id}/core-memory/blocks`)).body[0].value).toBe("Ada L.");
    expect((await t.req("GET", `/v1/agents/${a.id}/core-memory`)).body.blocks[0].value).toBe("Ada L.");
  });

  it("lists, filters and counts blocks", async () => {
    await t.req("POST", "/v1/blocks/", { label: "a", value: "apple" });
    await t.req("POST", "/v1/blocks/", { label: "b", value: "banana" });
    expect((await t.req("GET", "/v1/blocks/count")).body).toBe(2);
    expect((await t.req("GET", "/v1/blocks/?label=b")).body.map((x: any) => x.value)).toEqual(["banana"]);
    expect((await t.req("GET", "/v1/blocks/?value_search=APP")).body.map((x: any) => x.label)).toEqual(["a"]);
    expect((await t.req("POST", "/v1/blocks/", { value: "no label" })).status).toBe(422);
  });
});

describe("tools", () => {
  it("lists Letta's built-in tools with JSON schemas and tool types", async () => {
    const tools = (await t.req("GET", "/v1/tools/?limit=100")).body;
    const names = tools.map((x: any) => x.name);
    for (const name of [
      "send_message",
      "conversation_search",
      "archival_memory_insert",
      "archival_memory_search",
      "core_memory_append",
      "core_memory_replace",
      "memory",
      "memory_apply_patch",
      "memory_insert",
      "memory_replace",
      "memory_rethink",
      "memory_finish_edits",
      "send_message_to_agent_and_wait_for_reply",
      "send_message_to_agents_matching_tags",
      "send_message_to_agent_async",
    ]) {
      const tool = tools.find((x: any) => x.name === name);
      expect(tool, name).toBeDefined();
      expect(tool.json_schema.parameters.type).toBe("object");
      expect(tool.tool_type).toMatch(/^letta_/);
    }
    expect(new Set(names).size).toBe(names.length);
    const one = await t.req("GET", `/v1/tools/${tools[0].id}`);
    expect(one.body.name).toBe(tools[0].name);
    expect((await t.req("GET", "/v1/tools/tool-00000000-0000-4000-8000-000000000000")).status).toBe(404);
  });

  it("attaches and detaches tools by id", async () => {
    const a = await createAgent({ include_base_tools: false });
    const search = (await t.req("GET", "/v1/tools/?name=archival_memory_search")).body[0];
    const attached = await t.req("PATCH", `/v1/agents/${a.id}/tools/attach/${search.id}`);
    expect(attached.body.tools.map((x: any) => x.id)).toEqual([search.id]);
    expect((await t.req("GET", `/v1/agents/${a.id}/tools`)).body.map((x: any) => x.name)).toEqual([
      "archival_memory_search",
    ]);
    const detached = await t.req("PATCH", `/v1/agents/${a.id}/tools/detach/${search.id}`);
    expect(detached.body.tools).toEqual([]);
    const bogus = await t.req(
      "PATCH",
      `/v1/agents/${a.id}/tools/attach/tool-00000000-0000-4000-8000-000000000000`,
    );
    expect(bogus.status).toBe(404);
  });
});

describe("health and messages", () => {
  it("answers health on both paths and lists an empty conversation", async () => {
    expect((await t.req("GET", "/health")).status).toBe(200);
    expect((await t.req("GET", "/v1/health/")).body.status).toBe("ok");
    const a = await createAgent();
    const msgs = await t.req("GET", `/v1/agents/${a.id}/messages`);
    expect(msgs.status).toBe(200);
    expect(Array.isArray(msgs.body)).toBe(true);
  });
});
