// Idempotency-Key on message sends, against a real server process on SQLite: a retry of a finished
// turn replays it, concurrent retries share one turn, and a retry after kill -9 in the middle of a
// turn resumes it from its last committed step, so the memory edit it made happens once.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RUN_INTERRUPTED_ERROR } from "../../src/agent/run-recovery.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

/** How long the model "thinks" before its second step, so the test can kill the server then. */
const SLOW_STEP_MS = 60_000;

const lastUserText = (req: ScriptRequest) =>
  [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
const toolCallsSinceUser = (req: ScriptRequest) => {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  return req.messages.slice(i + 1).filter((m) => m.role === "assistant" && m.toolCalls.length > 0).length;
};

async function send(url: string, agentId: string, text: string, key?: string, streaming = false) {
  const res = await fetch(`${url}/v1/agents/${agentId}/messages${streaming ? "/stream" : ""}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key === undefined ? {} : { "idempotency-key": key }) },
    body: JSON.stringify({ messages: [{ role: "user", content: text }] }),
  });
  const raw = await res.text();
  if (streaming) {
    const events = raw
      .split("\n")
      .filter((l) => l.startsWith("data: ") && l !== "data: [DONE]")
      .map((l) => JSON.parse(l.slice(6)));
    return { status: res.status, body: { events } as any };
  }
  return { status: res.status, body: JSON.parse(raw) };
}

describe("Idempotency-Key on POST /v1/agents/{id}/messages (real process)", () => {
  const data = tempDataDir();
  let fake: FakeLlm;
  let server: ServerProcess | undefined;
  /** Second steps of "slow:" turns wait this long; 0 once the test wants them quick. */
  let slowMs = 0;

  beforeAll(async () => {
    fake = await startFakeLlm();
    fake.script((req) => {
      const text = lastUserText(req);
      const item = text.replace(/^(slow: )?remember: /, "");
      if (toolCallsSinceUser(req) === 0) {
        return {
          toolCalls: [
            {
              name: "core_memory_append",
              args: { label: "human", content: `${item};`, request_heartbeat: true },
            },
          ],
        };
      }
      return {
        toolCalls: [{ name: "send_message", args: { message: `noted ${item}` } }],
        ...(text.startsWith("slow: ") && slowMs > 0 ? { delayMs: slowMs } : {}),
      };
    });
  });
  afterEach(() => {
    slowMs = 0;
  });
  afterAll(async () => {
    await server?.kill();
    await fake.close();
    data.remove();
  });

  const env = () => ({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` });
  const block = async (agentId: string) =>
    (await http(server!.url, "GET", `/v1/agents/${agentId}/core-memory/blocks/human`)).body.value as string;
  const newAgent = async () =>
    (
      await http(server!.url, "POST", "/v1/agents/", {
        model: "openai/gpt-4o-mini",
        agent_type: "memgpt_agent",
        memory_blocks: [{ label: "human", value: "log:", limit: 20_000 }],
      })
    ).body.id as string;

  it("replays a finished turn, and joins a turn in flight, without running it again", async () => {
    server = await startServer({ dataDir: data.dir, env: env() });
    const agentId = await newAgent();
    const first = await send(server.url, agentId, "remember: a1", "key-a1");
    expect(first.status).toBe(200);
    const llmCalls = fake.requests.length;
    const again = await send(server.url, agentId, "remember: a1", "key-a1");
    expect(again.status).toBe(200);
    expect(again.body.usage.run_ids).toEqual(first.body.usage.run_ids);
    expect(again.body.messages.map((m: any) => m.id)).toEqual(first.body.messages.map((m: any) => m.id));
    expect(again.body.stop_reason.stop_reason).toBe("end_turn");
    const streamed = await send(server.url, agentId, "remember: a1", "key-a1", true);
    expect(streamed.body.events.filter((e: any) => e.message_type === "assistant_message")).toHaveLength(1);
    expect(fake.requests.length).toBe(llmCalls);

    const [x, y] = await Promise.all([
      send(server.url, agentId, "remember: b2", "key-b2"),
      send(server.url, agentId, "remember: b2", "key-b2"),
    ]);
    expect(x.body.usage.run_ids).toEqual(y.body.usage.run_ids);
    expect(fake.requests.length).toBe(llmCalls + 2);
    // A different key is a different turn.
    await send(server.url, agentId, "remember: a1", "key-a1-again");
    expect((await block(agentId)).split("a1;").length - 1).toBe(2);
    expect((await block(agentId)).split("b2;").length - 1).toBe(1);

    const bad = await send(server.url, agentId, "remember: c", "é".repeat(3));
    expect(bad.status).toBe(422);
    expect(JSON.stringify(bad.body)).toContain("Idempotency-Key");
  });

  it("after kill -9 between two steps of a turn, the retry resumes it: the memory edit happens once", async () => {
    server ??= await startServer({ dataDir: data.dir, env: env() });
    const agentId = await newAgent();
    slowMs = SLOW_STEP_MS;
    const before = fake.requests.length;
    const pending = send(server.url, agentId, "slow: remember: r1", "key-r1").catch(() => null);
    // Wait until the second step's LLM call is in flight: the first step (the append) committed.
    for (let i = 0; i < 200 && fake.requests.length < before + 2; i++)
      await new Promise((r) => setTimeout(r, 25));
    expect(fake.requests.length).toBe(before + 2);
    expect(await block(agentId)).toBe("log:\nr1;");
    await server.kill("SIGKILL");
    expect(await pending).toBeNull();

    slowMs = 0;
    server = await startServer({ dataDir: data.dir, env: env() });
    // The restart marked the cut run failed (interrupted); the retry resumes it all the same.
    const [cut] = (await http(server.url, "GET", `/v1/runs/?agent_id=${agentId}`)).body;
    expect(cut).toMatchObject({ status: "failed", stop_reason: "error", error: RUN_INTERRUPTED_ERROR });
    const retry = await send(server.url, agentId, "slow: remember: r1", "key-r1");
    expect(retry.status).toBe(200);
    expect(retry.body.stop_reason.stop_reason).toBe("end_turn");
    // The response holds the whole turn: the append from before the crash, then the reply.
    const types = retry.body.messages.map((m: any) => m.message_type);
    expect(types).toContain("tool_call_message");
    expect(retry.body.messages.find((m: any) => m.message_type === "assistant_message").content).toBe(
      "noted r1",
    );
    expect(retry.body.usage.step_count).toBe(2);
    expect(await block(agentId)).toBe("log:\nr1;");
    // One user message in the history, not two.
    const history = (await http(server.url, "GET", `/v1/agents/${agentId}/messages?order=asc`)).body;
    expect(history.filter((m: any) => m.message_type === "user_message")).toHaveLength(1);
    const run = (await http(server.url, "GET", `/v1/runs/${retry.body.usage.run_ids[0]}`)).body;
    expect(run).toMatchObject({ status: "completed", stop_reason: "end_turn", error: null });
  });
  it("any other POST with a key answers a retry with the first answer, across a restart", async () => {
    server ??= await startServer({ dataDir: data.dir, env: env() });
    const create = () =>
      fetch(`${server!.url}/v1/agents/`, {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": "create-once" },
        body: JSON.stringify({ name: "only-once", model: "openai/gpt-4o-mini" }),
      });
    const first = await create();
    expect(first.status).toBe(200);
    const created = await first.json();
    await server.kill("SIGKILL");
    server = await startServer({ dataDir: data.dir, env: env() });
    const retry = await create();
    expect(retry.status).toBe(200);
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    expect((await retry.json()).id).toBe(created.id);
    const named = (await http(server.url, "GET", "/v1/agents/?name=only-once")).body;
    expect(named).toHaveLength(1);
    // Failures are not stored: the key stays free for a corrected request.
    const bad = await fetch(`${server.url}/v1/blocks/`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": "block-1" },
      body: JSON.stringify({ label: "x" }),
    });
    expect(bad.status).toBe(422);
    const good = await fetch(`${server.url}/v1/blocks/`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": "block-1" },
      body: JSON.stringify({ label: "x", value: "v" }),
    });
    expect(good.status).toBe(200);
  });
});
