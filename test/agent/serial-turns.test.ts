// Turns are serial per agent, through a real server and a fake model over HTTP: a second send to
// one agent waits for the first turn to end (its model sees the whole first turn; the history is
// never interleaved), a full queue is a 429 with Retry-After, a queued turn can be cancelled, and
// agents calling each other at once still finish (the turn gate lets a call into a suspended turn).
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";

let fake: FakeLlm;
let t: TestApp | undefined;

beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
afterEach(async () => {
  await t?.kelpie.close();
  t = undefined;
});

async function start(options: { turnsQueuedPerAgentMax?: number } = {}): Promise<TestApp> {
  fake.reset();
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
    ...options,
  });
  return t;
}

const userTexts = (req: ScriptRequest) => req.messages.filter((m) => m.role === "user").map((m) => m.text);
const lastUser = (req: ScriptRequest) => userTexts(req).at(-1) ?? "";
const callsSinceUser = (req: ScriptRequest) => {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  return req.messages.slice(i + 1).filter((m) => m.role === "assistant" && m.toolCalls.length > 0).length;
};
const toolResultsSinceUser = (req: ScriptRequest) => {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  return req.messages.slice(i + 1).filter((m) => m.role === "tool");
};
const say = (message: string) => ({ toolCalls: [{ name: "send_message", args: { message } }] });
const call = (name: string, args: Record<string, unknown>) => ({
  toolCalls: [{ name, args: { ...args, request_heartbeat: true } }],
});

async function agent(app: TestApp, name: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await app.req("POST", "/v1/agents/", {
    name,
    model: "openai/gpt-4o-mini",
    agent_type: "memgpt_agent",
    memory_blocks: [
      { label: "persona", value: `I am ${name}.` },
      { label: "human", value: "" },
    ],
    ...extra,
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.id as string;
}

async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("turns of one agent", () => {
  it("run one after the other: the second turn's model sees all of the first, and the history is not interleaved", async () => {
    const app = await start();
    // Each turn has three steps (two memory edits, then a reply), each model call 40 ms: before the
    // gate, the second turn's steps ran between the first's.
    const seen: { user: string; step: number; users: string[]; replies: string[] }[] = [];
    fake.script((req) => {
      const user = lastUser(req);
      const step = callsSinceUser(req);
      seen.push({
        user,
        step,
        users: userTexts(req),
        replies: req.messages.flatMap((m) =>
          m.toolCalls.filter((c) => c.name === "send_message").map((c) => JSON.parse(c.args).message),
        ),
      });
      const reply =
        step < 2
          ? call("core_memory_append", { label: "human", content: `${user}.${step}` })
          : say(`re ${user}`);
      return { ...reply, delayMs: 40 };
    });
    const id = await agent(app, "solo");
    const sends = ["first", "second"].map((text) =>
      app.req("POST", `/v1/agents/${id}/messages`, { messages: [{ role: "user", content: text }] }),
    );
    // Reads do not wait for turns.
    await until("the first model call", () => seen.length > 0);
    const readStartedMs = performance.now();
    expect((await app.req("GET", `/v1/agents/${id}/messages`)).status).toBe(200);
    expect(performance.now() - readStartedMs).toBeLessThan(1_000);
    const results = await Promise.all(sends);
    for (const res of results) {
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.usage.step_count).toBe(3);
    }
    const [one, two] = seen[0]!.user === "first" ? ["first", "second"] : ["second", "first"];
    expect(seen.map((s) => `${s.user}:${s.step}`)).toEqual([
      `${one}:0`,
      `${one}:1`,
      `${one}:2`,
      `${two}:0`,
      `${two}:1`,
      `${two}:2`,
    ]);
    // No call of the first turn saw the second's input; the second's first call saw the first whole.
    for (const s of seen.filter((s) => s.user === one)) expect(s.users).not.toContain(two);
    const twoBegins = seen.find((s) => s.user === two)!;
    expect(twoBegins.users).toEqual([one, two]);
    expect(twoBegins.replies).toEqual([`re ${one}`]);

    const stored = (await app.req("GET", `/v1/agents/${id}/messages?order=asc&limit=100`)).body;
    const runOf = new Map(results.map((r) => [r.body.usage.run_ids[0], r.body]));
    const runs = stored.map((m: any) => m.run_id).filter((r: string | null) => r !== null && runOf.has(r));
    const firstRun = runs[0];
    const boundary = runs.findIndex((r: string) => r !== firstRun);
    expect(boundary).toBeGreaterThan(0);
    expect(runs.slice(boundary).every((r: string) => r !== firstRun)).toBe(true);
    const userOrder = stored.filter((m: any) => m.message_type === "user_message").map((m: any) => m.content);
    expect(userOrder.slice(-2)).toEqual([one, two]);
    const human = (await app.req("GET", `/v1/agents/${id}/core-memory/blocks/human`)).body.value;
    expect(human).toBe(`\n${one}.0\n${one}.1\n${two}.0\n${two}.1`);
  });

  it("refuses a send past the queue bound with 429 AGENT_BUSY and Retry-After, streaming and async alike; the queued ones then run", async () => {
    const app = await start({ turnsQueuedPerAgentMax: 1 });
    fake.script((req) => ({ ...say(`re ${lastUser(req)}`), delayMs: 300 }));
    const id = await agent(app, "busy");
    const post = (path: string, body: Record<string, unknown>) =>
      app.kelpie.app.inject({
        method: "POST",
        url: `/v1/agents/${id}${path}`,
        headers: { "content-type": "application/json" },
        payload: JSON.stringify(body),
      });
    const running = post("/messages", { input: "one" });
    await until("the first turn's model call", () => fake.requests.length === 1);
    const queued = post("/messages", { input: "two" });
    await until("the second turn to queue", () => app.kelpie.services.messages.turnsQueued(id) === 1);
    for (const [path, body] of [
      ["/messages", { input: "three" }],
      ["/messages", { input: "three", streaming: true }],
      ["/messages/stream", { input: "three" }],
      ["/messages/async", { input: "three" }],
    ] as const) {
      const refused = await post(path, body);
      expect(refused.statusCode, `${path} ${refused.body}`).toBe(429);
      expect(refused.headers["content-type"]).toContain("application/json");
      expect(Number(refused.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      expect(refused.json()).toMatchObject({ code: "AGENT_BUSY", retryable: true });
      expect(refused.json().detail).toMatch(/busy.*1 more are queued \(max 1\)/);
    }
    const [a, b] = await Promise.all([running, queued]);
    expect(a.statusCode).toBe(200);
    expect(b.statusCode).toBe(200);
    const said = (res: typeof a) =>
      res.json().messages.find((m: any) => m.message_type === "assistant_message").content;
    expect([said(a), said(b)]).toEqual(["re one", "re two"]);
    const users = (await app.req("GET", `/v1/agents/${id}/messages?order=asc`)).body
      .filter((m: any) => m.message_type === "user_message")
      .map((m: any) => m.content);
    expect(users).toEqual(["one", "two"]);
  });

  it("a queued turn that is cancelled leaves the queue and never runs", async () => {
    const app = await start();
    fake.script((req) => ({ ...say(`re ${lastUser(req)}`), delayMs: 300 }));
    const id = await agent(app, "cancel");
    const running = app.req("POST", `/v1/agents/${id}/messages`, { input: "keep" });
    await until("the first turn's model call", () => fake.requests.length === 1);
    const run = (await app.req("POST", `/v1/agents/${id}/messages/async`, { input: "drop" })).body;
    expect(app.kelpie.services.messages.turnsQueued(id)).toBe(1);
    const cancelled = await app.req("POST", `/v1/agents/${id}/messages/cancel`, { run_ids: [run.id] });
    expect(Object.keys(cancelled.body)).toEqual([run.id]);
    expect(app.kelpie.services.messages.turnsQueued(id)).toBe(0);
    expect((await running).status).toBe(200);
    await until("the cancelled run to be recorded", () => !app.kelpie.services.messages.isLive(run.id));
    expect((await app.req("GET", `/v1/runs/${run.id}`)).body).toMatchObject({
      status: "cancelled",
      stop_reason: "cancelled",
    });
    expect(fake.requests).toHaveLength(1);
    const users = (await app.req("GET", `/v1/agents/${id}/messages?order=asc`)).body
      .filter((m: any) => m.message_type === "user_message")
      .map((m: any) => m.content);
    expect(users).toEqual(["keep"]);
  });
});

describe("agents calling each other", () => {
  it("A asks B while B asks A, each from its own client request: both finish", async () => {
    const app = await start();
    const ids: Record<string, string> = {};
    const whoAmI = (req: ScriptRequest) => /I am (\w+)\./.exec(req.system)?.[1] ?? "?";
    fake.script((req) => {
      const me = whoAmI(req);
      const other = me === "a" ? "b" : "a";
      const asked = lastUser(req).includes("Incoming message from agent");
      const results = toolResultsSinceUser(req);
      if (asked) return say(`${me} answers ${other}`);
      if (results.length === 0) {
        // Both turns reach their calls while the other's turn is still running.
        return {
          ...call("send_message_to_agent_and_wait_for_reply", { other_agent_id: ids[other], message: "hi" }),
          delayMs: 100,
        };
      }
      return say(`${me} heard ${results[0]!.text}`);
    });
    ids.a = await agent(app, "a", { include_multi_agent_tools: true });
    ids.b = await agent(app, "b", { include_multi_agent_tools: true });
    const [a, b] = await Promise.all([
      app.req("POST", `/v1/agents/${ids.a}/messages`, { input: "start a" }),
      app.req("POST", `/v1/agents/${ids.b}/messages`, { input: "start b" }),
    ]);
    for (const [res, me, other] of [
      [a, "a", "b"],
      [b, "b", "a"],
    ] as const) {
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const said = res.body.messages.find((m: any) => m.message_type === "assistant_message").content;
      expect(said).toContain(`${me} heard`);
      expect(said).toContain(`${other} answers ${me}`);
    }
  });
});
