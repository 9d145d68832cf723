// Three real `kelpie serve` processes on one PostgreSQL database, under a client workload through
// all of them, while a random node is killed with SIGKILL (and restarted under its node id) again
// and again. Clients send "remember" messages with an Idempotency-Key (retried on other nodes
// until acknowledged) and edit a block; every call and return is recorded and the history checked
// for linearizability. Afterwards every acknowledged item must be in memory exactly once, and a
// fencing token from before each takeover must have been refused by the database.
import { performance } from "node:perf_hooks";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  checkLinearizable,
  type Model,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
  registerModel,
} from "../../src/dst/linearizability.ts";
import { PostgresStorage } from "../../src/storage/postgres.ts";
import {
  clusterNodeEnv,
  commitWithToken,
  type FenceRow,
  type ProbeOutcome,
  readFences,
  rememberScript,
} from "../support/cluster.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";
import { withTestDatabase } from "../support/postgres.ts";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

const NODE_IDS = ["k9-a", "k9-b", "k9-c"];
/** Short, so a takeover after a kill costs a second or two. */
const LEASE_TTL_MS = 1_500;
/** A node that fails to start is tried again (and the failure reported). */
const START_ATTEMPTS = 2;
/** How long the chaos waits for restarted nodes before it gives up. */
const NODES_UP_WAIT_MS = 60_000;
const AGENTS = 6;
const CLIENTS = 4;
/** Pause between a client's ops: the load stays well below what two cores give, so restarts stay quick. */
const THINK_MS: [number, number] = [100, 300];
const KILLS = 21;
/** Pause between kills, drawn uniformly from this range. */
const KILL_GAP_MS: [number, number] = [300, 900];
/** Nodes that must be up before another kill (so at least one keeps serving). */
const NODES_UP_TO_KILL = 2;
/** After the last kill, the workload goes on this long so the last takeovers happen under load. */
const SETTLE_MS = 2_500;
const FINAL_EDIT_ATTEMPTS = 5;
const ATTEMPT_TIMEOUT_MS = 10_000;
/** A "remember" is retried this long before the client gives up (the op then stays pending). */
const REMEMBER_DEADLINE_MS = 25_000;
const RETRY_PAUSE_MS = 100;
/** How long a killed node's leases may stay untaken: the last kill's wait for the final edits. */
const TAKEOVER_WAIT_MS = 30_000;
const TAKEOVER_POLL_MS = 50;
/** Model latency, so kills also land between the steps of a turn. */
const LLM_DELAY_MS_MAX = 60;
const TEST_TIMEOUT_MS = 300_000;
const NOTES_INITIAL = "notes:init";
const ITEM = /item-\d+-\d+/g;

// The memory of one agent as two objects checked apart: the "notes" block, a register written by
// PATCH and read by GET, and the "human" block, an append-only log written by "remember" turns.
type LogInput = { kind: "append"; item: string } | { kind: "read" };
type LogOutput = { kind: "append" } | { kind: "read"; items: string[] };

const appendLogModel: Model<readonly string[], LogInput, LogOutput> = {
  init: () => [],
  step(state, input, output) {
    if (input.kind === "append") return { ok: true, state: [...state, input.item] };
    if (output === undefined || output.kind !== "read") return { ok: true, state };
    const same = output.items.length === state.length && output.items.every((item, i) => item === state[i]);
    return { ok: same, state };
  },
  key: (state) => state.join(","),
  describe(input, output) {
    if (input.kind === "append") return `append(${input.item})${output === undefined ? " -> ?" : ""}`;
    return `read() -> ${output?.kind === "read" ? `[${output.items.join(",")}]` : "?"}`;
  },
};

type NotesOp = Operation<RegisterInput, RegisterOutput>;
type LogOp = Operation<LogInput, LogOutput>;

interface Node {
  id: string;
  data: { dir: string; remove(): void };
  server: ServerProcess | null;
  up: boolean;
  restarting: Promise<void> | null;
}

interface Agent {
  id: string;
  notesBlockId: string;
  notes: NotesOp[];
  log: LogOp[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const between = ([lo, hi]: [number, number]) => lo + Math.random() * (hi - lo);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const trace = (msg: string) => {
  if (process.env.KELPIE_TEST_TRACE) console.log(`[${new Date().toISOString().slice(11, 23)}] ${msg}`);
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

describe("cluster: kill -9 of random nodes under load (3 real processes, one PostgreSQL)", () => {
  const db = withTestDatabase();
  const nodes: Node[] = NODE_IDS.map((id) => ({
    id,
    data: tempDataDir(),
    server: null,
    up: false,
    restarting: null,
  }));
  let fake: FakeLlm;
  let sql: postgres.Sql;
  let storage: PostgresStorage;

  /** Nodes that exited without being killed, or failed to start, with their output. */
  const crashes: string[] = [];
  const start = async (node: Node) => {
    for (let attempt = 1; ; attempt += 1) {
      try {
        const server = await startServer({
          dataDir: node.data.dir,
          env: clusterNodeEnv({
            databaseUrl: db.url(),
            llmUrl: fake.url,
            nodeId: node.id,
            leaseTtlMs: LEASE_TTL_MS,
          }),
        });
        server.child.once("exit", (code, signal) => {
          if (node.server !== server) return;
          node.up = false;
          node.server = null;
          crashes.push(`${node.id} exited (${code ?? signal}):\n${server.output().slice(-4_000)}`);
        });
        node.server = server;
        node.up = true;
        return;
      } catch (err) {
        crashes.push(`${node.id} did not start: ${(err as Error).message.slice(0, 4_000)}`);
        if (attempt >= START_ATTEMPTS) throw err;
      }
    }
  };

  beforeAll(async () => {
    fake = await startFakeLlm();
    fake.script(rememberScript(() => Math.floor(Math.random() * LLM_DELAY_MS_MAX)));
    sql = postgres(db.url(), { max: 2, onnotice: () => {} });
    storage = new PostgresStorage({ url: db.url(), maxConnections: 2 });
  });
  afterAll(async () => {
    await Promise.allSettled(nodes.map((n) => n.restarting));
    await Promise.all(nodes.map((n) => n.server?.kill()));
    await storage?.close();
    await sql?.end();
    await fake?.close();
    for (const n of nodes) n.data.remove();
  });

  it(
    "loses no acknowledged write, applies none twice, stays linearizable, and fences every stale token",
    async () => {
      const t0 = performance.now();
      const now = () => performance.now() - t0;
      // Concurrent migrations are serialized by the database, so the nodes start side by side.
      await Promise.all(nodes.map(start));
      trace("nodes up");
      const upNodes = () => nodes.filter((n) => n.up && n.server !== null);

      const agents: Agent[] = [];
      for (let i = 0; i < AGENTS; i += 1) {
        const created = await http(nodes[i % nodes.length]!.server!.url, "POST", "/v1/agents/", {
          name: `k9-${i}`,
          model: "openai/gpt-4o-mini",
          agent_type: "memgpt_agent",
          memory_blocks: [
            { label: "human", value: "log:", limit: 20_000 },
            { label: "notes", value: NOTES_INITIAL, limit: 1_000 },
          ],
        });
        expect(created.status, JSON.stringify(created.body)).toBe(200);
        const notes = created.body.blocks.find((b: any) => b.label === "notes");
        agents.push({ id: created.body.id, notesBlockId: notes.id, notes: [], log: [] });
      }

      // --- the workload ----------------------------------------------------------------------
      let nextOpId = 0;
      let stopping = false;
      const stats = {
        remembers: 0,
        remembersAcked: 0,
        rememberAttemptsFailed: 0,
        failures: new Map<string, number>(),
        edits: 0,
        editsAcked: 0,
        reads: 0,
      };
      const acked = new Map<string, Agent>();
      const failureSamples: string[] = [];
      const failed = (reason: string, detail?: unknown) => {
        const n = (stats.failures.get(reason) ?? 0) + 1;
        stats.failures.set(reason, n);
        if (n <= 2 && detail !== undefined)
          failureSamples.push(`${reason}: ${JSON.stringify(detail).slice(0, 800)}`);
      };
      const request = async (
        path: string,
        method: string,
        body?: unknown,
        headers?: Record<string, string>,
      ) => {
        for (;;) {
          const live = upNodes();
          if (live.length > 0) {
            return http(pick(live).server!.url, method, path, body, {
              timeoutMs: ATTEMPT_TIMEOUT_MS,
              ...(headers === undefined ? {} : { headers }),
            });
          }
          await sleep(RETRY_PAUSE_MS);
        }
      };

      const remember = async (client: number, agent: Agent, item: string) => {
        stats.remembers += 1;
        const op: LogOp = { id: nextOpId++, client, call: now(), ret: null, input: { kind: "append", item } };
        agent.log.push(op);
        const deadline = now() + REMEMBER_DEADLINE_MS;
        while (now() < deadline) {
          try {
            const res = await request(
              `/v1/agents/${agent.id}/messages`,
              "POST",
              { messages: [{ role: "user", content: `remember: ${item}` }] },
              { "idempotency-key": `key-${item}` },
            );
            if (res.status === 200 && res.body.stop_reason?.stop_reason === "end_turn") {
              op.ret = now();
              op.output = { kind: "append" };
              stats.remembersAcked += 1;
              acked.set(item, agent);
              return;
            }
            failed(`${res.status} ${res.body?.code ?? res.body?.stop_reason?.stop_reason ?? ""}`, res.body);
          } catch (err) {
            // The node died under the request, or it timed out: retry with the same key.
            failed(String((err as Error).cause ?? (err as Error).name).replace(/:\d+$/, ""));
          }
          stats.rememberAttemptsFailed += 1;
          await sleep(RETRY_PAUSE_MS);
        }
      };

      // An edit is tried once: a PATCH has no idempotency key, so a failed one stays pending.
      const edit = async (client: number, agent: Agent, value: string): Promise<boolean> => {
        stats.edits += 1;
        const op: NotesOp = {
          id: nextOpId++,
          client,
          call: now(),
          ret: null,
          input: { kind: "write", value },
        };
        agent.notes.push(op);
        try {
          const res = await request(`/v1/agents/${agent.id}/core-memory/blocks/notes`, "PATCH", { value });
          if (res.status === 200 && res.body.value === value) {
            op.ret = now();
            op.output = { kind: "write" };
            stats.editsAcked += 1;
            return true;
          }
        } catch {}
        return false;
      };

      const readBlock = async (url: string | null, agent: Agent, label: string) => {
        const path = `/v1/agents/${agent.id}/core-memory/blocks/${label}`;
        const res =
          url === null
            ? await request(path, "GET")
            : await http(url, "GET", path, undefined, { timeoutMs: ATTEMPT_TIMEOUT_MS });
        return res.status === 200 ? (res.body.value as string) : null;
      };

      const read = async (
        client: number,
        agent: Agent,
        label: "notes" | "human",
        url: string | null = null,
      ) => {
        const call = now();
        let value: string | null = null;
        try {
          value = await readBlock(url, agent, label);
        } catch {}
        // A failed read changed nothing: it is left out of the history.
        if (value === null) return null;
        stats.reads += 1;
        const ret = now();
        if (label === "notes") {
          const output: RegisterOutput = { kind: "read", value: value === NOTES_INITIAL ? null : value };
          agent.notes.push({ id: nextOpId++, client, call, ret, input: { kind: "read" }, output });
        } else {
          const output: LogOutput = { kind: "read", items: value.match(ITEM) ?? [] };
          agent.log.push({ id: nextOpId++, client, call, ret, input: { kind: "read" }, output });
        }
        return value;
      };

      const client = async (c: number) => {
        for (let seq = 0; !stopping; seq += 1) {
          const agentIndex = Math.floor(Math.random() * agents.length);
          const agent = agents[agentIndex]!;
          const roll = Math.random();
          if (roll < 0.4) await remember(c, agent, `item-${c}-${seq}`);
          else if (roll < 0.7) await edit(c, agent, `v-${c}-${seq}`);
          else await read(c, agent, roll < 0.85 ? "notes" : "human");
          await sleep(between(THINK_MS));
        }
      };

      // --- the chaos: kill -9, restart, and probe the takeover with the old tokens ------------
      const failoverMs: number[] = [];
      const probes: { agent: string; token: number; outcome: ProbeOutcome }[] = [];
      const missedTakeovers: string[] = [];
      const watchTakeover = async (
        kill: { node: string; probes: number },
        before: Map<string, FenceRow>,
        killedAt: number,
      ) => {
        const victim = kill.node;
        const held = [...before.values()].filter((f) => f.node_id === victim && f.live);
        const waiting = new Set(held.map((f) => f.agent_id));
        while (waiting.size > 0 && now() - killedAt < TAKEOVER_WAIT_MS) {
          const current = await readFences(sql);
          for (const id of [...waiting]) {
            if ((current.get(id)?.token ?? 0) > before.get(id)!.token) {
              waiting.delete(id);
              // Once the clients stop, a takeover waits for the final edits: not a failover time.
              if (!stopping) failoverMs.push(now() - killedAt);
            }
          }
          if (waiting.size > 0) await sleep(TAKEOVER_POLL_MS);
        }
        for (const id of waiting) missedTakeovers.push(`${victim}: ${id}`);
        // Every token current before the kill that has been superseded since (the victim's among them).
        const current = await readFences(sql);
        for (const f of before.values()) {
          if ((current.get(f.agent_id)?.token ?? 0) <= f.token) continue;
          const agent = agents.find((a) => a.id === f.agent_id)!;
          const outcome = await commitWithToken(storage, f.agent_id, agent.notesBlockId, f.token);
          probes.push({ agent: f.agent_id, token: f.token, outcome });
          kill.probes += 1;
        }
      };

      const clients = Array.from({ length: CLIENTS }, (_, c) => client(c));
      const watchers: Promise<void>[] = [];
      const kills: { node: string; atMs: number; held: number; probes: number }[] = [];
      for (let k = 0; k < KILLS; k += 1) {
        await sleep(between(KILL_GAP_MS));
        const waitFrom = now();
        while (upNodes().length < NODES_UP_TO_KILL) {
          if (now() - waitFrom > NODES_UP_WAIT_MS)
            throw new Error(`nodes did not come back:\n${crashes.join("\n")}`);
          await sleep(RETRY_PAUSE_MS);
        }
        const before = await readFences(sql);
        const up = upNodes();
        // A random node, among those holding leases when any does: a takeover is what is tested.
        const holding = up.filter((n) => [...before.values()].some((f) => f.node_id === n.id && f.live));
        const victim = pick(holding.length > 0 ? holding : up);
        const server = victim.server!;
        victim.up = false;
        victim.server = null;
        await server.kill("SIGKILL");
        const killedAt = now();
        const kill = {
          node: victim.id,
          atMs: Math.round(killedAt),
          held: [...before.values()].filter((f) => f.node_id === victim.id && f.live).length,
          probes: 0,
        };
        kills.push(kill);
        watchers.push(watchTakeover(kill, before, killedAt));
        victim.restarting = start(victim);
        victim.restarting.catch(() => {});
        trace(
          `kill ${k + 1}: ${victim.id} held ${kills.at(-1)!.held}; ${JSON.stringify({ ...stats, failures: Object.fromEntries(stats.failures) })}`,
        );
      }
      trace(`kills done; crashes: ${crashes.join("\n")}`);
      await sleep(SETTLE_MS);
      stopping = true;
      await Promise.all(clients);
      trace("clients done");
      await Promise.all(nodes.map((n) => n.restarting));
      trace("restarts done");
      // One more edit of every agent, so that the last victims' leases are taken over too.
      for (const agent of agents) {
        for (let attempt = 0; attempt < FINAL_EDIT_ATTEMPTS; attempt += 1) {
          if (await edit(CLIENTS, agent, `final-${attempt}`)) break;
        }
      }
      await Promise.all(watchers);
      trace(`watchers done\n${failureSamples.join("\n")}`);
      expect(crashes, "nodes that died on their own").toEqual([]);

      // Final reads through every node: part of the history, and the ground truth for the counts.
      const finalLogs = new Map<string, string>();
      for (const agent of agents) {
        for (const node of nodes) {
          await read(CLIENTS, agent, "notes", node.server!.url);
          const value = await read(CLIENTS, agent, "human", node.server!.url);
          expect(value, `final read of ${agent.id} through ${node.id}`).not.toBeNull();
          finalLogs.set(agent.id, value!);
        }
      }

      // --- the verdicts ----------------------------------------------------------------------
      const lost: string[] = [];
      const doubled: string[] = [];
      for (const agent of agents) {
        const counts = new Map<string, number>();
        for (const item of finalLogs.get(agent.id)!.match(ITEM) ?? [])
          counts.set(item, (counts.get(item) ?? 0) + 1);
        for (const [item, n] of counts) if (n > 1) doubled.push(`${item} x${n}`);
        for (const [item, owner] of acked) if (owner === agent && counts.get(item) !== 1) lost.push(item);
      }
      const rejected: string[] = [];
      const unknown: string[] = [];
      for (const agent of agents) {
        for (const result of [
          checkLinearizable(agent.notes, registerModel),
          checkLinearizable(agent.log, appendLogModel),
        ]) {
          if (result.ok === false) rejected.push(`${agent.id}: ${result.reason}`);
          if (result.ok === "unknown") unknown.push(`${agent.id}: ${result.reason}`);
        }
      }
      const accepted = probes.filter((p) => p.outcome === "accepted");
      const notFenced = probes.filter((p) => p.outcome !== "fenced");
      const figures = {
        wall_s: Math.round(now() / 100) / 10,
        kills: kills.length,
        leases_held_at_kills: kills.reduce((n, k) => n + k.held, 0),
        failover_ms: {
          n: failoverMs.length,
          median: Math.round(median(failoverMs)),
          max: Math.round(Math.max(...failoverMs)),
        },
        ...stats,
        failures: Object.fromEntries(stats.failures),
        ops_in_history: agents.reduce((n, a) => n + a.notes.length + a.log.length, 0),
        pending_ops: agents.reduce(
          (n, a) => n + [...a.notes, ...a.log].filter((op) => op.ret === null).length,
          0,
        ),
        fencing_probes: probes.length,
        fenced: probes.length - notFenced.length,
      };
      console.log(`kill -9 cluster test: ${JSON.stringify(figures)}`);

      expect(kills.length).toBe(KILLS);
      expect(stats.remembersAcked, "the workload made progress").toBeGreaterThan(KILLS);
      expect(stats.editsAcked, "the workload made progress").toBeGreaterThan(KILLS);
      expect(lost, "acknowledged items missing from memory, or there more than once").toEqual([]);
      expect(doubled, "items applied more than once").toEqual([]);
      expect(rejected, "histories the checker rejected").toEqual([]);
      expect(unknown, "histories the checker could not decide").toEqual([]);
      expect(missedTakeovers, "leases of killed nodes nobody took over").toEqual([]);
      // Every kill of a node holding leases was followed by a probe of each token it held.
      expect(kills.filter((k) => k.probes < k.held)).toEqual([]);
      expect(probes.length, "stale tokens probed").toBeGreaterThanOrEqual(KILLS);
      expect(accepted, "commits accepted from a stale fencing token").toEqual([]);
      expect(notFenced, "stale commits refused for another reason than FENCED").toEqual([]);
      // Every node reads the same state.
      for (const agent of agents) {
        const through = await Promise.all(nodes.map((n) => readBlock(n.server!.url, agent, "human")));
        expect(new Set(through).size).toBe(1);
      }
    },
    TEST_TIMEOUT_MS,
  );
});
