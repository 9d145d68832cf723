// One behavioural suite for every Storage engine: the `commit` contract, fencing, pagination,
// filters, relations and cascades must be the same on memory, SQLite and PostgreSQL.
import { beforeEach, expect, it } from "vitest";
import { OUTBOX_ENTRIES_PER_AGENT_MAX } from "../../src/core/constants.ts";
import { KelpieError } from "../../src/core/errors.ts";
import { SeededRng } from "../../src/core/rng.ts";
import type {
  AgentRecord,
  ArchiveRecord,
  BlockRecord,
  MessageRecord,
  Mutation,
  OutboxRecord,
  PassageRecord,
  RunRecord,
  Storage,
  ToolRecord,
  WorkingMemoryEntry,
} from "../../src/storage/types.ts";

type StoredAgent = Omit<AgentRecord, "block_ids" | "tool_ids">;

export function storageSuite(open: () => Promise<Storage>): void {
  let s: Storage;
  const rng = new SeededRng(7);
  const id = (p: string) => `${p}-${rng.uuid()}`;

  beforeEach(async () => {
    s = await open();
  });

  const agent = (over: Partial<StoredAgent> = {}): StoredAgent => ({
    id: id("agent"),
    name: "a",
    agent_type: "memgpt_v2_agent",
    system: "sys",
    description: null,
    metadata: { nested: { n: 1, list: [1, "two", null] } },
    tags: [],
    llm_config: { model: "m", context_window: 1000 },
    embedding_config: null,
    tool_rules: [],
    message_ids: [],
    extra: {},
    created_at_ms: 1,
    updated_at_ms: 2,
    ...over,
  });
  const block = (over: Partial<BlockRecord> = {}): BlockRecord => ({
    id: id("block"),
    label: "human",
    value: "v",
    limit: 100,
    description: null,
    read_only: false,
    metadata: {},
    is_template: false,
    template_name: null,
    hidden: null,
    tags: [],
    project_id: null,
    version: 1,
    created_at_ms: 1,
    updated_at_ms: 1,
    ...over,
  });
  const tool = (over: Partial<ToolRecord> = {}): ToolRecord => ({
    id: id("tool"),
    name: `t_${rng.int(1e9)}`,
    tool_type: "custom",
    description: null,
    source_type: "python",
    source_code: "def f(): pass",
    json_schema: { name: "f", parameters: { type: "object", properties: {} } },
    args_json_schema: null,
    tags: [],
    return_char_limit: 100,
    pip_requirements: null,
    npm_requirements: null,
    default_requires_approval: null,
    enable_parallel_execution: false,
    metadata: {},
    created_at_ms: 1,
    updated_at_ms: 1,
    ...over,
  });
  const message = (agentId: string, text: string, over: Partial<MessageRecord> = {}): MessageRecord => ({
    id: id("message"),
    agent_id: agentId,
    role: "user",
    content: [{ type: "text", text }],
    name: null,
    tool_calls: null,
    tool_call_id: null,
    tool_returns: null,
    step_id: null,
    run_id: null,
    model: null,
    otid: null,
    sender_id: null,
    group_id: null,
    is_err: null,
    created_at_ms: 5,
    ...over,
  });
  const code = async (p: Promise<unknown>) => {
    const err = await p.then(
      () => null,
      (e) => e,
    );
    expect(err).toBeInstanceOf(KelpieError);
    return (err as KelpieError).code;
  };
  const putAgent = async (a: StoredAgent) => s.commit([{ op: "put_agent", agent: a, create: true }]);

  it("round-trips agents exactly, with relations in attach order", async () => {
    const a = agent({ tags: ["x", "y"], extra: { timezone: "UTC" } });
    const b1 = block({ label: "persona" });
    const b2 = block();
    const t1 = tool();
    const t2 = tool();
    await s.commit([
      { op: "put_agent", agent: a, create: true },
      { op: "put_block", block: b1, create: true },
      { op: "put_block", block: b2, create: true },
      { op: "put_tool", tool: t1, create: true },
      { op: "put_tool", tool: t2, create: true },
      { op: "attach_block", agent_id: a.id, block_id: b2.id },
      { op: "attach_block", agent_id: a.id, block_id: b1.id },
      { op: "attach_block", agent_id: a.id, block_id: b2.id },
      { op: "attach_tool", agent_id: a.id, tool_id: t2.id },
      { op: "attach_tool", agent_id: a.id, tool_id: t1.id },
    ]);
    expect(await s.getAgent(a.id)).toEqual({ ...a, block_ids: [b2.id, b1.id], tool_ids: [t2.id, t1.id] });
    expect(await s.getBlock(b1.id)).toEqual(b1);
    expect(await s.getTool(t1.id)).toEqual(t1);
    expect(await s.getToolByName(t2.name)).toEqual(t2);
    expect(await s.getBlocks([b2.id, "block-missing", b1.id])).toEqual([b2, b1]);
    expect(await s.getTools([t1.id, t2.id])).toEqual([t1, t2]);
    expect(await s.getAgent("agent-nope")).toBeNull();
    await s.commit([{ op: "detach_block", agent_id: a.id, block_id: b2.id }]);
    await s.commit([{ op: "detach_block", agent_id: a.id, block_id: b2.id }]); // absent pair: no-op
    expect((await s.getAgent(a.id))!.block_ids).toEqual([b1.id]);
  });

  it("enforces create/update existence, tool name uniqueness and block versions", async () => {
    const a = agent();
    await putAgent(a);
    expect(await code(putAgent(a))).toBe("CONFLICT");
    expect(await code(s.commit([{ op: "put_agent", agent: agent(), create: false }]))).toBe(
      "AGENT_NOT_FOUND",
    );
    const b = block();
    await s.commit([{ op: "put_block", block: b, create: true }]);
    expect(await code(s.commit([{ op: "put_block", block: { ...b, value: "x" }, create: false }]))).toBe(
      "CONFLICT",
    );
    await s.commit([{ op: "put_block", block: { ...b, value: "v2", version: 2 }, create: false }]);
    expect((await s.getBlock(b.id))!.value).toBe("v2");
    expect(await code(s.commit([{ op: "put_block", block: { ...b, version: 2 }, create: false }]))).toBe(
      "CONFLICT",
    );
    const t = tool({ name: "unique_name" });
    await s.commit([{ op: "put_tool", tool: t, create: true }]);
    expect(
      await code(s.commit([{ op: "put_tool", tool: tool({ name: "unique_name" }), create: true }])),
    ).toBe("CONFLICT");
    expect(await code(s.commit([{ op: "attach_block", agent_id: a.id, block_id: "block-none" }]))).toBe(
      "BLOCK_NOT_FOUND",
    );
    expect(await code(s.commit([{ op: "attach_tool", agent_id: "agent-none", tool_id: t.id }]))).toBe(
      "AGENT_NOT_FOUND",
    );
    expect(await code(s.commit([{ op: "delete_block", block_id: "block-none" }]))).toBe("BLOCK_NOT_FOUND");
  });

  it("applies a commit whole or not at all", async () => {
    const a = agent();
    const b = block();
    const failing: Mutation[] = [
      { op: "put_agent", agent: a, create: true },
      { op: "put_block", block: b, create: true },
      { op: "attach_tool", agent_id: a.id, tool_id: "tool-missing" },
    ];
    expect(await code(s.commit(failing))).toBe("TOOL_NOT_FOUND");
    expect(await s.getAgent(a.id)).toBeNull();
    expect(await s.getBlock(b.id)).toBeNull();
    expect(await s.countAgents()).toBe(0);
  });

  it("checks each mutation against the commit's own earlier effects, deletes and cascades included", async () => {
    const a = agent();
    const c = {
      id: id("conv"),
      agent_id: a.id,
      summary: null,
      model: null,
      in_context_message_ids: [],
      created_at_ms: 1,
      updated_at_ms: 1,
    };
    const made: Mutation[] = [
      { op: "put_agent", agent: a, create: true },
      { op: "put_conversation", conversation: c, create: true },
      { op: "put_message", message: message(a.id, "kept?") },
      { op: "delete_agent", agent_id: a.id },
    ];
    // The conversation went with its agent, and so did the agent: neither can be written after.
    expect(await code(s.commit([...made, { op: "put_conversation", conversation: c, create: false }]))).toBe(
      "NOT_FOUND",
    );
    expect(await code(s.commit([...made, { op: "put_message", message: message(a.id, "late") }]))).toBe(
      "AGENT_NOT_FOUND",
    );
    expect(await s.getAgent(a.id)).toBeNull();
    // Created again in the same commit, the agent takes writes again.
    await s.commit([
      ...made,
      { op: "put_agent", agent: a, create: true },
      { op: "put_message", message: message(a.id, "x") },
    ]);
    expect(await s.countMessages(a.id)).toBe(1);
    expect(await s.getConversation(c.id)).toBeNull();
  });

  it("rejects a commit with a stale fencing token inside the transaction", async () => {
    const a = agent();
    await putAgent(a);
    expect(await s.currentFence(a.id)).toBe(0);
    const stale = await s.acquireFence(a.id);
    const current = await s.acquireFence(a.id);
    expect(stale).toBe(1);
    expect(current).toBe(2);
    const renamed = { ...a, name: "stale write" };
    const err = await s
      .commit([{ op: "put_agent", agent: renamed, create: false }], {
        fence: { agent_id: a.id, token: stale },
      })
      .catch((e) => e);
    expect(err).toBeInstanceOf(KelpieError);
    expect(err.code).toBe("FENCED");
    expect((await s.getAgent(a.id))!.name).toBe("a");
    await s.commit([{ op: "put_agent", agent: { ...a, name: "fresh" }, create: false }], {
      fence: { agent_id: a.id, token: current },
    });
    expect((await s.getAgent(a.id))!.name).toBe("fresh");
    expect(await s.currentFence(a.id)).toBe(2);
  });

  it("paginates by cursor in the listing's order and ends on an empty page", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const a = agent({ name: `p${i}` });
      ids.push(a.id);
      await putAgent(a);
    }
    const page = async (q: Partial<Parameters<Storage["listAgents"]>[0]>) =>
      (await s.listAgents({ limit: 10, order: "asc", ...q })).map((a) => a.id);
    expect(await page({})).toEqual(ids);
    expect(await page({ order: "desc" })).toEqual([...ids].reverse());
    expect(await page({ limit: 2 })).toEqual(ids.slice(0, 2));
    expect(await page({ after: ids[1] })).toEqual(ids.slice(2));
    expect(await page({ after: ids[3], order: "desc" })).toEqual([ids[2], ids[1], ids[0]]);
    expect(await page({ before: ids[3] })).toEqual(ids.slice(0, 3));
    expect(await page({ before: ids[1], order: "desc" })).toEqual([ids[4], ids[3], ids[2]]);
    expect(await page({ after: ids[0], before: ids[3] })).toEqual([ids[1], ids[2]]);
    expect(await page({ after: ids[4] })).toEqual([]);
    const err = await s.listAgents({ limit: 1, order: "asc", after: "agent-unknown" }).catch((e) => e);
    expect(err.code).toBe("VALIDATION");
    expect(err.issues[0].loc).toEqual(["query", "after"]);
    // Updating keeps an agent's position.
    const first = (await s.getAgent(ids[0]!))!;
    const { block_ids: _b, tool_ids: _t, ...stored } = first;
    await s.commit([{ op: "put_agent", agent: { ...stored, name: "moved?" }, create: false }]);
    expect(await page({})).toEqual(ids);
  });

  it("filters agents, blocks and tools", async () => {
    await putAgent(agent({ name: "alpha", tags: ["red", "big"] }));
    await putAgent(agent({ name: "Beta", tags: ["red"] }));
    await putAgent(agent({ name: "gamma", tags: ["blue"] }));
    const names = async (q: object) =>
      (await s.listAgents({ limit: 10, order: "asc", ...q })).map((a) => a.name).sort();
    expect(await names({ name: "Beta" })).toEqual(["Beta"]);
    expect(await names({ query_text: "ET" })).toEqual(["Beta"]);
    expect(await names({ tags: ["red"] })).toEqual(["Beta", "alpha"]);
    expect(await names({ tags: ["red", "blue"] })).toEqual(["Beta", "alpha", "gamma"]);
    expect(await names({ tags: ["red", "big"], match_all_tags: true })).toEqual(["alpha"]);
    expect(await s.countAgents()).toBe(3);

    await s.commit([
      {
        op: "put_block",
        block: block({ label: "a", value: "Apple pie", description: "Fruit" }),
        create: true,
      },
      {
        op: "put_block",
        block: block({ label: "b", value: "banana", is_template: true, template_name: "tpl" }),
        create: true,
      },
    ]);
    const labels = async (q: object) =>
      (await s.listBlocks({ limit: 10, order: "asc", ...q })).map((b) => b.label).sort();
    expect(await labels({ label: "a" })).toEqual(["a"]);
    expect(await labels({ templates_only: true })).toEqual(["b"]);
    expect(await labels({ name: "tpl" })).toEqual(["b"]);
    expect(await labels({ value_search: "APPLE" })).toEqual(["a"]);
    expect(await labels({ description_search: "fru" })).toEqual(["a"]);
    expect(await labels({ label_search: "B" })).toEqual(["b"]);
    expect(await s.countBlocks()).toBe(2);

    const t1 = tool({ name: "search_web", tool_type: "custom" });
    const t2 = tool({ name: "send_message", tool_type: "letta_core" });
    await s.commit([
      { op: "put_tool", tool: t1, create: true },
      { op: "put_tool", tool: t2, create: true },
    ]);
    const tools = async (q: object) =>
      (await s.listTools({ limit: 10, order: "asc", ...q })).map((t) => t.name).sort();
    expect(await tools({ name: "search_web" })).toEqual(["search_web"]);
    expect(await tools({ names: ["send_message", "nope"] })).toEqual(["send_message"]);
    expect(await tools({ tool_ids: [t1.id] })).toEqual(["search_web"]);
    expect(await tools({ search: "SEND" })).toEqual(["send_message"]);
    expect(await tools({ tool_types: ["letta_core"] })).toEqual(["send_message"]);
    expect(await tools({ exclude_tool_types: ["letta_core"] })).toEqual(["search_web"]);
    expect(await s.countTools()).toBe(2);
  });

  it("cascades deletes and keeps shared blocks shared", async () => {
    const a1 = agent();
    const a2 = agent();
    const shared = block();
    const t = tool();
    await s.commit([
      { op: "put_agent", agent: a1, create: true },
      { op: "put_agent", agent: a2, create: true },
      { op: "put_block", block: shared, create: true },
      { op: "put_tool", tool: t, create: true },
      { op: "attach_block", agent_id: a1.id, block_id: shared.id },
      { op: "attach_block", agent_id: a2.id, block_id: shared.id },
      { op: "attach_tool", agent_id: a1.id, tool_id: t.id },
      { op: "put_message", message: message(a1.id, "hello") },
    ]);
    expect(await s.listBlockAgentIds(shared.id)).toEqual([a1.id, a2.id]);
    await s.acquireFence(a1.id);
    await s.commit([{ op: "delete_agent", agent_id: a1.id }]);
    expect(await s.getAgent(a1.id)).toBeNull();
    expect(await s.countMessages(a1.id)).toBe(0);
    expect(await s.currentFence(a1.id)).toBe(0);
    expect(await s.listBlockAgentIds(shared.id)).toEqual([a2.id]);
    expect(await s.getBlock(shared.id)).not.toBeNull();
    await s.commit([{ op: "delete_block", block_id: shared.id }]);
    expect((await s.getAgent(a2.id))!.block_ids).toEqual([]);
    expect(await code(s.commit([{ op: "delete_agent", agent_id: a1.id }]))).toBe("AGENT_NOT_FOUND");
  });

  it("stores messages, runs and steps per agent and run", async () => {
    const a = agent();
    await putAgent(a);
    const m1 = message(a.id, "one", { run_id: "run-1" });
    const m2 = message(a.id, "two", {
      role: "assistant",
      run_id: "run-1",
      tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: "{}" } }],
    });
    const m3 = message(a.id, "three");
    await s.commit([m1, m2, m3].map((message) => ({ op: "put_message" as const, message })));
    expect(await s.getMessage(m2.id)).toEqual(m2);
    expect(await s.getMessages([m3.id, m1.id])).toEqual([m3, m1]);
    expect((await s.listMessages(a.id, { limit: 10, order: "asc" })).map((m) => m.id)).toEqual([
      m1.id,
      m2.id,
      m3.id,
    ]);
    expect((await s.listMessages(a.id, { limit: 2, order: "desc" })).map((m) => m.id)).toEqual([
      m3.id,
      m2.id,
    ]);
    expect((await s.listRunMessages("run-1", { limit: 10, order: "asc" })).map((m) => m.id)).toEqual([
      m1.id,
      m2.id,
    ]);
    expect(await s.countMessages(a.id)).toBe(3);
    await s.commit([{ op: "delete_agent_messages", agent_id: a.id, except_ids: [m2.id] }]);
    expect((await s.listMessages(a.id, { limit: 10, order: "asc" })).map((m) => m.id)).toEqual([m2.id]);
    expect(await code(s.commit([{ op: "put_message", message: message("agent-none", "x") }]))).toBe(
      "AGENT_NOT_FOUND",
    );

    const run = {
      id: "run-1",
      agent_id: a.id,
      status: "running" as const,
      stop_reason: null,
      background: false,
      metadata: {},
      request_config: null,
      usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3, step_count: 1 },
      error: null,
      created_at_ms: 1,
      completed_at_ms: null,
    };
    await s.commit([{ op: "put_run", run }]);
    await s.commit([
      { op: "put_run", run: { ...run, status: "completed", stop_reason: "end_turn", completed_at_ms: 9 } },
    ]);
    expect((await s.getRun("run-1"))!.status).toBe("completed");
    expect((await s.listRuns(a.id, { limit: 10, order: "desc" })).map((r) => r.id)).toEqual(["run-1"]);
    const step = {
      id: "step-1",
      run_id: "run-1",
      agent_id: a.id,
      provider: "openai",
      model: "m",
      stop_reason: null,
      usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
      created_at_ms: 1,
    };
    await s.commit([{ op: "put_step", step }]);
    expect(await s.listSteps("run-1")).toEqual([step]);
    // Like messages and runs, a step must name an existing agent (the SQL schemas' foreign key;
    // the memory engine took it unchecked, and PostgreSQL failed with its raw FK error).
    expect(
      await code(s.commit([{ op: "put_step", step: { ...step, id: "step-2", agent_id: "agent-none" } }])),
    ).toBe("AGENT_NOT_FOUND");
    expect(
      await code(s.commit([{ op: "put_run", run: { ...run, id: "run-2", agent_id: "agent-none" } }])),
    ).toBe("AGENT_NOT_FOUND");
  });

  it("stores MCP servers with unique names", async () => {
    const server = {
      id: id("mcp_server"),
      server_name: "everything",
      mcp_server_type: "stdio" as const,
      config: { command: "npx", args: ["-y", "x"], env: { A: "1" } },
      created_at_ms: 1,
      updated_at_ms: 1,
    };
    await s.commit([{ op: "put_mcp_server", server, create: true }]);
    expect(await s.getMcpServer(server.id)).toEqual(server);
    expect(
      await code(
        s.commit([{ op: "put_mcp_server", server: { ...server, id: id("mcp_server") }, create: true }]),
      ),
    ).toBe("CONFLICT");
    await s.commit([{ op: "put_mcp_server", server: { ...server, server_name: "renamed" }, create: false }]);
    expect((await s.listMcpServers()).map((x) => x.server_name)).toEqual(["renamed"]);
    await s.commit([{ op: "delete_mcp_server", server_id: server.id }]);
    expect(await s.getMcpServer(server.id)).toBeNull();
    expect(await code(s.commit([{ op: "delete_mcp_server", server_id: server.id }]))).toBe("NOT_FOUND");
  });

  it("stores API key hashes (unique), audit entries in order, and sums core memory", async () => {
    await s.commit([
      { op: "put_api_key", key: { id: "key-1", name: "ci", key_sha256: "ab".repeat(32), created_at_ms: 1 } },
    ]);
    expect(
      await code(
        s.commit([
          {
            op: "put_api_key",
            key: { id: "key-2", name: "x", key_sha256: "ab".repeat(32), created_at_ms: 2 },
          },
        ]),
      ),
    ).toBe("CONFLICT");
    expect((await s.listApiKeys()).map((k) => k.id)).toEqual(["key-1"]);
    for (const i of [1, 2, 3]) {
      await s.commit([
        {
          op: "put_audit",
          entry: {
            id: `audit-${i}`,
            at_ms: i,
            actor: "a",
            action: "tool.execute",
            target: "t",
            detail: { i },
          },
        },
      ]);
    }
    expect((await s.listAudit({ limit: 2, order: "desc" })).map((e) => e.id)).toEqual(["audit-3", "audit-2"]);
    const before = await s.coreMemoryChars();
    await s.commit([{ op: "put_block", block: block({ value: "12345" }), create: true }]);
    expect(await s.coreMemoryChars()).toBe(before + 5);
  });

  it("keeps conversations per agent: create rules, listing, update, delete, and deletion with the agent", async () => {
    const a = agent();
    const other = agent();
    await s.commit([
      { op: "put_agent", agent: a, create: true },
      { op: "put_agent", agent: other, create: true },
    ]);
    const conv = (over: object = {}) => ({
      id: id("conv"),
      agent_id: a.id,
      summary: null,
      model: null,
      in_context_message_ids: [],
      created_at_ms: 1,
      updated_at_ms: 1,
      ...over,
    });
    const c1 = conv();
    const c2 = conv({ summary: "two" });
    const c3 = conv({ agent_id: other.id });
    await s.commit([{ op: "put_conversation", conversation: c1, create: true }]);
    await s.commit([{ op: "put_conversation", conversation: c2, create: true }]);
    await s.commit([{ op: "put_conversation", conversation: c3, create: true }]);
    await expect(
      s.commit([{ op: "put_conversation", conversation: c1, create: true }]),
    ).rejects.toMatchObject({
      code: "CONFLICT",
    });
    await expect(
      s.commit([{ op: "put_conversation", conversation: conv({ agent_id: "agent-missing" }), create: true }]),
    ).rejects.toMatchObject({ code: "AGENT_NOT_FOUND" });
    await expect(
      s.commit([{ op: "put_conversation", conversation: conv(), create: false }]),
    ).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
    await s.commit([
      {
        op: "put_conversation",
        conversation: { ...c1, in_context_message_ids: ["message-1"] },
        create: false,
      },
    ]);
    expect((await s.getConversation(c1.id))!.in_context_message_ids).toEqual(["message-1"]);
    expect((await s.listConversations(a.id, { limit: 10, order: "asc" })).map((c) => c.id)).toEqual([
      c1.id,
      c2.id,
    ]);
    expect((await s.listConversations(a.id, { limit: 1, order: "desc" })).map((c) => c.id)).toEqual([c2.id]);
    expect(
      (await s.listConversations(a.id, { limit: 10, order: "asc", after: c1.id })).map((c) => c.id),
    ).toEqual([c2.id]);
    await s.commit([{ op: "delete_conversation", conversation_id: c2.id }]);
    await expect(s.commit([{ op: "delete_conversation", conversation_id: c2.id }])).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
    await s.commit([{ op: "delete_agent", agent_id: a.id }]);
    expect(await s.getConversation(c1.id)).toBeNull();
    expect((await s.getConversation(c3.id))!.agent_id).toBe(other.id);
  });

  it("lists unfinished runs (created or running) per agent or of all, oldest first, up to a limit", async () => {
    const a = agent();
    const b = agent();
    await s.commit([
      { op: "put_agent", agent: a, create: true },
      { op: "put_agent", agent: b, create: true },
    ]);
    const run = (runId: string, agentId: string, status: RunRecord["status"]): RunRecord => ({
      id: runId,
      agent_id: agentId,
      status,
      stop_reason: null,
      background: false,
      metadata: {},
      request_config: null,
      usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, step_count: 0 },
      error: null,
      created_at_ms: 1,
      completed_at_ms: null,
    });
    await s.commit([
      { op: "put_run", run: run("run-a1", a.id, "running") },
      { op: "put_run", run: run("run-b1", b.id, "created") },
      { op: "put_run", run: run("run-a2", a.id, "completed") },
      { op: "put_run", run: run("run-a3", a.id, "created") },
      { op: "put_run", run: run("run-a4", a.id, "failed") },
      { op: "put_run", run: run("run-a5", a.id, "cancelled") },
    ]);
    const ids = (runs: RunRecord[]) => runs.map((r) => r.id);
    expect(ids(await s.listUnfinishedRuns(a.id, 10))).toEqual(["run-a1", "run-a3"]);
    expect(ids(await s.listUnfinishedRuns(undefined, 10))).toEqual(["run-a1", "run-b1", "run-a3"]);
    expect(ids(await s.listUnfinishedRuns(undefined, 2))).toEqual(["run-a1", "run-b1"]);
    await s.commit([{ op: "put_run", run: { ...run("run-a1", a.id, "failed"), completed_at_ms: 2 } }]);
    expect(ids(await s.listUnfinishedRuns(a.id, 10))).toEqual(["run-a3"]);
  });

  it("round-trips every JSON value through working memory exactly, strings that look like JSON included", async () => {
    const a = agent();
    await s.commit([{ op: "put_agent", agent: a, create: true }]);
    const values: unknown[] = [
      "abc",
      "[1, 2]",
      '{"a":1}',
      "null",
      "",
      '"quoted"',
      "1",
      0,
      -1.5,
      true,
      false,
      null,
      [1, "two", null, [3]],
      { nested: { s: "[1, 2]", n: 1 } },
    ];
    for (const [i, value] of values.entries()) {
      const key = `k${i}`;
      const entry = { agent_id: a.id, key, value, size_bytes: 1, expires_at_ms: null, updated_at_ms: 1 };
      await s.commit([{ op: "put_working", entry, limits: { keys_max: 100, bytes_max: 100 } }]);
      expect((await s.tiers.getWorking(a.id, key))!.value, `value ${JSON.stringify(value)}`).toStrictEqual(
        value,
      );
    }
    const listed = await s.tiers.listWorking(a.id);
    expect(new Map(listed.map((e) => [e.key, e.value]))).toStrictEqual(
      new Map(values.map((v, i) => [`k${i}`, v])),
    );
  });

  const LIMITS = { keys_max: 3, bytes_max: 100 };
  const working = (
    agentId: string,
    key: string,
    over: Partial<WorkingMemoryEntry> = {},
  ): WorkingMemoryEntry => ({
    agent_id: agentId,
    key,
    value: key,
    size_bytes: 10,
    expires_at_ms: null,
    updated_at_ms: 1_000,
    ...over,
  });
  const putWorking = (entry: WorkingMemoryEntry, fence?: { agent_id: string; token: number }) =>
    s.commit([{ op: "put_working", entry, limits: LIMITS }], fence ? { fence } : undefined);

  it("checks working-memory limits inside put_working, over live entries only", async () => {
    const a = agent();
    await putAgent(a);
    await putWorking(working(a.id, "k1"));
    await putWorking(working(a.id, "k2", { expires_at_ms: 500 })); // expired at 1000: does not count
    await putWorking(working(a.id, "k3"));
    await putWorking(working(a.id, "k4"));
    expect(await code(putWorking(working(a.id, "k5")))).toBe("BAD_REQUEST");
    await putWorking(working(a.id, "k1", { size_bytes: 80 })); // replacing a key: not one more
    const tooBig = await putWorking(working(a.id, "k3", { size_bytes: 11 })).catch((e: KelpieError) => e);
    expect(tooBig).toMatchObject({ code: "BAD_REQUEST", message: expect.stringContaining("101 bytes") });
    // k2 expired, so putting it again is one more live key.
    expect(await code(putWorking(working(a.id, "k2", { expires_at_ms: 2_000 })))).toBe("BAD_REQUEST");
    await s.commit([{ op: "delete_working", agent_id: a.id, key: "k4" }]);
    await s.commit([{ op: "delete_working", agent_id: a.id, key: "k4" }]); // absent: no-op
    await putWorking(working(a.id, "k2", { expires_at_ms: 2_000 }));
    expect((await s.tiers.listWorking(a.id)).map((e) => e.key)).toEqual(["k1", "k2", "k3"]);
    // An entry that expires later counts until then, and no longer after.
    expect(await code(putWorking(working(a.id, "k9")))).toBe("BAD_REQUEST");
    await putWorking(working(a.id, "k9", { updated_at_ms: 2_000 }));
    expect(await code(putWorking(working("agent-none", "k")))).toBe("AGENT_NOT_FOUND");
    // All or nothing, with the rest of the commit.
    const failing: Mutation[] = [
      { op: "delete_working", agent_id: a.id, key: "k1" },
      { op: "attach_block", agent_id: a.id, block_id: "block-none" },
    ];
    expect(await code(s.commit(failing))).toBe("BLOCK_NOT_FOUND");
    expect(await s.tiers.getWorking(a.id, "k1")).not.toBeNull();
    await s.commit([{ op: "delete_agent", agent_id: a.id }]);
    expect(await s.tiers.listWorking(a.id)).toEqual([]);
  });

  it("lets concurrent working-memory puts pass a limit only together with nothing", async () => {
    const a = agent();
    await putAgent(a);
    const token = await s.acquireFence(a.id);
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => putWorking(working(a.id, `c${i}`), { agent_id: a.id, token })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(LIMITS.keys_max);
    expect(await s.tiers.listWorking(a.id)).toHaveLength(LIMITS.keys_max);
  });

  it("patches only a conversation's given fields, keeping its context ids", async () => {
    const a = agent();
    await putAgent(a);
    const c = {
      id: id("conv"),
      agent_id: a.id,
      summary: "s",
      model: "m",
      in_context_message_ids: ["message-1"],
      created_at_ms: 1,
      updated_at_ms: 1,
    };
    await s.commit([{ op: "put_conversation", conversation: c, create: true }]);
    await s.commit([
      {
        op: "put_conversation",
        conversation: { ...c, in_context_message_ids: ["message-1", "message-2"] },
        create: false,
      },
      { op: "patch_conversation", conversation_id: c.id, summary: "new", updated_at_ms: 9 },
    ]);
    await s.commit([{ op: "patch_conversation", conversation_id: c.id, model: null, updated_at_ms: 10 }]);
    expect(await s.getConversation(c.id)).toEqual({
      ...c,
      summary: "new",
      model: null,
      in_context_message_ids: ["message-1", "message-2"],
      updated_at_ms: 10,
    });
    expect(
      await code(s.commit([{ op: "patch_conversation", conversation_id: "conv-none", updated_at_ms: 1 }])),
    ).toBe("NOT_FOUND");
  });

  const archive = (over: Partial<ArchiveRecord> = {}): ArchiveRecord => ({
    id: id("archive"),
    name: "arch",
    description: null,
    embedding_config: { embedding_dim: 2 },
    metadata: {},
    owner_agent_id: null,
    created_at_ms: 1,
    updated_at_ms: 1,
    ...over,
  });
  const passage = (archiveId: string, text: string): { passage: PassageRecord; vector: Float32Array } => ({
    passage: {
      id: id("passage"),
      archive_id: archiveId,
      text,
      tags: ["t"],
      metadata: {},
      created_at_ms: 1,
      updated_at_ms: 1,
    },
    vector: new Float32Array([1, 0.5]),
  });

  it("writes archives, attachments and passages with their vectors through commit", async () => {
    const a = agent();
    await putAgent(a);
    const ar = archive({ owner_agent_id: a.id });
    const p1 = passage(ar.id, "first words");
    const p2 = passage(ar.id, "second words");
    await s.commit([
      { op: "put_archive", archive: ar, create: true },
      { op: "attach_archive", agent_id: a.id, archive_id: ar.id },
      { op: "attach_archive", agent_id: a.id, archive_id: ar.id }, // attached: no-op
      { op: "insert_passages", rows: [p1, p2] },
    ]);
    expect(await code(s.commit([{ op: "put_archive", archive: ar, create: true }]))).toBe("CONFLICT");
    expect(await code(s.commit([{ op: "put_archive", archive: archive(), create: false }]))).toBe(
      "NOT_FOUND",
    );
    await s.commit([{ op: "put_archive", archive: { ...ar, name: "renamed" }, create: false }]);
    expect((await s.tiers.getArchive(ar.id))!.name).toBe("renamed");
    await s.commit([{ op: "patch_archive", archive_id: ar.id, description: "d", updated_at_ms: 7 }]);
    await s.commit([{ op: "patch_archive", archive_id: ar.id, name: "patched", updated_at_ms: 8 }]);
    expect(await s.tiers.getArchive(ar.id)).toEqual({
      ...ar,
      name: "patched",
      description: "d",
      updated_at_ms: 8,
    });
    expect(
      (await s.tiers.listArchives({ limit: 10, order: "asc", name: "patched" })).map((x) => x.id),
    ).toEqual([ar.id]);
    expect(
      await code(s.commit([{ op: "patch_archive", archive_id: "archive-none", updated_at_ms: 1 }])),
    ).toBe("NOT_FOUND");
    expect((await s.tiers.listAgentArchives(a.id)).map((x) => x.id)).toEqual([ar.id]);
    const seqs = await s.tiers.passageSeqs([p1.passage.id, p2.passage.id, "passage-none"]);
    expect([...seqs.keys()]).toEqual(expect.arrayContaining([p1.passage.id, p2.passage.id]));
    expect(seqs.size).toBe(2);
    const vectors = await s.tiers.getPassageVectorsBySeq([seqs.get(p1.passage.id)!]);
    expect([...vectors.values()][0]).toEqual(new Float32Array([1, 0.5]));
    expect(await s.tiers.getPassage(p2.passage.id)).toEqual(p2.passage);
    // A batch is all or nothing: a duplicate id, or a missing archive, inserts none of it.
    const p3 = passage(ar.id, "third");
    expect(await code(s.commit([{ op: "insert_passages", rows: [p3, p1] }]))).toBe("CONFLICT");
    expect(await code(s.commit([{ op: "insert_passages", rows: [p3, passage("archive-none", "x")] }]))).toBe(
      "NOT_FOUND",
    );
    expect(await s.tiers.getPassage(p3.passage.id)).toBeNull();
    await s.commit([{ op: "delete_passage", passage_id: p1.passage.id }]);
    expect(await code(s.commit([{ op: "delete_passage", passage_id: p1.passage.id }]))).toBe("NOT_FOUND");
    expect(await s.tiers.countPassages([ar.id])).toBe(1);
    expect(await code(s.commit([{ op: "attach_archive", agent_id: "agent-none", archive_id: ar.id }]))).toBe(
      "AGENT_NOT_FOUND",
    );
    expect(await code(s.commit([{ op: "attach_archive", agent_id: a.id, archive_id: "archive-none" }]))).toBe(
      "NOT_FOUND",
    );
    await s.commit([{ op: "detach_archive", agent_id: a.id, archive_id: ar.id }]);
    await s.commit([{ op: "detach_archive", agent_id: a.id, archive_id: ar.id }]); // absent: no-op
    expect(await s.tiers.listAgentArchives(a.id)).toEqual([]);
    await s.commit([{ op: "delete_archive", archive_id: ar.id }]);
    expect(await s.tiers.getArchive(ar.id)).toBeNull();
    expect(await s.tiers.getPassage(p2.passage.id)).toBeNull();
    expect(await code(s.commit([{ op: "delete_archive", archive_id: ar.id }]))).toBe("NOT_FOUND");
  });

  it("lists archives by cursor, name and agent, and agents of an archive in creation order", async () => {
    const a = agent();
    const b = agent();
    await putAgent(a);
    await putAgent(b);
    const [x, y, z] = [archive({ name: "same" }), archive({ name: "other" }), archive({ name: "same" })];
    await s.commit([
      { op: "put_archive", archive: x, create: true },
      { op: "put_archive", archive: y, create: true },
      { op: "put_archive", archive: z, create: true },
      // Attached in the order z, x: that is the agent's order; b is attached to x before a.
      { op: "attach_archive", agent_id: a.id, archive_id: z.id },
      { op: "attach_archive", agent_id: b.id, archive_id: x.id },
      { op: "attach_archive", agent_id: a.id, archive_id: x.id },
    ]);
    const page = async (q: Partial<Parameters<Storage["tiers"]["listArchives"]>[0]>) =>
      (await s.tiers.listArchives({ limit: 10, order: "asc", ...q }))
        .map((r) => r.id)
        .filter((i) => [x.id, y.id, z.id].includes(i));
    expect(await page({})).toEqual([x.id, y.id, z.id]);
    expect(await page({ order: "desc" })).toEqual([z.id, y.id, x.id]);
    expect(await page({ after: x.id })).toEqual([y.id, z.id]);
    expect(await page({ before: z.id, order: "desc" })).toEqual([]);
    expect(await page({ name: "same" })).toEqual([x.id, z.id]);
    expect(await page({ agent_id: a.id })).toEqual([x.id, z.id]);
    expect(await page({ agent_id: a.id, name: "other" })).toEqual([]);
    const err = await s.tiers.listArchives({ limit: 1, order: "asc", after: "archive-none" }).catch((e) => e);
    expect(err).toMatchObject({ code: "VALIDATION", issues: [{ loc: ["query", "after"] }] });
    expect((await s.tiers.listAgentArchives(a.id)).map((r) => r.id)).toEqual([z.id, x.id]);
    expect(await s.tiers.listArchiveAgentIds(x.id)).toEqual([a.id, b.id]);
    expect(await s.tiers.listArchiveAgentIds(y.id)).toEqual([]);
  });

  it("reads passages by seq, lists, counts, scans and searches them per archive", async () => {
    const ar = archive();
    const other = archive();
    const rows = [
      passage(ar.id, "Ocean waves crash"),
      passage(ar.id, "the river meets the ocean"),
      passage(ar.id, "mountain air"),
      passage(other.id, "ocean far away"),
    ];
    rows[2]!.passage.tags = ["x", "y"];
    rows[2]!.vector = new Float32Array([0.25, -2]);
    const before = await s.tiers.archivalChars();
    await s.commit([
      { op: "put_archive", archive: ar, create: true },
      { op: "put_archive", archive: other, create: true },
      { op: "insert_passages", rows },
    ]);
    const [p1, p2, p3, p4] = rows.map((r) => r.passage) as [
      PassageRecord,
      PassageRecord,
      PassageRecord,
      PassageRecord,
    ];
    expect(await s.tiers.archivalChars()).toBe(before + rows.reduce((n, r) => n + r.passage.text.length, 0));
    const seqs = await s.tiers.passageSeqs(rows.map((r) => r.passage.id));
    const seq = (p: PassageRecord) => seqs.get(p.id)!;
    // Seqs grow in insertion order.
    expect(seq(p1) < seq(p2) && seq(p2) < seq(p3) && seq(p3) < seq(p4)).toBe(true);
    const bySeq = await s.tiers.getPassagesBySeq([seq(p3), seq(p1), 987_654_321]);
    expect(bySeq).toEqual(
      new Map([
        [seq(p3), p3],
        [seq(p1), p1],
      ]),
    );
    const ids = (list: PassageRecord[]) => list.map((p) => p.id);
    const list = (q: Partial<Parameters<Storage["tiers"]["listPassages"]>[1]> = {}, archives = [ar.id]) =>
      s.tiers.listPassages(archives, { limit: 10, order: "asc", ...q }).then(ids);
    expect(await list()).toEqual([p1.id, p2.id, p3.id]);
    expect(await list({ order: "desc", limit: 2 })).toEqual([p3.id, p2.id]);
    expect(await list({ after: p1.id })).toEqual([p2.id, p3.id]);
    expect(await list({ before: p3.id, order: "desc" })).toEqual([]);
    expect(await list({ search: "OCEAN" })).toEqual([p1.id, p2.id]);
    expect(await list({}, [ar.id, other.id])).toEqual([p1.id, p2.id, p3.id, p4.id]);
    expect(await list({}, [])).toEqual([]);
    const err = await s.tiers
      .listPassages([ar.id], { limit: 1, order: "asc", before: "passage-none" })
      .catch((e) => e);
    expect(err).toMatchObject({ code: "VALIDATION", issues: [{ loc: ["query", "before"] }] });
    expect(await s.tiers.countPassages([ar.id, other.id])).toBe(4);
    expect(await s.tiers.countPassages([])).toBe(0);

    const scanned = await s.tiers.scanPassageVectors(ar.id, seq(p1), 10);
    expect(scanned).toEqual([
      { seq: seq(p2), id: p2.id, created_at_ms: 1, tags: ["t"], vector: new Float32Array([1, 0.5]) },
      { seq: seq(p3), id: p3.id, created_at_ms: 1, tags: ["x", "y"], vector: new Float32Array([0.25, -2]) },
    ]);
    expect(await s.tiers.scanPassageVectors(ar.id, 0, 1)).toHaveLength(1);
    expect(await s.tiers.scanPassageMeta(ar.id, seq(p1), 10)).toEqual([
      { seq: seq(p2), created_at_ms: 1, tags: ["t"] },
      { seq: seq(p3), created_at_ms: 1, tags: ["x", "y"] },
    ]);
    expect(await s.tiers.getPassageVectorsBySeq([seq(p3)])).toEqual(
      new Map([[seq(p3), new Float32Array([0.25, -2])]]),
    );

    // Any word matches; a passage with more of them ranks first; other archives stay out.
    const search = (q: string, limit = 10) =>
      s.tiers.searchPassagesText([ar.id], q, limit).then((r) => r.map((x) => x.seq));
    expect(await search("river ocean")).toEqual([seq(p2), seq(p1)]);
    expect(await search("river ocean", 1)).toEqual([seq(p2)]);
    expect(await search("mountain")).toEqual([seq(p3)]);
    expect(await search("the and of")).toEqual([]); // stop words only
    expect(await s.tiers.searchPassagesText([], "ocean", 10)).toEqual([]);
  });

  it("refuses a passage batch that repeats an id, and sums working-memory bytes", async () => {
    const ar = archive();
    await s.commit([{ op: "put_archive", archive: ar, create: true }]);
    const p = passage(ar.id, "twice");
    expect(await code(s.commit([{ op: "insert_passages", rows: [p, p] }]))).toBe("CONFLICT");
    expect(await s.tiers.getPassage(p.passage.id)).toBeNull();

    const a = agent();
    await putAgent(a);
    const before = await s.tiers.workingBytes();
    await putWorking(working(a.id, "w1", { size_bytes: 7 }));
    await putWorking(working(a.id, "w2", { size_bytes: 5, expires_at_ms: 1 })); // expired, still stored
    expect(await s.tiers.workingBytes()).toBe(before + 12);
    expect((await s.tiers.getWorking(a.id, "w2"))!.expires_at_ms).toBe(1);
    await putWorking(working(a.id, "w1", { size_bytes: 3 }));
    expect(await s.tiers.workingBytes()).toBe(before + 8);
  });

  it("deletes an agent with the archives only it used, in one commit", async () => {
    const a = agent();
    const b = agent();
    await putAgent(a);
    await putAgent(b);
    const own = archive({ owner_agent_id: a.id });
    const shared = archive({ owner_agent_id: a.id });
    await s.commit([
      { op: "put_archive", archive: own, create: true },
      { op: "put_archive", archive: shared, create: true },
      { op: "attach_archive", agent_id: a.id, archive_id: own.id },
      { op: "attach_archive", agent_id: a.id, archive_id: shared.id },
      { op: "attach_archive", agent_id: b.id, archive_id: shared.id },
      { op: "insert_passages", rows: [passage(own.id, "mine")] },
    ]);
    await putWorking(working(a.id, "k"));
    // A failing commit deletes nothing at all.
    const failing: Mutation[] = [
      { op: "delete_agent", agent_id: a.id },
      { op: "delete_unattached_archives", archive_ids: [own.id, shared.id, "archive-none"] },
      { op: "delete_block", block_id: "block-none" },
    ];
    expect(await code(s.commit(failing))).toBe("BLOCK_NOT_FOUND");
    expect(await s.getAgent(a.id)).not.toBeNull();
    expect(await s.tiers.getArchive(own.id)).not.toBeNull();
    expect((await s.tiers.listAgentArchives(a.id)).map((x) => x.id)).toEqual([own.id, shared.id]);
    expect(await s.tiers.getWorking(a.id, "k")).not.toBeNull();
    await s.commit(failing.slice(0, 2));
    expect(await s.getAgent(a.id)).toBeNull();
    expect(await s.tiers.getArchive(own.id)).toBeNull();
    expect(await s.tiers.countPassages([own.id])).toBe(0);
    expect(await s.tiers.getArchive(shared.id)).not.toBeNull();
    expect(await s.tiers.listArchiveAgentIds(shared.id)).toEqual([b.id]);
    expect(await s.tiers.getWorking(a.id, "k")).toBeNull();
  });

  it("keeps the first response stored under an Idempotency-Key", async () => {
    const key = `POST /v1/agents/ k-${Math.random()}`;
    expect(await s.getIdempotent(key)).toBeNull();
    await s.commit([
      { op: "put_idempotent", response: { key, status_code: 200, body: '{"id":"first"}', created_at_ms: 5 } },
    ]);
    await s.commit([
      {
        op: "put_idempotent",
        response: { key, status_code: 201, body: '{"id":"second"}', created_at_ms: 6 },
      },
    ]);
    expect(await s.getIdempotent(key)).toEqual({
      key,
      status_code: 200,
      body: '{"id":"first"}',
      created_at_ms: 5,
    });
  });

  it("keeps outbox entries per sender: create rules, order, the per-agent limit, idempotent delete, deletion with the agent", async () => {
    const a = agent();
    const b = agent();
    await s.commit([
      { op: "put_agent", agent: a, create: true },
      { op: "put_agent", agent: b, create: true },
    ]);
    const entry = (over: Partial<OutboxRecord> = {}): OutboxRecord => ({
      id: id("outbox"),
      agent_id: a.id,
      target_agent_id: b.id,
      text: "hello",
      call_depth: 0,
      attempts: 0,
      last_error: null,
      next_attempt_at_ms: 1,
      created_at_ms: 1,
      ...over,
    });
    const e1 = entry();
    const e2 = entry({ text: "second" });
    const fromB = entry({ agent_id: b.id, target_agent_id: a.id });
    const token = await s.acquireFence(a.id);
    await s.commit([{ op: "put_outbox", entry: e1, create: true }], { fence: { agent_id: a.id, token } });
    await s.commit([{ op: "put_outbox", entry: fromB, create: true }]);
    await s.commit([{ op: "put_outbox", entry: e2, create: true }]);
    await expect(s.commit([{ op: "put_outbox", entry: e1, create: true }])).rejects.toMatchObject({
      code: "CONFLICT",
    });
    await expect(s.commit([{ op: "put_outbox", entry: entry(), create: false }])).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
    await expect(
      s.commit([{ op: "put_outbox", entry: entry({ agent_id: id("agent") }), create: true }]),
    ).rejects.toMatchObject({ code: "AGENT_NOT_FOUND" });
    expect(await s.listOutbox(a.id, 10)).toEqual([e1, e2]);
    expect(await s.listOutbox(a.id, 1)).toEqual([e1]);
    expect(await s.getOutboxEntry(e2.id)).toEqual(e2);
    expect(await s.getOutboxEntry(id("outbox"))).toBeNull();
    expect(await s.countOutbox(a.id)).toBe(2);
    const senders = (await s.listOutboxSenders(1_000)).filter((x) => x === a.id || x === b.id);
    expect(senders).toEqual([a.id, b.id]);

    const retried = { ...e1, attempts: 1, last_error: "busy", next_attempt_at_ms: 99 };
    await s.commit([{ op: "put_outbox", entry: retried, create: false }]);
    expect(await s.listOutbox(a.id, 10)).toEqual([retried, e2]);

    // Delivered twice (two deliverers): the second delete is a no-op, not an error.
    await s.commit([{ op: "delete_outbox", entry_id: e1.id }]);
    await s.commit([{ op: "delete_outbox", entry_id: e1.id }]);
    expect(await s.listOutbox(a.id, 10)).toEqual([e2]);

    await s.commit([{ op: "delete_agent", agent_id: a.id }]);
    expect(await s.listOutbox(a.id, 10)).toEqual([]);
    expect(await s.countOutbox(a.id)).toBe(0);
    expect(await s.listOutbox(b.id, 10)).toEqual([fromB]);
  });

  it("refuses an outbox entry past OUTBOX_ENTRIES_PER_AGENT_MAX inside the commit, whole", async () => {
    const a = agent();
    const b = agent();
    await s.commit([
      { op: "put_agent", agent: a, create: true },
      { op: "put_agent", agent: b, create: true },
    ]);
    const entry = (): OutboxRecord => ({
      id: id("outbox"),
      agent_id: a.id,
      target_agent_id: b.id,
      text: "x",
      call_depth: 0,
      attempts: 0,
      last_error: null,
      next_attempt_at_ms: 0,
      created_at_ms: 0,
    });
    const full = Array.from({ length: OUTBOX_ENTRIES_PER_AGENT_MAX }, entry);
    await s.commit(full.map((e): Mutation => ({ op: "put_outbox", entry: e, create: true })));
    const renamed = { ...a, name: "renamed with the refused entry" };
    await expect(
      s.commit([
        { op: "put_agent", agent: renamed, create: false },
        { op: "put_outbox", entry: entry(), create: true },
      ]),
    ).rejects.toMatchObject({ code: "OUTBOX_FULL" });
    expect((await s.getAgent(a.id))!.name).toBe(a.name);
    expect(await s.countOutbox(a.id)).toBe(OUTBOX_ENTRIES_PER_AGENT_MAX);
    // Room again once one is delivered.
    await s.commit([
      { op: "delete_outbox", entry_id: full[0]!.id },
      { op: "put_outbox", entry: entry(), create: true },
    ]);
    expect(await s.countOutbox(a.id)).toBe(OUTBOX_ENTRIES_PER_AGENT_MAX);
  });
}
