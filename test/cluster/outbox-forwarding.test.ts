// An async message to an agent leased by another node goes there through the cluster's forwarding
// (two real node processes, one PostgreSQL, API keys on): the sender's node asks the target's
// owner to deliver it, the owner serves it without moving the lease, and the target gets it once.
// Before, the sender's node tried to run the target itself and got "active on node X".
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterNodeEnv, readFences } from "../support/cluster.ts";
import { type FakeLlm, type ScriptRequest, startFakeLlm } from "../support/fake-llm/server.ts";
import { withTestDatabase } from "../support/postgres.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

const API_KEY = "sk-outbox-forwarding-test-key";
const AUTH = { headers: { authorization: `Bearer ${API_KEY}` } };
const LEASE_TTL_MS = 5_000;
const WAIT_MS_MAX = 15_000;

async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + WAIT_MS_MAX;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const whoAmI = (req: ScriptRequest) => /I am (\w+)\./.exec(req.system)?.[1] ?? "?";
const toolResultsSinceUser = (req: ScriptRequest) => {
  const i = req.messages.map((m) => m.role).lastIndexOf("user");
  return req.messages.slice(i + 1).filter((m) => m.role === "tool");
};
const say = (message: string) => ({ toolCalls: [{ name: "send_message", args: { message } }] });

describe("cluster: async messages between agents on different nodes (2 real processes, PostgreSQL)", () => {
  const db = withTestDatabase();
  const dirs = [tempDataDir(), tempDataDir()];
  const servers: ServerProcess[] = [];
  let fake: FakeLlm;
  let sql: postgres.Sql;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    fake = await startFakeLlm();
    fake.script((req) => {
      const results = toolResultsSinceUser(req);
      if (whoAmI(req) === "a" && results.length === 0) {
        return {
          toolCalls: [
            {
              name: "send_message_to_agent_async",
              args: { other_agent_id: ids.b, message: "meet at noon", request_heartbeat: true },
            },
          ],
        };
      }
      return say("ok");
    });
    sql = postgres(db.url(), { max: 1, onnotice: () => {} });
    for (const [i, nodeId] of ["outbox-n1", "outbox-n2"].entries()) {
      servers.push(
        await startServer({
          dataDir: dirs[i]!.dir,
          env: {
            ...clusterNodeEnv({ databaseUrl: db.url(), llmUrl: fake.url, nodeId, leaseTtlMs: LEASE_TTL_MS }),
            KELPIE_API_KEYS: API_KEY,
          },
        }),
      );
    }
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.kill()));
    await sql?.end();
    await fake?.close();
    for (const d of dirs) d.remove();
  });

  it("delivers to the node holding the target, once, without moving its lease", async () => {
    const [n1, n2] = servers.map((s) => s.url) as [string, string];
    const agent = async (name: string) => {
      const res = await http(
        n1,
        "POST",
        "/v1/agents/",
        {
          name,
          model: "openai/gpt-4o-mini",
          include_multi_agent_tools: true,
          memory_blocks: [{ label: "persona", value: `I am ${name}.` }],
        },
        AUTH,
      );
      expect(res.status).toBe(200);
      return res.body.id as string;
    };
    ids.a = await agent("a");
    ids.b = await agent("b");
    // b is active on n2, a on n1.
    const hello = await http(n2, "POST", `/v1/agents/${ids.b}/messages`, { input: "hello" }, AUTH);
    expect(hello.status).toBe(200);
    const res = await http(n1, "POST", `/v1/agents/${ids.a}/messages`, { input: "tell b" }, AUTH);
    expect(res.status).toBe(200);
    const fences = await readFences(sql);
    expect(fences.get(ids.a)?.node_id).toBe("outbox-n1");
    expect(fences.get(ids.b)?.node_id).toBe("outbox-n2");

    const fromA = async () =>
      (
        (await http(n1, "GET", `/v1/agents/${ids.b}/messages?order=asc&limit=100`, undefined, AUTH))
          .body as any[]
      ).filter((m) => m.message_type === "user_message" && m.sender_id === ids.a);
    await until("b to get a's message", async () => ((await fromA()).length > 0 ? true : undefined));
    await until("the outbox to be empty", async () =>
      Number((await sql`SELECT count(*) AS n FROM outbox`)[0]!.n) === 0 ? true : undefined,
    );
    const got = await fromA();
    expect(got).toHaveLength(1);
    expect(got[0].content).toContain("meet at noon");
    // b's lease never moved: n2 served the delivery.
    const after = await readFences(sql);
    expect(after.get(ids.b)?.node_id).toBe("outbox-n2");
    expect(after.get(ids.b)?.token).toBe(fences.get(ids.b)?.token);
    // A client cannot use the nodes' route, key or no key.
    const entry = `outbox-${crypto.randomUUID()}`;
    for (const headers of [{}, AUTH.headers]) {
      const forged = await http(n2, "POST", `/v1/_cluster/outbox/${entry}/deliver`, undefined, { headers });
      expect(forged.status).toBe(401);
    }
  });
});
