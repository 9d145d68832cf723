// Agents talking to agents through the runtime: replies, cycles without deadlock, the depth limit,
// and messages to agents matching tags — all through the fake LLM over HTTP.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
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
