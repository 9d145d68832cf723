// A real server process, a fake LLM over HTTP: an agent edits its memory with a tool, the server
// is killed with SIGKILL, and the edit and the conversation are there after restart.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

describe("agent memory edits survive kill -9 (SQLite, real process)", () => {
  const data = tempDataDir();
  let fake: FakeLlm;
  let server: ServerProcess | undefined;
  beforeAll(async () => {
    fake = await startFakeLlm();
  });
  afterAll(async () => {
    await server?.kill();
    await fake.close();
    data.remove();
  });

  it("keeps the edited block and the stored messages", async () => {
    const env = { OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` };
    server = await startServer({ dataDir: data.dir, env });
    fake.script((req) => {
      const i = req.messages.map((m) => m.role).lastIndexOf("user");
      const calls = req.messages.slice(i + 1).filter((m) => m.role === "assistant").length;
      return calls === 0
        ? {
            toolCalls: [
              {
                name: "memory_insert",
                args: { label: "human", new_str: "likes green tea", request_heartbeat: true },
              },
            ],
          }
        : { toolCalls: [{ name: "send_message", args: { message: "Noted." } }] };
    });
    const a = (
      await http(server.url, "POST", "/v1/agents/", {
        model: "openai/gpt-4o-mini",
        memory_blocks: [{ label: "human", value: "Ada" }],
      })
    ).body;
    const res = await http(server.url, "POST", `/v1/agents/${a.id}/messages`, {
      input: "remember: likes green tea",
    });
    expect(res.status).toBe(200);
    await server.kill("SIGKILL");
    server = await startServer({ dataDir: data.dir, env });
    const block = (await http(server.url, "GET", `/v1/agents/${a.id}/core-memory/blocks/human`)).body;
    expect(block.value).toBe("Ada\nlikes green tea");
    const messages = (await http(server.url, "GET", `/v1/agents/${a.id}/messages?order=asc`)).body;
    expect(messages.map((m: any) => m.message_type)).toEqual([
      "user_message",
      "tool_call_message",
      "tool_return_message",
      "assistant_message",
      "tool_return_message",
    ]);
  });
});
