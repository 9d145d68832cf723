// A real server process on PostgreSQL: the agent loop commits there, and everything is read back
// after kill -9 and restart, from a throwaway database.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";
import { withTestDatabase } from "../support/postgres.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

describe("kelpie serve on PostgreSQL (real process)", () => {
  const db = withTestDatabase();
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

  it("serves agents and messages, and keeps them across kill -9", async () => {
    const env = {
      KELPIE_STORAGE: "postgres",
      KELPIE_DATABASE_URL: db.url(),
      OPENAI_API_KEY: "sk-test",
      OPENAI_BASE_URL: `${fake.url}/v1`,
    };
    server = await startServer({ dataDir: data.dir, env });
    expect((await http(server.url, "GET", "/v1/health/")).body.storage).toBe("postgres");
    fake.script((req) => {
      const last = [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
      return { toolCalls: [{ name: "send_message", args: { message: `pg: ${last}` } }] };
    });
    const a = (
      await http(server.url, "POST", "/v1/agents/", {
        name: "on-postgres",
        model: "openai/gpt-4o-mini",
        memory_blocks: [{ label: "human", value: "Ada" }],
      })
    ).body;
    const res = await http(server.url, "POST", `/v1/agents/${a.id}/messages`, { input: "hello" });
    expect(res.status).toBe(200);
    expect(res.body.messages.find((m: any) => m.message_type === "assistant_message").content).toBe(
      "pg: hello",
    );
    await http(server.url, "PATCH", `/v1/agents/${a.id}/core-memory/blocks/human`, { value: "Ada L." });
    await server.kill("SIGKILL");
    server = await startServer({ dataDir: data.dir, env });
    const after = (await http(server.url, "GET", `/v1/agents/${a.id}`)).body;
    expect(after.name).toBe("on-postgres");
    expect(after.blocks[0].value).toBe("Ada L.");
    const messages = (await http(server.url, "GET", `/v1/agents/${a.id}/messages?order=asc`)).body;
    expect(messages.map((m: any) => m.message_type)).toEqual([
      "user_message",
      "assistant_message",
      "tool_return_message",
    ]);
  });
});
