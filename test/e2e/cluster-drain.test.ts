// A rolling restart on a two-node cluster (real processes, one PostgreSQL database): SIGTERM lets
// the turn in flight finish and be acknowledged, gives the node's leases back at once (the other
// node serves the agent without waiting out a lease TTL), and requests sent through the other node
// meanwhile are forwarded, then served there.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { withTestDatabase } from "../support/postgres.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

/** Long enough that waiting it out would show: the drained node's leases must be released. */
const LEASE_TTL_MS = 20_000;
const SLOW_TURN_MS = 1_500;

const lastUserText = (req: ScriptRequest) =>
  [...req.messages].reverse().find((m) => m.role === "user")?.text ?? "";

describe("cluster: SIGTERM drains and hands over (real processes)", () => {
  const db = withTestDatabase();
  const dataA = tempDataDir();
  const dataB = tempDataDir();
  let fake: FakeLlm;
  let a: ServerProcess | undefined;
  let b: ServerProcess | undefined;

  beforeAll(async () => {
    fake = await startFakeLlm();
    fake.script((req) => ({
      toolCalls: [{ name: "send_message", args: { message: `re: ${lastUserText(req)}` } }],
      ...(lastUserText(req).startsWith("slow") ? { delayMs: SLOW_TURN_MS } : {}),
    }));
  });
  afterAll(async () => {
    await a?.kill();
    await b?.kill();
    await fake.close();
    dataA.remove();
    dataB.remove();
  });

  it("finishes the turn in flight, releases the lease, and the other node takes over at once", async () => {
    const env = {
      KELPIE_STORAGE: "postgres",
      KELPIE_DATABASE_URL: db.url(),
      KELPIE_LEASE_TTL_MS: String(LEASE_TTL_MS),
      OPENAI_API_KEY: "sk-test",
      OPENAI_BASE_URL: `${fake.url}/v1`,
    };
    [a, b] = await Promise.all([
      startServer({
        dataDir: dataA.dir,
        env: { ...env, KELPIE_NODE_ID: "drain-a", KELPIE_LOG_LEVEL: "info" },
      }),
      startServer({ dataDir: dataB.dir, env: { ...env, KELPIE_NODE_ID: "drain-b" } }),
    ]);
    const health = (await http(b.url, "GET", "/health")).body;
    expect(health.cluster).toMatchObject({
      node_id: "drain-b",
      state: "serving",
      lease_ttl_ms: LEASE_TTL_MS,
    });

    const agent = (await http(a.url, "POST", "/v1/agents/", { model: "openai/gpt-4o-mini" })).body;
    // A write through B lands on A once A holds the lease: B forwards it.
    expect((await http(a.url, "POST", `/v1/agents/${agent.id}/messages`, { input: "first" })).status).toBe(
      200,
    );
    const viaB = await http(b.url, "POST", `/v1/agents/${agent.id}/messages`, { input: "through b" });
    expect(viaB.status).toBe(200);
    // A stream through B is forwarded too, and arrives as server-sent events.
    const streamed = await fetch(`${b.url}/v1/agents/${agent.id}/messages/stream`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ input: "streamed through b" }),
    });
    expect(streamed.headers.get("content-type")).toContain("text/event-stream");
    const events = (await streamed.text())
      .split("\n")
      .filter((l) => l.startsWith("data: ") && l !== "data: [DONE]")
      .map((l) => JSON.parse(l.slice(6)));
    expect(events.find((e) => e.message_type === "assistant_message")?.content).toBe(
      "re: streamed through b",
    );
    expect(events.at(-1)?.message_type).toBe("usage_statistics");
    const sql = postgres(db.url(), { max: 1, onnotice: () => {} });
    try {
      const owner = async () =>
        (await sql`SELECT node_id FROM agent_fences WHERE agent_id = ${agent.id}`)[0]?.node_id ?? null;
      expect(await owner()).toBe("drain-a");

      const slow = http(a.url, "POST", `/v1/agents/${agent.id}/messages`, { input: "slow turn" });
      await new Promise((r) => setTimeout(r, SLOW_TURN_MS / 3));
      const exited = a.kill("SIGTERM");
      const answered = await slow;
      expect(answered.status).toBe(200);
      expect(answered.body.messages.find((m: any) => m.message_type === "assistant_message").content).toBe(
        "re: slow turn",
      );
      await exited;
      expect(a.output()).toContain("left the cluster");
      expect(await owner()).toBeNull();

      const startedMs = Date.now();
      const after = await http(b.url, "POST", `/v1/agents/${agent.id}/messages`, { input: "after drain" });
      expect(after.status).toBe(200);
      expect(Date.now() - startedMs).toBeLessThan(LEASE_TTL_MS / 2);
      expect(await owner()).toBe("drain-b");
      const history = (await http(b.url, "GET", `/v1/agents/${agent.id}/messages?order=asc`)).body;
      expect(
        history.filter((m: any) => m.message_type === "user_message").map((m: any) => m.content),
      ).toEqual(["first", "through b", "streamed through b", "slow turn", "after drain"]);
    } finally {
      await sql.end();
    }
  });
});
