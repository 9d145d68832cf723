// A run its server was killed in the middle of (kill -9) used to read `running` (or `created`)
// forever. After the restart it reads `failed`, with a stop reason and an error that say the
// server stopped, on SQLite and on PostgreSQL; the agent answers again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RUN_INTERRUPTED_ERROR } from "../../src/agent/run-recovery.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { withTestDatabase } from "../support/postgres.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

/** How long a "slow" model call takes: far longer than the test waits, so the kill lands inside it. */
const SLOW_CALL_MS = 60_000;
const WAIT_MS_MAX = 10_000;

const lastUserText = (req: ScriptRequest) =>
  [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";
const stepsSinceUser = (req: ScriptRequest) => {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  return req.messages.slice(i + 1).filter((m) => m.role === "assistant").length;
};

async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + WAIT_MS_MAX;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function recoveryChecks(engine: string, env: () => Record<string, string>): void {
  const data = tempDataDir();
  let server: ServerProcess | undefined;
  afterAll(async () => {
    await server?.kill();
    data.remove();
  });

  it(`${engine}: a run cut by kill -9 reads failed after the restart, not running`, async () => {
    server = await startServer({ dataDir: data.dir, env: env() });
    const agent = (
      await http(server.url, "POST", "/v1/agents/", {
        model: "openai/gpt-4o-mini",
        agent_type: "memgpt_agent",
        memory_blocks: [{ label: "human", value: "log:" }],
      })
    ).body;
    expect(agent.id).toBeTypeOf("string");
    const runsOf = async () =>
      (await http(server!.url, "GET", `/v1/runs/?agent_id=${agent.id}`)).body as any[];

    // A turn whose first step committed (run `running`) and whose second model call hangs.
    const pending = http(server.url, "POST", `/v1/agents/${agent.id}/messages`, {
      messages: [{ role: "user", content: "two steps, slow second" }],
    }).catch(() => null);
    const running = await until("the run to be running", async () =>
      (await runsOf()).find((r) => r.status === "running"),
    );
    // An async run whose first model call hangs (run `created`, never started a step).
    const queued = (
      await http(server.url, "POST", `/v1/agents/${agent.id}/messages/async`, {
        messages: [{ role: "user", content: "slow first" }],
      })
    ).body;
    expect(queued.status).toBe("created");
    await server.kill("SIGKILL");
    expect(await pending).toBeNull();

    server = await startServer({ dataDir: data.dir, env: env() });
    for (const id of [running.id, queued.id]) {
      // On PostgreSQL the dead process's lease must lapse first: only then may a node fence the
      // agent and mark its runs (on SQLite the restarted server takes it at once).
      const run = await until(`run ${id} to be settled`, async () => {
        const body = (await http(server!.url, "GET", `/v1/runs/${id}`)).body;
        return body.status === "running" || body.status === "created" ? undefined : body;
      });
      expect(run.status, JSON.stringify(run)).toBe("failed");
      expect(run.stop_reason).toBe("error");
      expect(run.error).toBe(RUN_INTERRUPTED_ERROR);
      expect(run.completed_at).not.toBeNull();
    }
    expect((await runsOf()).filter((r) => r.status === "running" || r.status === "created")).toEqual([]);
    // The first step's work stays; the agent answers again.
    const again = await http(server.url, "POST", `/v1/agents/${agent.id}/messages`, {
      messages: [{ role: "user", content: "quick" }],
    });
    expect(again.status).toBe(200);
    expect(again.body.stop_reason.stop_reason).toBe("end_turn");
  });
}

describe("runs cut by a crash (real processes)", () => {
  let fake: FakeLlm;
  beforeAll(async () => {
    fake = await startFakeLlm();
    fake.script((req) => {
      const text = lastUserText(req);
      if (text === "slow first")
        return { delayMs: SLOW_CALL_MS, toolCalls: [{ name: "send_message", args: { message: "late" } }] };
      if (text.startsWith("two steps") && stepsSinceUser(req) === 0) {
        return {
          toolCalls: [
            {
              name: "core_memory_append",
              args: { label: "human", content: "step one;", request_heartbeat: true },
            },
          ],
        };
      }
      return {
        toolCalls: [{ name: "send_message", args: { message: `done: ${text}` } }],
        ...(text.startsWith("two steps") ? { delayMs: SLOW_CALL_MS } : {}),
      };
    });
  });
  afterAll(async () => {
    await fake.close();
  });
  const llmEnv = () => ({ OPENAI_API_KEY: "sk-test", OPENAI_BASE_URL: `${fake.url}/v1` });

  describe("on SQLite", () => {
    recoveryChecks("sqlite", llmEnv);
  });

  describe("on PostgreSQL", () => {
    const db = withTestDatabase();
    recoveryChecks("postgres", () => ({
      ...llmEnv(),
      KELPIE_STORAGE: "postgres",
      KELPIE_LEASE_TTL_MS: "2000",
      KELPIE_DATABASE_URL: db.url(),
    }));
  });
});
