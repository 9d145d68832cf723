// An async message between agents (send_message_to_agent_async) survives kill -9 of the server:
// once the sender's tool has answered, the target gets the message exactly once, whether the crash
// came before the target took it or after it took it but before its delivery was recorded. Real
// `kelpie serve` processes on one SQLite data directory; the fake model holds the window open.
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SQLITE_FILE_NAME } from "../../src/storage/open.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

/** A held model call: far longer than the test waits, so the kill lands inside it. */
const HELD_CALL_MS = 60_000;
const WAIT_MS_MAX = 15_000;

async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + WAIT_MS_MAX;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const whoAmI = (req: ScriptRequest) => /I am (\w+)\./.exec(req.system)?.[1] ?? "?";
const toolResultsSinceUser = (req: ScriptRequest) => {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  return req.messages.slice(i + 1).filter((m) => m.role === "tool");
};
const say = (message: string) => ({ toolCalls: [{ name: "send_message", args: { message } }] });

describe("async messages between agents across kill -9 (real processes, SQLite)", () => {
  let fake: FakeLlm;
  const data = tempDataDir();
  let server: ServerProcess | undefined;
  /** What the fake model does for each agent in this phase of the test. */
  const hold = { a: false, b: false };
  let bCalls = 0;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    fake = await startFakeLlm();
    fake.script((req) => {
      const me = whoAmI(req);
      const results = toolResultsSinceUser(req);
      if (me === "a") {
        if (results.length === 0) {
          return {
            toolCalls: [
              {
                name: "send_message_to_agent_async",
                args: { other_agent_id: ids.b, message: "meet at noon", request_heartbeat: true },
              },
            ],
          };
        }
        return { ...say("told b"), ...(hold.a ? { delayMs: HELD_CALL_MS } : {}) };
      }
      bCalls++;
      return { ...say("noted"), ...(hold.b ? { delayMs: HELD_CALL_MS } : {}) };
    });
  });
  afterAll(async () => {
    await server?.kill();
    await fake.close();
    data.remove();
  });

  const env = () => ({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` });
  const start = async () => {
    server = await startServer({ dataDir: data.dir, env: env() });
    return server.url;
  };
  const agent = async (url: string, name: string) => {
    const res = await http(url, "POST", "/v1/agents/", {
      name,
      model: "openai/gpt-4o-mini",
      include_multi_agent_tools: true,
      memory_blocks: [{ label: "persona", value: `I am ${name}.` }],
    });
    expect(res.status).toBe(200);
    return res.body.id as string;
  };
  const fromA = async (url: string) =>
    ((await http(url, "GET", `/v1/agents/${ids.b}/messages?order=asc&limit=100`)).body as any[]).filter(
      (m) => m.message_type === "user_message" && m.sender_id === ids.a,
    );
  const bAnswered = async (url: string) =>
    ((await http(url, "GET", `/v1/runs/?agent_id=${ids.b}`)).body as any[]).filter(
      (r) => r.status === "completed",
    );
  const outboxRows = () => {
    const db = new Database(join(data.dir, SQLITE_FILE_NAME), { readonly: true });
    try {
      return (db.prepare("SELECT count(*) AS n FROM outbox").get() as { n: number }).n;
    } finally {
      db.close();
    }
  };
  /** Restarts on the same data, waits for b to have answered a's message, and checks it did so once. */
  const restartAndCheckOnce = async () => {
    hold.a = false;
    hold.b = false;
    const url = await start();
    await until("b to answer a's message", async () => {
      const runs = await bAnswered(url);
      return runs.length > 0 && (await fromA(url)).length > 0 ? runs : undefined;
    });
    // Give a second delivery every chance to happen, then stop cleanly and read the outbox.
    await new Promise((r) => setTimeout(r, 1_000));
    const got = await fromA(url);
    expect(got, JSON.stringify(got)).toHaveLength(1);
    expect(got[0].content).toContain("meet at noon");
    expect(await bAnswered(url)).toHaveLength(1);
    await server!.kill("SIGTERM");
    expect(outboxRows()).toBe(0);
  };

  it("a crash after a's tool answered and before b took the message: b gets it once after the restart", async () => {
    hold.b = true;
    const url = await start();
    ids.a = await agent(url, "a");
    ids.b = await agent(url, "b");
    bCalls = 0;
    const res = await http(url, "POST", `/v1/agents/${ids.a}/messages`, {
      messages: [{ role: "user", content: "tell b" }],
    });
    expect(res.status).toBe(200);
    const toolReturn = (res.body.messages as any[]).find((m) => m.message_type === "tool_return_message");
    expect(toolReturn.tool_return).toContain("Successfully sent message");
    // b's turn is under way (its model call held): it has not taken the message yet.
    await until("b's model call", async () => (bCalls > 0 ? true : undefined));
    expect(await fromA(url)).toHaveLength(0);
    await server!.kill("SIGKILL");
    await restartAndCheckOnce();
  });

  it("a crash after b took the message and before its delivery was recorded: b does not get it twice", async () => {
    // a's second model call holds a's mailbox, so the delivery's record (a fenced commit in a's
    // mailbox) waits behind it while b takes the message and answers.
    hold.a = true;
    const url = await start();
    ids.a = await agent(url, "a");
    ids.b = await agent(url, "b");
    const pending = http(url, "POST", `/v1/agents/${ids.a}/messages`, {
      messages: [{ role: "user", content: "tell b" }],
    }).catch(() => null);
    await until("b to answer", async () => {
      const runs = await bAnswered(url);
      return runs.length > 0 ? runs : undefined;
    });
    expect(await fromA(url)).toHaveLength(1);
    await server!.kill("SIGKILL");
    expect(await pending).toBeNull();
    expect(outboxRows()).toBe(1);
    await restartAndCheckOnce();
  });
});
