// The cluster on PostgreSQL with real `kelpie serve` processes (3 nodes, lease TTL 2 s, a model that
// answers at once):
//  - failover: kill -9 of the node holding an agent's lease, then ops on that agent through another
//    node until the first succeeds; the floor is the lease TTL itself (`limit_ms`, `ratio`).
//  - forwarding: a small write (a block PATCH; a one-step message) sent to the lease holder vs to
//    another node that forwards it; the floor is one bare node:http proxy hop (`forward_limit_ms`).
//  - scale: message steps/s with 300 agents and 32 requests in flight, spread over 3 nodes vs all on
//    a 1-node cluster (its own database), in alternating windows. Every process here shares the
//    machine's cores with PostgreSQL, so on 2 cores 3 nodes cannot scale linearly.
import {
  cleanup,
  createDatabase,
  type KelpieNode,
  kelpieNode,
  sleep,
  startBareProxyPair,
  startInstantLlm,
} from "./cluster.ts";
import { nowMs, percentileMs, round3 } from "./stats.ts";

const LEASE_TTL_MS = 2_000;
const HEARTBEAT_INTERVAL_MS = LEASE_TTL_MS / 4;
const NODES_COUNT = 3;
const FAILOVER_TRIALS = 5;
const FAILOVER_GIVE_UP_MS = 30_000;
const FORWARD_WARMUP = 20;
const TIMED_RETRIES_MAX = 10;
const FORWARD_SAMPLES = 300;
const FORWARD_MESSAGE_SAMPLES = 80;
const AGENTS_COUNT = 300;
const CONCURRENCY = 32;
const CREATE_CONCURRENCY = 16;
/** Per cluster, in `THROUGHPUT_WINDOWS` windows. */
const THROUGHPUT_MS = 8_000;
const THROUGHPUT_WINDOWS = 4;

interface Answer {
  status: number;
  body: any;
}

async function call(url: string, method: string, path: string, body?: unknown): Promise<Answer> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? null : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, body: parsed };
}

function must(answer: Answer, what: string): any {
  if (answer.status < 200 || answer.status >= 300)
    throw new Error(`${what}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

async function createAgent(url: string, i: number): Promise<string> {
  const body = must(
    await call(url, "POST", "/v1/agents/", {
      name: `failover-${i}`,
      model: "openai/gpt-4o-mini",
      memory_blocks: [
        { label: "persona", value: "I am a benchmark agent." },
        { label: "human", value: `agent ${i}` },
      ],
    }),
    "create agent",
  );
  return body.id as string;
}

const sendMessage = (url: string, agentId: string, text: string) =>
  call(url, "POST", `/v1/agents/${agentId}/messages`, { messages: [{ role: "user", content: text }] });

const patchBlock = (url: string, agentId: string, value: string) =>
  call(url, "PATCH", `/v1/agents/${agentId}/core-memory/blocks/human`, { value });

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, fn: (item: T, index: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

type Sql = Awaited<ReturnType<typeof createDatabase>>["sql"];

async function leaseHolder(sql: Sql, agentId: string): Promise<string | null> {
  const rows = await sql`
    SELECT node_id FROM agent_fences WHERE agent_id = ${agentId} AND lease_expires_at > now()`;
  return rows.length === 0 ? null : String(rows[0]!.node_id);
}

/** `count` nodes on a fresh database (not started). */
async function cluster(count: number, prefix: string, llmUrl: string) {
  const db = await createDatabase();
  const nodes: KelpieNode[] = [];
  for (let i = 0; i < count; i++) {
    nodes.push(
      await kelpieNode({ nodeId: `${prefix}-${i}`, databaseUrl: db.url, llmUrl, leaseTtlMs: LEASE_TTL_MS }),
    );
  }
  return { db, nodes };
}

interface Trial {
  op: "message" | "patch";
  ms: number;
  attempts: number;
}

/** Kill -9 the lease holder of a fresh agent, then retry one op through the next node until it succeeds. */
async function failoverTrial(sql: Sql, nodes: KelpieNode[], t: number): Promise<Trial> {
  const victim = nodes[t % nodes.length]!;
  const via = nodes[(t + 1) % nodes.length]!;
  const agentId = await createAgent(via.url, 1_000 + t);
  must(await sendMessage(victim.url, agentId, "before"), "message to the lease holder");
  const holder = await leaseHolder(sql, agentId);
  if (holder !== victim.nodeId) throw new Error(`expected ${victim.nodeId} to hold the lease, not ${holder}`);
  // Kill at a random phase of the victim's heartbeat: its lease lapses a TTL after the last beat.
  await sleep(Math.random() * HEARTBEAT_INTERVAL_MS);
  const op: Trial["op"] = t % 2 === 0 ? "message" : "patch";
  const t0 = nowMs();
  await victim.kill("SIGKILL");
  let attempts = 0;
  for (;;) {
    attempts++;
    const answer =
      op === "message"
        ? await sendMessage(via.url, agentId, "after")
        : await patchBlock(via.url, agentId, "after");
    if (answer.status >= 200 && answer.status < 300) break;
    if (nowMs() - t0 > FAILOVER_GIVE_UP_MS)
      throw new Error(
        `no failover in ${FAILOVER_GIVE_UP_MS} ms: ${answer.status} ${JSON.stringify(answer.body)}`,
      );
    await sleep(20);
  }
  const ms = nowMs() - t0;
  const after = await leaseHolder(sql, agentId);
  if (after !== via.nodeId)
    throw new Error(`expected ${via.nodeId} to hold the lease after failover, not ${after}`);
  await victim.start();
  return { op, ms, attempts };
}

/** Interleaved timings of `op` against the owner and against a forwarding node. */
async function timePair(
  samples: number,
  owner: () => Promise<Answer>,
  forwarded: () => Promise<Answer>,
): Promise<{ direct: number[]; forwarded: number[]; retried: number }> {
  const out = { direct: [] as number[], forwarded: [] as number[], retried: 0 };
  const timeOne = async (fn: () => Promise<Answer>, into: number[], keep: boolean) => {
    for (;;) {
      const t0 = nowMs();
      const answer = await fn();
      const ms = nowMs() - t0;
      if (answer.status >= 200 && answer.status < 300) {
        if (keep) into.push(ms);
        return;
      }
      // A node starved of CPU long enough to miss its heartbeats for a TTL stops serving until the
      // next one lands (503, retryable): such a request is counted and sent again, not timed.
      if (answer.body?.retryable !== true || ++out.retried > TIMED_RETRIES_MAX) must(answer, "timed request");
      console.error(`retrying a timed request: ${answer.status} ${JSON.stringify(answer.body)}`);
      await sleep(HEARTBEAT_INTERVAL_MS);
    }
  };
  for (let i = 0; i < FORWARD_WARMUP + samples; i++) {
    const keep = i >= FORWARD_WARMUP;
    if (i % 2 === 0) {
      await timeOne(owner, out.direct, keep);
      await timeOne(forwarded, out.forwarded, keep);
    } else {
      await timeOne(forwarded, out.forwarded, keep);
      await timeOne(owner, out.direct, keep);
    }
  }
  return out;
}

async function bareWrite(url: string): Promise<Answer> {
  const res = await fetch(url, {
    method: "PATCH",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ value: "x" }),
  });
  const text = await res.text();
  return { status: res.status, body: text };
}

interface Load {
  /** Keeps `CONCURRENCY` message requests in flight for `ms`; adds to the totals. */
  drive(ms: number): Promise<void>;
  totals: { done: number; failed: number; ms: number };
}

/** Message load on `AGENTS_COUNT` fresh agents, each agent's requests sent to `nodes[i % n]`. */
async function prepareLoad(nodes: KelpieNode[]): Promise<Load> {
  const ids: string[] = new Array(AGENTS_COUNT);
  const nodeFor = (i: number) => nodes[i % nodes.length]!.url;
  await pool(ids, CREATE_CONCURRENCY, async (_, i) => {
    ids[i] = await createAgent(nodeFor(i), i);
  });
  // Warm-up: one message each, so every agent is active (and leased) where its load lands.
  await pool(ids, CONCURRENCY, async (id, i) => {
    must(await sendMessage(nodeFor(i), id, "warm-up"), "warm-up message");
  });
  const totals = { done: 0, failed: 0, ms: 0 };
  // Worker w sends to agents w, w + CONCURRENCY, ...: one request per agent in flight at most.
  const next = Array.from({ length: CONCURRENCY }, (_, w) => w);
  let firstError = "";
  return {
    totals,
    async drive(ms) {
      const t0 = nowMs();
      const deadline = t0 + ms;
      await Promise.all(
        next.map(async (_, w) => {
          while (nowMs() < deadline) {
            const j = next[w]!;
            next[w] = j + CONCURRENCY;
            const i = j % AGENTS_COUNT;
            const answer = await sendMessage(nodeFor(i), ids[i]!, `m${j}`);
            if (answer.status >= 200 && answer.status < 300) totals.done++;
            else {
              totals.failed++;
              if (firstError === "") {
                firstError = `${answer.status} ${JSON.stringify(answer.body)}`;
                console.error(`a message request failed: ${firstError}`);
              }
            }
          }
        }),
      );
      totals.ms += nowMs() - t0;
    },
  };
}

const perS = (t: Load["totals"]) => t.done / (t.ms / 1000);

export async function run(): Promise<Record<string, unknown>> {
  const startedMs = nowMs();
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const all: KelpieNode[] = [];
  let phaseMs = startedMs;
  const phase = (what: string) => {
    console.log(`${what}: ${Math.round(nowMs() - phaseMs)} ms`);
    phaseMs = nowMs();
  };
  try {
    const llmUrl = await startInstantLlm();
    const { db, nodes } = await cluster(NODES_COUNT, "bench", llmUrl);
    // The 1-node cluster for the scale figure starts now too (then idles): one startup less to wait.
    const solo = await cluster(1, "solo", llmUrl);
    all.push(...nodes, ...solo.nodes);
    await Promise.all(all.map((n) => n.start()));
    phase(`${NODES_COUNT} + 1 nodes up`);

    // Failover.
    const trials: Trial[] = [];
    for (let t = 0; t < FAILOVER_TRIALS; t++) {
      const trial = await failoverTrial(db.sql, nodes, t);
      console.log(
        `failover trial ${t}: ${trial.op} ok after ${Math.round(trial.ms)} ms, ${trial.attempts} attempt(s)`,
      );
      trials.push(trial);
    }
    const failoverMs = trials.map((t) => t.ms);
    phase("failover trials");

    // Forwarding: nodes[0] holds the agent's lease, nodes[1] forwards to it.
    const owner = nodes[0]!;
    const other = nodes[1]!;
    const agentId = await createAgent(owner.url, 2_000);
    must(await patchBlock(owner.url, agentId, "claim"), "claim");
    if ((await leaseHolder(db.sql, agentId)) !== owner.nodeId)
      throw new Error("owner does not hold the lease");
    let v = 0;
    const patches = await timePair(
      FORWARD_SAMPLES,
      () => patchBlock(owner.url, agentId, `v${v++}`),
      () => patchBlock(other.url, agentId, `v${v++}`),
    );
    phase("block patches, owner vs forwarded");
    const messageAgent = await createAgent(owner.url, 2_001);
    must(await sendMessage(owner.url, messageAgent, "claim"), "claim");
    const messages = await timePair(
      FORWARD_MESSAGE_SAMPLES,
      () => sendMessage(owner.url, messageAgent, `m${v++}`),
      () => sendMessage(other.url, messageAgent, `m${v++}`),
    );
    phase("messages, owner vs forwarded");
    // A lease that moved mid-way (its holder missed heartbeats for a TTL) blurs owner vs forwarded.
    const leaseMoved =
      (await leaseHolder(db.sql, agentId)) !== owner.nodeId ||
      (await leaseHolder(db.sql, messageAgent)) !== owner.nodeId;
    if (leaseMoved) console.error("warning: a lease moved away from the owner while timing");
    const bare = await startBareProxyPair();
    const hop = await timePair(
      FORWARD_SAMPLES,
      () => bareWrite(bare.direct),
      () => bareWrite(bare.proxied),
    );
    phase("bare proxy hop");

    // Scale: 3 nodes, then (on a fresh database) 1 node.
    // Scale: windows on 3 nodes and on 1 node alternate (ABBA), so drifting load elsewhere on the
    // machine weighs on both alike; the cluster not driven idles (heartbeats only).
    const three = await prepareLoad(nodes);
    const one = await prepareLoad(solo.nodes);
    phase("scale setup (agents created, warmed up)");
    for (let w = 0; w < THROUGHPUT_WINDOWS; w++) {
      const [first, second] = w % 2 === 0 ? [three, one] : [one, three];
      await first.drive(THROUGHPUT_MS / THROUGHPUT_WINDOWS);
      await second.drive(THROUGHPUT_MS / THROUGHPUT_WINDOWS);
    }
    phase("throughput, 3 nodes vs 1 node");

    const failoverP50 = percentileMs(failoverMs, 50);
    const failoverMax = percentileMs(failoverMs, 100);
    const patchDirectP50 = percentileMs(patches.direct, 50);
    const patchForwardedP50 = percentileMs(patches.forwarded, 50);
    const forwardOverhead = round3(patchForwardedP50 - patchDirectP50);
    const messageDirectP50 = percentileMs(messages.direct, 50);
    const messageForwardedP50 = percentileMs(messages.forwarded, 50);
    const forwardLimit = round3(percentileMs(hop.forwarded, 50) - percentileMs(hop.direct, 50));
    console.log(
      `${NODES_COUNT} kelpie serve processes on PostgreSQL, lease TTL ${LEASE_TTL_MS} ms, 0 ms model; ` +
        `${FAILOVER_TRIALS} kill -9 trials; ${AGENTS_COUNT} agents x ${CONCURRENCY} in flight for ${THROUGHPUT_MS} ms; ` +
        `${Math.round((nowMs() - startedMs) / 1000)} s in all`,
    );
    return {
      lease_ttl_ms: LEASE_TTL_MS,
      failover_ms: round3(failoverMax),
      failover_p50_ms: failoverP50,
      failover_max_ms: failoverMax,
      failover_trials_ms: failoverMs.map((ms) => Math.round(ms)),
      failover_target_ms: LEASE_TTL_MS + 1_000,
      limit_ms: LEASE_TTL_MS,
      ratio: round3(failoverMax / LEASE_TTL_MS),
      owner_p50_ms: patchDirectP50,
      owner_p99_ms: percentileMs(patches.direct, 99),
      forwarded_p50_ms: patchForwardedP50,
      forwarded_p99_ms: percentileMs(patches.forwarded, 99),
      forward_overhead_p50_ms: forwardOverhead,
      forward_limit_ms: forwardLimit,
      forward_ratio: round3(forwardOverhead / forwardLimit),
      message_owner_p50_ms: messageDirectP50,
      message_forwarded_p50_ms: messageForwardedP50,
      message_forward_overhead_p50_ms: round3(messageForwardedP50 - messageDirectP50),
      agents: AGENTS_COUNT,
      concurrency: CONCURRENCY,
      steps_per_s_3_nodes: Math.round(perS(three.totals)),
      steps_per_s_1_node: Math.round(perS(one.totals)),
      scale_ratio: round3(perS(three.totals) / perS(one.totals)),
      failed_requests: three.totals.failed + one.totals.failed,
      retried_timed_requests: patches.retried + messages.retried,
      lease_moved_while_timing: leaseMoved,
      // Nodes that went a lease TTL without a heartbeat landing (CPU starvation on a shared machine).
      lease_lapses: all.reduce((n, node) => n + node.lapses(), 0),
    };
  } catch (err) {
    // A node that died on its own says why.
    for (const n of all) {
      const out = n.output().trim();
      if (out !== "") console.error(`--- ${n.nodeId} (${n.running() ? "running" : "not running"}):\n${out}`);
    }
    throw err;
  } finally {
    await cleanup();
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}
