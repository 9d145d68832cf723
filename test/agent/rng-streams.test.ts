// Randomness is forked once per concern: ids the memory tool makes in two steps of one turn come
// from one stream that moves on, not from a fresh fork of the seed each step (which collided).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SystemClock } from "../../src/core/clock.ts";
import { SeededRng } from "../../src/core/rng.ts";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { createKelpie } from "../../src/server.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";

let fake: FakeLlm;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});

const callsSinceUser = (req: ScriptRequest) => {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  return req.messages.slice(i + 1).filter((m) => m.role === "assistant" && m.toolCalls.length > 0).length;
};

describe("seeded randomness", () => {
  it("gives blocks the memory tool creates in two steps of one turn distinct ids", async () => {
    const storage = new MemoryStorage();
    const kelpie = await createKelpie(
      { clock: new SystemClock(), rng: new SeededRng(17), storage },
      { llm: llmConfigFromEnv({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` }) },
    );
    try {
      const labels = ["first", "second"];
      fake.script((req) => {
        const label = labels[callsSinceUser(req)];
        if (label === undefined) return { toolCalls: [{ name: "send_message", args: { message: "made" } }] };
        const args = {
          command: "create",
          path: `/memories/${label}`,
          file_text: label,
          request_heartbeat: true,
        };
        return { toolCalls: [{ name: "memory", args }] };
      });
      const json = { "content-type": "application/json" };
      const created = await kelpie.app.inject({
        method: "POST",
        url: "/v1/agents/",
        headers: json,
        payload: JSON.stringify({
          model: "openai/gpt-4o-mini",
          agent_type: "memgpt_agent",
          tools: ["memory"],
        }),
      });
      expect(created.statusCode, created.body).toBe(200);
      const agentId = created.json().id as string;
      const sent = await kelpie.app.inject({
        method: "POST",
        url: `/v1/agents/${agentId}/messages`,
        headers: json,
        payload: JSON.stringify({ messages: [{ role: "user", content: "make two blocks" }] }),
      });
      expect(sent.statusCode, sent.body).toBe(200);
      const returns = sent.json().messages.filter((m: any) => m.message_type === "tool_return_message");
      expect(
        returns.map((m: any) => m.status),
        sent.body,
      ).toEqual(["success", "success", "success"]);
      const blocks = (await kelpie.app.inject({ url: `/v1/agents/${agentId}/core-memory/blocks` })).json();
      const made = blocks.filter((b: any) => labels.includes(b.label));
      expect(made.map((b: any) => b.label).sort()).toEqual(labels);
      expect(new Set(made.map((b: any) => b.id)).size).toBe(2);
    } finally {
      await kelpie.close();
    }
  });
});
