// One node of three cut off from PostgreSQL by a TCP proxy that silently drops every byte (the
// connections stay open). The node must notice within a lease TTL (its /health says "lapsed") and
// commit nothing more; writes sent through the other nodes, forwarded to it at first, must be
// answered and, retried, succeed on another node within a lease TTL and a margin; a turn it had in
// flight must be fenced when it finally commits; and once the network heals it must rejoin
// without owning anything twice.
import { performance } from "node:perf_hooks";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FORWARDED_BY_HEADER, NOT_SERVING_HEADER } from "../../src/api/forward.ts";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import { clusterNodeEnv, commitWithToken, readFences, rememberScript } from "../support/cluster.ts";
import { type FakeLlm, type Reply, startFakeLlm } from "../support/fake-llm/server.ts";
import { withTestDatabase } from "../support/postgres.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.ts";

const LEASE_TTL_MS = 1_500;
const HEARTBEAT_INTERVAL_MS = LEASE_TTL_MS / 4;
/** Timer and scheduling slack on a loaded two-core machine. */
const SLACK_MS = 1_000;
/** The failover bound: a lease TTL, then a retry after the first answer and the routing's margin. */
const TAKEOVER_MS_MAX = LEASE_TTL_MS + 2_000;
const AGENTS = 3;
const POLL_MS = 25;
/** A write sent to the cut-off node is given this long to (wrongly) come back acknowledged. */
const CUT_OFF_WRITE_WAIT_MS = LEASE_TTL_MS + 1_000;
const REJOIN_WAIT_MS = 10_000;
const SLOW_ITEM = "slow-item";
const TEST_TIMEOUT_MS = 120_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sseEvents = (text: string): any[] =>
  text
    .split("\n")
    .filter((line) => line.startsWith("data: ") && line !== "data: [DONE]")
    .map((line) => JSON.parse(line.slice("data: ".length)));

describe("cluster: a node cut off from PostgreSQL (TCP blackhole between it and the database)", () => {
  const db = withTestDatabase();
  const dirs = [tempDataDir(), tempDataDir(), tempDataDir()];
  let fake: FakeLlm;
  let proxy: TcpProxy;
  let sql: postgres.Sql;
  let storage: PostgresStorage;
  const servers: ServerProcess[] = [];
  /** Opens when the test lets the model answer the slow turn (after the network heals). */
  let releaseSlow: () => void = () => {};
  const slowGate = new Promise<void>((open) => {
    releaseSlow = open;
  });
  let slowCalled: () => void = () => {};
  const slowStarted = new Promise<void>((started) => {
    slowCalled = started;
  });

  beforeAll(async () => {
    fake = await startFakeLlm();
    const remember = rememberScript();
    // The slow turn's first model call hangs until the test opens the gate.
    fake.script(async (req): Promise<Reply> => {
      const last = req.messages.at(-1);
      if (last?.role === "user" && last.text === `remember: ${SLOW_ITEM}`) {
        slowCalled();
        await slowGate;
      }
      return remember(req);
    });
    proxy = await startTcpProxy({ host: "127.0.0.1", port: Number(new URL(db.url()).port || 5432) });
    sql = postgres(db.url(), { max: 2, onnotice: () => {} });
    storage = new PostgresStorage({ url: db.url(), maxConnections: 2 });
  });
  afterAll(async () => {
    releaseSlow();
    await Promise.all(servers.map((s) => s.kill()));
    await storage?.close();
    await sql?.end();
    await proxy?.close();
    await fake?.close();
    for (const d of dirs) d.remove();
  });

  it(
    "lapses within a lease TTL, is taken over, gets its late commit fenced, and rejoins cleanly",
    async () => {
      const viaProxy = new URL(db.url());
      viaProxy.port = String(proxy.port);
      const env = (nodeId: string, databaseUrl: string) =>
        clusterNodeEnv({ databaseUrl, llmUrl: fake.url, nodeId, leaseTtlMs: LEASE_TTL_MS });
      const [cut, b, c] = await Promise.all([
        startServer({ dataDir: dirs[0]!.dir, env: env("part-p", viaProxy.toString()) }),
        startServer({ dataDir: dirs[1]!.dir, env: env("part-b", db.url()) }),
        startServer({ dataDir: dirs[2]!.dir, env: env("part-c", db.url()) }),
      ]);
      servers.push(cut!, b!, c!);

      // Agents made through B, then activated on the node about to be cut off (it takes their leases).
      const agents: { id: string; notesBlockId: string }[] = [];
      for (let i = 0; i < AGENTS; i += 1) {
        const created = await http(b!.url, "POST", "/v1/agents/", {
          name: `part-${i}`,
          model: "openai/gpt-4o-mini",
          agent_type: "memgpt_agent",
          memory_blocks: [
            { label: "human", value: "log:", limit: 10_000 },
            { label: "notes", value: "", limit: 1_000 },
          ],
        });
        expect(created.status, JSON.stringify(created.body)).toBe(200);
        const notes = created.body.blocks.find((bl: any) => bl.label === "notes");
        agents.push({ id: created.body.id, notesBlockId: notes.id });
        const edited = await http(
          cut!.url,
          "PATCH",
          `/v1/agents/${created.body.id}/core-memory/blocks/notes`,
          {
            value: "before",
          },
        );
        expect(edited.status, JSON.stringify(edited.body)).toBe(200);
      }
      const before = await readFences(sql);
      for (const a of agents) expect(before.get(a.id)).toMatchObject({ node_id: "part-p", live: true });

      // A turn in flight on the cut-off node: its model call answers only after the network heals.
      // Streamed, so that the error the turn ends on is in the answer.
      const slowTurn = http(
        cut!.url,
        "POST",
        `/v1/agents/${agents[0]!.id}/messages/stream`,
        { messages: [{ role: "user", content: `remember: ${SLOW_ITEM}` }] },
        { timeoutMs: TEST_TIMEOUT_MS },
      ).then(
        (res) => sseEvents(String(res.body)),
        (err: Error) => [{ message_type: "client_error", error: err.message }],
      );
      await slowStarted;

      // --- the partition ----------------------------------------------------------------------
      expect(proxy.connections(), "the node reaches the database through the proxy").toBeGreaterThan(0);
      const t0 = performance.now();
      const since = () => Math.round(performance.now() - t0);
      proxy.blackhole();

      // A write sent straight to the cut-off node must not come back acknowledged.
      const cutOffWrite = http(
        cut!.url,
        "PATCH",
        `/v1/agents/${agents[1]!.id}/core-memory/blocks/notes`,
        { value: "sent-to-the-cut-off-node" },
        { timeoutMs: CUT_OFF_WRITE_WAIT_MS },
      ).then(
        (res) => ({ status: res.status, code: res.body?.code as string | undefined }),
        (err: Error) => ({ status: 0, code: err.name }),
      );

      // Right away, writes to its agents go through the other nodes. They are forwarded to the
      // cut-off node while it still holds the leases; each must be answered (no client timeout
      // hides a hang) and, retried on an error answer, succeed within the failover bound.
      const takeoverMs: number[] = [];
      const answers: string[] = [];
      const takeovers = Promise.all(
        agents.map(async (agent, i) => {
          const via = i % 2 === 0 ? b! : c!;
          for (;;) {
            const res = await http(
              via.url,
              "PATCH",
              `/v1/agents/${agent.id}/core-memory/blocks/notes`,
              { value: `after-${i}` },
              { timeoutMs: TAKEOVER_MS_MAX + SLACK_MS },
            );
            answers.push(`${since()} ms ${res.status} ${res.body?.code ?? ""}`);
            if (res.status === 200) break;
            await sleep(POLL_MS);
          }
          takeoverMs.push(since());
        }),
      );

      // It notices within a lease TTL (its last renewal was at most a heartbeat before the cut).
      let health: { status: number; body: any } | null = null;
      while (since() < LEASE_TTL_MS + HEARTBEAT_INTERVAL_MS + SLACK_MS) {
        health = await http(cut!.url, "GET", "/health");
        if (health.status === 503) break;
        await sleep(POLL_MS);
      }
      const lapsedAtMs = since();
      expect(health?.status, `health of the cut-off node after ${lapsedAtMs} ms`).toBe(503);
      expect(health?.body.status).toBe("lapsed");
      expect(health?.body.cluster.state).toBe("lapsed");

      // A write forwarded to it now is refused at once, marked so that the forwarding node knows
      // nothing happened there (and serves the write itself once the lease has lapsed).
      const forwarded = await fetch(`${cut!.url}/v1/agents/${agents[1]!.id}/core-memory/blocks/notes`, {
        method: "PATCH",
        headers: { "content-type": "application/json", [FORWARDED_BY_HEADER]: "part-b" },
        body: JSON.stringify({ value: "forwarded-to-the-cut-off-node" }),
        signal: AbortSignal.timeout(SLACK_MS),
      });
      expect(forwarded.status).toBe(503);
      expect(forwarded.headers.get(NOT_SERVING_HEADER)).toBe("lapsed");

      await takeovers;
      const remembered = await http(
        c!.url,
        "POST",
        `/v1/agents/${agents[2]!.id}/messages`,
        { messages: [{ role: "user", content: "remember: during-partition" }] },
        { headers: { "idempotency-key": "during-partition" }, timeoutMs: TAKEOVER_MS_MAX },
      );
      expect(remembered.status, JSON.stringify(remembered.body)).toBe(200);
      expect(Math.max(...takeoverMs), `takeovers at ${takeoverMs.join(", ")} ms`).toBeLessThanOrEqual(
        TAKEOVER_MS_MAX,
      );
      const during = await readFences(sql);
      for (const a of agents) {
        expect(during.get(a.id)!.node_id).not.toBe("part-p");
        expect(during.get(a.id)!.token).toBeGreaterThan(before.get(a.id)!.token);
        // The cut-off node's token is refused by the database.
        expect(await commitWithToken(storage, a.id, a.notesBlockId, before.get(a.id)!.token)).toBe("fenced");
      }
      const cutOff = await cutOffWrite;
      expect(cutOff.status, `the write sent to the cut-off node answered ${JSON.stringify(cutOff)}`).not.toBe(
        200,
      );

      // --- the heal -----------------------------------------------------------------------------
      const healedAt = since();
      proxy.heal();
      let rejoined: { status: number; body: any } | null = null;
      while (since() - healedAt < REJOIN_WAIT_MS) {
        rejoined = await http(cut!.url, "GET", "/health");
        if (rejoined.status === 200) break;
        await sleep(POLL_MS);
      }
      const rejoinMs = since() - healedAt;
      expect(rejoined?.status, `health ${rejoinMs} ms after the heal`).toBe(200);
      expect(rejoined?.body.cluster.state).toBe("serving");

      // The turn it had in flight commits late, with its old token: fenced, and nothing of it lands.
      releaseSlow();
      const slow = await slowTurn;
      const ended = slow.find((e) => e.message_type === "error_message");
      expect(ended?.error_type, JSON.stringify(slow)).toBe("fenced");
      expect(slow.filter((e) => e.message_type === "assistant_message")).toEqual([]);
      // Nothing of that turn was committed, not even its run.
      expect((await http(b!.url, "GET", `/v1/runs/${ended.run_id}`)).status).toBe(404);
      // With that turn over (its activation ends just after its answer) it holds no activation.
      let active = -1;
      for (const until = since() + SLACK_MS; since() < until && active !== 0; await sleep(POLL_MS)) {
        active = (await http(cut!.url, "GET", "/health")).body.agents_active;
      }
      expect(active, "activations left on the node that was cut off").toBe(0);

      // It serves again, by forwarding to the agents' owners; nobody owns an agent twice.
      const through = await http(cut!.url, "PATCH", `/v1/agents/${agents[0]!.id}/core-memory/blocks/notes`, {
        value: "through-the-rejoined-node",
      });
      expect(through.status, JSON.stringify(through.body)).toBe(200);
      const after = await readFences(sql);
      for (const a of agents) {
        expect(after.get(a.id)!.node_id).toBe(during.get(a.id)!.node_id);
        expect(after.get(a.id)!.token).toBe(during.get(a.id)!.token);
        expect(await commitWithToken(storage, a.id, a.notesBlockId, before.get(a.id)!.token)).toBe("fenced");
      }
      for (const a of agents) {
        const human = (await http(b!.url, "GET", `/v1/agents/${a.id}/core-memory/blocks/human`)).body.value;
        expect(human).not.toContain(SLOW_ITEM);
        const notes = (await http(c!.url, "GET", `/v1/agents/${a.id}/core-memory/blocks/notes`)).body.value;
        expect(notes).not.toBe("sent-to-the-cut-off-node");
        expect(notes).not.toBe("forwarded-to-the-cut-off-node");
        expect(notes).not.toMatch(/^STALE/);
      }
      expect(
        (await http(b!.url, "GET", `/v1/agents/${agents[2]!.id}/core-memory/blocks/human`)).body.value,
      ).toContain("during-partition");
      console.log(
        `partition test: ${JSON.stringify({
          lapsed_after_ms: lapsedAtMs,
          takeovers_after_ms: takeoverMs.sort((x, y) => x - y),
          answers,
          cut_off_write: cutOff,
          rejoined_after_heal_ms: rejoinMs,
        })}`,
      );
    },
    TEST_TIMEOUT_MS,
  );
});
