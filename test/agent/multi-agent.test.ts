// Agents talking to agents through the runtime: replies, cycles without deadlock, the depth limit,
// messages to agents matching tags, and async sends through the outbox — all through the fake LLM
// over HTTP.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { localDelivery } from "../../src/agent/outbox.ts";
import { OUTBOX_ENTRIES_PER_AGENT_MAX } from "../../src/core/constants.ts";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { Mutation, OutboxRecord } from "../../src/storage/types.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";

let fake: FakeLlm;
let t: TestApp;

beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(async () => {
  fake.reset();
  t = await testApp(new MemoryStorage(), {
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
  });
});
afterEach(async () => {
  await t.kelpie.close();
});

const lastUser = (req: ScriptRequest) =>
  [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
const toolResultsSinceUser = (req: ScriptRequest) => {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  return req.messages.slice(i + 1).filter((m) => m.role === "tool");
};
const say = (message: string) => ({ toolCalls: [{ name: "send_message", args: { message } }] });
const call = (name: string, args: Record<string, unknown>) => ({
  toolCalls: [{ name, args: { ...args, request_heartbeat: true } }],
});

async function agent(name: string, tags: string[] = []) {
  const res = await t.req("POST", "/v1/agents/", {
    name,
    model: "openai/gpt-4o-mini",
    include_multi_agent_tools: true,
    tags,
    memory_blocks: [{ label: "persona", value: `I am ${name}.` }],
  });
  expect(res.status).toBe(200);
  return res.body.id as string;
}
const whoAmI = (req: ScriptRequest) => /I am (\w+)\./.exec(req.system)?.[1] ?? "?";

describe("multi-agent tools", () => {
  it("one agent asks another and gets its reply as the tool result", async () => {
    const ids: Record<string, string> = {};
    fake.script((req) => {
      const me = whoAmI(req);
      const results = toolResultsSinceUser(req);
      if (me === "alice") {
        if (results.length === 0)
          return call("send_message_to_agent_and_wait_for_reply", {
            other_agent_id: ids.bob,
            message: "what is 2+2?",
          });
        return say(`bob said: ${results[0]!.text}`);
      }
      expect(lastUser(req)).toContain(`Incoming message from agent with ID '${ids.alice}'`);
      return say("four");
    });
    ids.alice = await agent("alice");
    ids.bob = await agent("bob");
    const res = await t.req("POST", `/v1/agents/${ids.alice}/messages`, { input: "ask bob" });
    expect(res.status).toBe(200);
    const said = res.body.messages.find((m: any) => m.message_type === "assistant_message").content;
    expect(said).toContain("four");
    const bobMessages = (await t.req("GET", `/v1/agents/${ids.bob}/messages?order=asc`)).body;
    expect(bobMessages[0].sender_id).toBe(ids.alice);
  });

  it("a cycle (A asks B, B asks A) completes without deadlock", async () => {
    const ids: Record<string, string> = {};
    fake.script((req) => {
      const me = whoAmI(req);
      const results = toolResultsSinceUser(req);
      const asked = lastUser(req).includes("Incoming message from agent");
      if (me === "a" && !asked) {
        if (results.length === 0)
          return call("send_message_to_agent_and_wait_for_reply", { other_agent_id: ids.b, message: "ping" });
        return say(`done: ${results[0]!.text}`);
      }
      if (me === "b") {
        if (results.length === 0)
          return call("send_message_to_agent_and_wait_for_reply", {
            other_agent_id: ids.a,
            message: "who are you?",
          });
        return say(`b heard ${results[0]!.text}`);
      }
      return say("a answers b");
    });
    ids.a = await agent("a");
    ids.b = await agent("b");
    const res = await t.req("POST", `/v1/agents/${ids.a}/messages`, { input: "start" });
    expect(res.status).toBe(200);
    const said = res.body.messages.find((m: any) => m.message_type === "assistant_message").content;
    expect(said).toContain("b heard");
    expect(said).toContain("a answers b");
  });

  it("a runaway chain stops at the call-depth limit with a clear tool error", async () => {
    const ids: Record<string, string> = {};
    let errors = 0;
    fake.script((req) => {
      const results = toolResultsSinceUser(req);
      if (results.length === 0)
        return call("send_message_to_agent_and_wait_for_reply", {
          other_agent_id: ids.loop,
          message: "again",
        });
      if (results[0]!.text.includes("depth limit")) errors++;
      return say("stopped");
    });
    ids.loop = await agent("loop");
    const res = await t.req("POST", `/v1/agents/${ids.loop}/messages`, { input: "go" });
    expect(res.status).toBe(200);
    expect(errors).toBe(1);
  });

  it("messages every agent matching the tags and collects their replies", async () => {
    const ids: Record<string, string> = {};
    fake.script((req) => {
      const me = whoAmI(req);
      const results = toolResultsSinceUser(req);
      if (me === "boss") {
        if (results.length === 0) {
          return call("send_message_to_agents_matching_tags", {
            message: "report",
            match_all: ["team"],
            match_some: ["red", "blue"],
          });
        }
        // The tool result comes packed as Letta packs it: {"status": "OK", "message": ...}.
        return say(JSON.parse(results[0]!.text).message);
      }
      return say(`${me} reporting`);
    });
    ids.boss = await agent("boss", ["team", "red"]);
    await agent("w1", ["team", "red"]);
    await agent("w2", ["team", "blue"]);
    await agent("w3", ["team"]);
    await agent("w4", ["red"]);
    const res = await t.req("POST", `/v1/agents/${ids.boss}/messages`, { input: "collect" });
    const summary = JSON.parse(
      res.body.messages.find((m: any) => m.message_type === "assistant_message").content,
    );
    expect(summary.map((r: any) => r.response[0]).sort()).toEqual(["w1 reporting", "w2 reporting"]);
  });

  it("a slow external tool does not hold the agent's mailbox", async () => {
    const ids: Record<string, string> = {};
    fake.script((req) => {
      const me = whoAmI(req);
      const results = toolResultsSinceUser(req);
      if (me === "caller") {
        if (results.length === 0)
          return call("send_message_to_agent_and_wait_for_reply", {
            other_agent_id: ids.slow,
            message: "take your time",
          });
        return say("caller done");
      }
      return { ...say("slow done"), delayMs: 400 };
    });
    ids.caller = await agent("caller");
    ids.slow = await agent("slow");
    const pending = t.req("POST", `/v1/agents/${ids.caller}/messages`, { input: "start" });
    await new Promise((r) => setTimeout(r, 150));
    // While the caller waits on the other agent, a direct edit of its memory is not blocked.
    const started = performance.now();
    const edit = await t.req("PATCH", `/v1/agents/${ids.caller}/core-memory/blocks/persona`, {
      value: "I am caller.",
    });
    expect(edit.status).toBe(200);
    expect(performance.now() - started).toBeLessThan(200);
    expect((await pending).status).toBe(200);
  });
});

describe("send_message_to_agent_async: the outbox", () => {
  const storage = () => t.kelpie.services.env.storage;
  const fromSender = async (target: string, sender: string) =>
    ((await t.req("GET", `/v1/agents/${target}/messages?order=asc&limit=100`)).body as any[]).filter(
      (m) => m.message_type === "user_message" && m.sender_id === sender,
    );
  async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const got = await probe();
      if (got !== undefined) return got;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const entry = (sender: string, target: string, over: Partial<OutboxRecord> = {}): OutboxRecord => ({
    id: `outbox-${crypto.randomUUID()}`,
    agent_id: sender,
    target_agent_id: target,
    text: "[Incoming message from agent] hello",
    call_depth: 0,
    attempts: 0,
    last_error: null,
    next_attempt_at_ms: 0,
    created_at_ms: 0,
    ...over,
  });

  it("answers once the entry is committed with the sender's step, then delivers it once", async () => {
    await t.kelpie.close();
    t = await testApp(new MemoryStorage(), {
      llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
      observability: { tracing: null },
    });
    const ids: Record<string, string> = {};
    let bCalls = 0;
    fake.script((req) => {
      const me = whoAmI(req);
      const results = toolResultsSinceUser(req);
      if (me === "a") {
        if (results.length === 0)
          return call("send_message_to_agent_async", { other_agent_id: ids.b, message: "hi b" });
        return say(`a: ${JSON.parse(results[0]!.text).message}`);
      }
      bCalls++;
      return say("b got it");
    });
    ids.a = await agent("a");
    ids.b = await agent("b");
    const res = await t.req("POST", `/v1/agents/${ids.a}/messages`, { input: "tell b" });
    expect(res.status).toBe(200);
    const said = res.body.messages.find((m: any) => m.message_type === "assistant_message").content;
    expect(said).toBe("a: Successfully sent message");
    const got = await until("b to get the message", async () => {
      const m = await fromSender(ids.b!, ids.a!);
      return m.length > 0 && (await storage().countOutbox(ids.a!)) === 0 ? m : undefined;
    });
    expect(got).toHaveLength(1);
    expect(got[0].content).toContain("hi b");
    expect(bCalls).toBe(1);
    const metrics = (await t.kelpie.app.inject({ method: "GET", url: "/metrics" })).body;
    expect(metrics).toContain('kelpie_outbox_deliveries_total{outcome="delivered"} 1');
  });

  it("applies one entry once however often it is delivered, one after another or at once", async () => {
    let bCalls = 0;
    fake.script(() => {
      bCalls++;
      return { ...say("ok"), delayMs: 100 };
    });
    const a = await agent("a");
    const b = await agent("b");
    const deliver = localDelivery(() => t.kelpie.services.messages);
    const e = entry(a, b);
    await Promise.all([deliver(e), deliver(e)]);
    await deliver(e);
    expect(await fromSender(b, a)).toHaveLength(1);
    expect(bCalls).toBe(1);
    expect((await t.req("GET", `/v1/runs/?agent_id=${b}`)).body).toHaveLength(1);
  });

  it("applies an entry once when an attempt the target took is recorded as failed (its answer was lost) and tried again", async () => {
    // Found by the simulation (seed 70): the reply to a forwarded delivery was dropped, the sender
    // recorded the attempt failed, and the next attempt went under a new key: a second turn.
    let bCalls = 0;
    fake.script(() => {
      bCalls++;
      return say("ok");
    });
    const a = await agent("a");
    const b = await agent("b");
    const deliver = localDelivery(() => t.kelpie.services.messages);
    const e = entry(a, b);
    await deliver(e);
    await deliver({ ...e, attempts: 1, last_error: "connection reset" });
    await deliver({ ...e, attempts: 2, last_error: "connection reset" });
    expect(await fromSender(b, a)).toHaveLength(1);
    expect(bCalls).toBe(1);
  });

  it("runs again an attempt whose turn failed before committing anything, whichever node tries it", async () => {
    // Found by the simulation (seed 138): a node that had not seen the first failure recorded
    // delivered under the same key, was answered the failed run's error (as a non-retryable
    // INTERNAL), and the entry was given up.
    await t.kelpie.close();
    t = await testApp(new MemoryStorage(), {
      llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
      llmRetry: { attemptsMax: 1 },
    });
    let bCalls = 0;
    fake.script(() => {
      bCalls++;
      if (bCalls === 1) throw new Error("the model is down");
      return say("yes");
    });
    const a = await agent("a");
    const b = await agent("b");
    const deliver = localDelivery(() => t.kelpie.services.messages);
    const e = entry(a, b);
    await expect(deliver(e)).rejects.toMatchObject({ retryable: true });
    await deliver(e);
    await deliver({ ...e, attempts: 1 });
    expect(await fromSender(b, a)).toHaveLength(1);
    expect(bCalls).toBe(2);
  });

  it("tries again when the target's model failed before its turn committed anything: the message is not lost", async () => {
    // One model attempt per call, so the target's first turn fails with the model's error.
    await t.kelpie.close();
    t = await testApp(new MemoryStorage(), {
      llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }),
      llmRetry: { attemptsMax: 1 },
    });
    const ids: Record<string, string> = {};
    let bCalls = 0;
    fake.script((req) => {
      const results = toolResultsSinceUser(req);
      if (whoAmI(req) === "a") {
        if (results.length === 0)
          return call("send_message_to_agent_async", { other_agent_id: ids.b, message: "still there?" });
        return say("sent");
      }
      bCalls++;
      if (bCalls === 1) throw new Error("the model is down");
      return say("yes");
    });
    ids.a = await agent("a");
    ids.b = await agent("b");
    expect((await t.req("POST", `/v1/agents/${ids.a}/messages`, { input: "ask b" })).status).toBe(200);
    const got = await until("b to answer on the second attempt", async () => {
      const m = await fromSender(ids.b!, ids.a!);
      return m.length > 0 && (await storage().countOutbox(ids.a!)) === 0 ? m : undefined;
    });
    expect(got).toHaveLength(1);
    expect(bCalls).toBe(2);
    // One key for every attempt: the failed run is run again, and completes.
    const runs = (await t.req("GET", `/v1/runs/?agent_id=${ids.b}`)).body as any[];
    expect(runs.map((r) => r.status)).toEqual(["completed"]);
  });

  it("gives up a message whose target is gone, and says so in the audit log", async () => {
    fake.script(() => say("ok"));
    const a = await agent("a");
    const gone = await agent("gone");
    const e = entry(a, gone);
    await storage().commit([{ op: "put_outbox", entry: e, create: true }]);
    expect((await t.req("DELETE", `/v1/agents/${gone}`)).status).toBe(200);
    // The sender's next activation delivers what waits in its outbox.
    expect((await t.req("POST", `/v1/agents/${a}/messages`, { input: "hi" })).status).toBe(200);
    const audit = await until("the give-up to be audited", async () => {
      const entries = await storage().listAudit({ limit: 100, order: "desc" });
      return entries.find((x) => x.action === "outbox.undeliverable");
    });
    expect(audit.target).toBe(gone);
    expect(audit.detail).toMatchObject({ agent_id: a, outbox_entry_id: e.id, attempts: 1 });
    expect(await storage().countOutbox(a)).toBe(0);
  });

  it("refuses a send with a tool error the model reads when the sender's outbox is full", async () => {
    const ids: Record<string, string> = {};
    let refusal = "";
    fake.script((req) => {
      const results = toolResultsSinceUser(req);
      if (results.length === 0)
        return call("send_message_to_agent_async", { other_agent_id: ids.b, message: "one more" });
      refusal = JSON.parse(results[0]!.text).message;
      return say("gave up");
    });
    ids.a = await agent("a");
    ids.b = await agent("b");
    // Entries not due for an hour stay put while the sender sends.
    const waiting = Array.from({ length: OUTBOX_ENTRIES_PER_AGENT_MAX }, () =>
      entry(ids.a!, ids.b!, { next_attempt_at_ms: Date.now() + 3_600_000 }),
    );
    await storage().commit(waiting.map((e): Mutation => ({ op: "put_outbox", entry: e, create: true })));
    const res = await t.req("POST", `/v1/agents/${ids.a}/messages`, { input: "send" });
    expect(res.status).toBe(200);
    expect(refusal).toContain(`max ${OUTBOX_ENTRIES_PER_AGENT_MAX}`);
    expect(await storage().countOutbox(ids.a)).toBe(OUTBOX_ENTRIES_PER_AGENT_MAX);
    expect(await fromSender(ids.b, ids.a)).toHaveLength(0);
  });
});
