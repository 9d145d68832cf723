// The invariants, checked against the disk itself (what survives) after every restart and at the
// end, and against the clients' histories at the end:
// - durability: every acknowledged create, message, block append, passage and delete is there;
// - idempotency: no effect appears more often than its request reached a server;
// - atomicity: an agent's in-context message ids and block ids all exist (no half-applied step);
// - limits: no block holds more than its limit, and appended entries are whole (no truncation);
// - bounded resources: mailboxes and runs in flight never exceed the requests in flight;
// - linearizability of each agent's scratch block (a register) and working memory (a map),
//   with the disk reads taken here added to the histories.

import { textOf } from "../agent/history.ts";
import { OUTBOX_SENDERS_DELIVERING_MAX } from "../agent/outbox.ts";
import { assert } from "../core/assert.ts";
import { WORKING_MEMORY_AGENT_BYTES_MAX, WORKING_MEMORY_KEYS_PER_AGENT_MAX } from "../core/constants.ts";
import type { MemoryStorage } from "../storage/memory.ts";
import { AGENT_CALL_DEPTH_MAX } from "../tools/multi-agent.ts";
import { IMPORTED_BLOCK_LABEL } from "./agent-file.ts";
import type { SimCluster } from "./cluster.ts";
import type { History } from "./history.ts";
import {
  boundedMapModel,
  checkLinearizable,
  conversationModel,
  kvMapModel,
  kvPartitionByKey,
  registerModel,
} from "./linearizability.ts";
import { LOG_BLOCK_LABEL, newBlockLabel, peerMessage, SCRATCH_BLOCK_LABEL } from "./sim-llm.ts";
import { logBlockProblems, WORKING_KEYS } from "./workload.ts";

const ALL = { limit: 1_000_000_000, order: "asc" as const };
/** Outbox entries read per sender (more than OUTBOX_ENTRIES_PER_AGENT_MAX, so all of them). */
const OUTBOX_SCAN_MAX = 1_000;
/** Model steps the linearizability search may take per run before it answers "unknown". */
export const LINEARIZABILITY_BUDGET = 2_000_000;
/** The checker's reads use client ids from here up (a block of ids per checkpoint), apart from the workload's. */
const CHECKER_CLIENT_BASE = 1_000_000;

function count<T>(items: T[], pred: (item: T) => boolean): number {
  let n = 0;
  for (const item of items) if (pred(item)) n++;
  return n;
}

/** Reads what survived on the disk and checks it; `where` names the checkpoint in violations. */
export async function checkDisk(
  disk: MemoryStorage,
  history: History,
  where: string,
  index: number,
  /** The run has settled: every async message acknowledged as sent must have arrived. */
  final = false,
): Promise<void> {
  const v = (text: string) => history.violation(`${where}: ${text}`);
  // The checker's reads all span the whole checkpoint (call before the first read, return after
  // the last), each as its own client, so they claim no more about timing than is true.
  const call = history.tick();
  let client = CHECKER_CLIENT_BASE + index * 10_000;
  const registerReads: { agentId: string; value: string }[] = [];
  const mapReads: { key: string; value: string | null }[] = [];
  const ackedSends = history.ackedSends.slice();
  const ackedPassages = history.ackedPassages.slice();
  for (const agent of history.agents) {
    const record = await disk.getAgent(agent.id);
    if (agent.deleteAcked) {
      if (record !== null) v(`agent ${agent.name} was deleted (acknowledged) but is back`);
      continue;
    }
    if (record === null) {
      if (!agent.deleteSent) v(`agent ${agent.name} was created (acknowledged) but is gone`);
      continue;
    }
    const name = agent.name;
    const blocks = await disk.getBlocks(record.block_ids);
    if (blocks.length !== record.block_ids.length) v(`agent ${name} names blocks that do not exist`);
    for (const b of blocks) {
      if (b.value.length > b.limit)
        v(`agent ${name} block ${b.label} holds ${b.value.length} > ${b.limit} characters`);
    }
    const messages = await disk.listMessages(agent.id, ALL);
    const messageIds = new Set(messages.map((m) => m.id));
    const dangling = record.message_ids.filter((id) => !messageIds.has(id));
    if (dangling.length > 0) v(`agent ${name} has ${dangling.length} in-context message ids with no message`);
    const log = blocks.find((b) => b.label === LOG_BLOCK_LABEL)?.value ?? "";
    const logProblem = logBlockProblems(log);
    if (logProblem !== null) v(`agent ${name}: ${logProblem}`);
    const logEntries = log.split("\n");
    const archives = await disk.tiers.listAgentArchives(agent.id);
    const passages = await disk.tiers.listPassages(
      archives.map((a) => a.id),
      ALL,
    );
    const passageIds = new Set(passages.map((p) => p.id));
    // An agent's own archive is made once, on first use, in its mailbox.
    const own = count(archives, (a) => a.owner_agent_id === agent.id);
    if (own > 1) v(`agent ${name} owns ${own} archives (its own archive was made more than once)`);

    // Durability of acknowledged sends and inserts.
    for (const s of ackedSends) {
      if (s.agentId !== agent.id) continue;
      const missing = s.messageIds.filter((id) => !messageIds.has(id));
      if (missing.length > 0)
        v(`agent ${name}: ${missing.length} messages of acknowledged send ${s.token} are missing`);
      if (s.appendOk && !logEntries.includes(`${s.token};`))
        v(`agent ${name}: block append of acknowledged send ${s.token} is missing`);
      if (s.archivalOk && !passages.some((p) => p.text === `passage ${s.token}`))
        v(`agent ${name}: passage of acknowledged send ${s.token} is missing`);
      if (!messages.some((m) => m.otid === s.token && m.role === "user"))
        v(`agent ${name}: input message of acknowledged send ${s.token} is missing`);
      if (s.newblockOk && !blocks.some((b) => b.label === newBlockLabel(s.token)))
        v(`agent ${name}: block ${newBlockLabel(s.token)} the memory tool created in ${s.token} is missing`);
    }
    // Async messages to this agent: applied at most once per sending turn, and once the run
    // settled, at least once (or still waiting in the sender's outbox).
    for (const s of ackedSends) {
      if (s.tellTo !== agent.id) continue;
      const said = `] ${peerMessage("tell", s.token)}`;
      const received = count(messages, (m) => m.role === "user" && textOf(m).endsWith(said));
      // Each attempt of the send that reached a server may have run a turn that sent it once.
      const sent = history.deliveries.get(s.token) ?? 0;
      if (received > sent)
        v(
          `agent ${name} received the async message of ${s.token} ${received} times, sent by ${sent} attempt(s)`,
        );
      const sender = history.agentsById.get(s.agentId);
      if (!final || received > 0 || sender?.deleteSent === true) continue;
      // Not there yet is fine while the sender's outbox still holds it (a retry waits its backoff).
      const pending = await disk.listOutbox(s.agentId, OUTBOX_SCAN_MAX);
      if (pending.some((e) => e.target_agent_id === agent.id && e.text.endsWith(said))) continue;
      const audits = await disk.listAudit(ALL);
      const givenUp = audits.find(
        (a) =>
          a.action === "outbox.undeliverable" && a.actor === `agent:${s.agentId}` && a.target === agent.id,
      );
      v(
        `agent ${name} never received the async message of ${s.token}, acknowledged to its sender as sent, ` +
          `and no outbox holds it${givenUp === undefined ? "" : ` (given up: ${JSON.stringify(givenUp.detail)})`}`,
      );
    }
    for (const p of ackedPassages) {
      if (p.agentId !== agent.id) continue;
      if (p.passageIds.some((id) => !passageIds.has(id)))
        v(`agent ${name}: acknowledged passage ${p.token} is missing`);
    }

    // Idempotency: no effect more often than its request was delivered.
    const tokens = new Set<string>();
    for (const e of logEntries) if (e !== "") tokens.add(e.slice(0, -1));
    for (const p of passages) tokens.add(p.text.slice("passage ".length));
    for (const m of messages) if (m.role === "user" && m.otid !== null) tokens.add(m.otid);
    for (const token of tokens) {
      const delivered = history.deliveries.get(token) ?? 0;
      const appended = count(logEntries, (e) => e === `${token};`);
      const inserted = count(passages, (p) => p.text === `passage ${token}`);
      const inputs = count(messages, (m) => m.role === "user" && m.otid === token);
      const most = Math.max(appended, inserted, inputs);
      if (most > delivered)
        v(
          `agent ${name}: request ${token} reached a server ${delivered} time(s) but took effect ${most} times ` +
            `(appends ${appended}, passages ${inserted}, inputs ${inputs})`,
        );
    }

    // Working memory within its limits, whatever ran at once.
    const working = await disk.tiers.listWorking(agent.id);
    const workingBytes = working.reduce((n, e) => n + e.size_bytes, 0);
    if (working.length > WORKING_MEMORY_KEYS_PER_AGENT_MAX || workingBytes > WORKING_MEMORY_AGENT_BYTES_MAX)
      v(
        `agent ${name}: working memory holds ${working.length} keys and ${workingBytes} bytes, over its limits ` +
          `(${WORKING_MEMORY_KEYS_PER_AGENT_MAX} keys, ${WORKING_MEMORY_AGENT_BYTES_MAX} bytes)`,
      );

    // The register and the map, as the disk holds them now, join the histories.
    const scratch = blocks.find((b) => b.label === SCRATCH_BLOCK_LABEL);
    if (scratch !== undefined) registerReads.push({ agentId: agent.id, value: scratch.value });
    for (const key of WORKING_KEYS) {
      const entry = await disk.tiers.getWorking(agent.id, key);
      mapReads.push({
        key: `${agent.id}/${key}`,
        value: typeof entry?.value === "string" ? entry.value : null,
      });
    }
  }
  const conversationReads: {
    ops: History["conversations"][number]["ops"];
    summary: string | null;
    ids: string[];
  }[] = [];
  for (const c of history.conversations) {
    if (history.agentsById.get(c.agentId)?.deleteSent === true) continue;
    const record = await disk.getConversation(c.id);
    if (record === null) {
      v(`conversation ${c.id} (acknowledged) is gone`);
      continue;
    }
    conversationReads.push({ ops: c.ops, summary: record.summary, ids: record.in_context_message_ids });
  }
  for (const a of history.archives) {
    const passages = await disk.tiers.listPassages([a.id], ALL);
    for (const p of a.passages) {
      if (!passages.some((x) => x.id === p.passageId))
        v(`archive ${a.id}: acknowledged passage ${p.token} is missing`);
    }
  }
  await checkImports(disk, history, v);
  const ret = history.tick();
  assert(
    registerReads.length + mapReads.length < 10_000,
    "a checkpoint reads more than its block of client ids",
  );
  for (const r of registerReads) {
    history.registerOps.get(r.agentId)!.push({
      id: history.nextOpId(),
      client: client++,
      call,
      ret,
      input: { kind: "read" },
      output: { kind: "read", value: r.value },
    });
  }
  for (const r of conversationReads) {
    r.ops.push({
      id: history.nextOpId(),
      client: client++,
      call,
      ret,
      input: { kind: "read" },
      output: { kind: "read", summary: r.summary, ids: r.ids },
    });
  }
  for (const r of mapReads) {
    history.kvOps.push({
      id: history.nextOpId(),
      client: client++,
      call,
      ret,
      input: { kind: "get", key: r.key },
      output: { kind: "get", value: r.value },
    });
  }
}

/**
 * Imports of the agent file: at most one agent per import (its retries carry one Idempotency-Key),
 * none for a refused one, the acknowledged ones there, and each imported agent whole (its block
 * and its message), never half an import.
 */
async function checkImports(disk: MemoryStorage, history: History, v: (text: string) => void): Promise<void> {
  if (history.imports.length === 0) return;
  const all = await disk.listAgents({ limit: 1_000_000, order: "asc" });
  const agents = all.filter((a) => a.name.startsWith("af-"));
  for (const imp of history.imports) {
    const made = agents.filter((a) => a.name === imp.name);
    // One Idempotency-Key should make that one agent; the key's record is not yet written with the
    // import (a retry after a failed answer imports again), so the bound is the attempts delivered.
    const delivered = history.deliveries.get(imp.name) ?? 0;
    if (made.length > Math.max(1, delivered))
      v(`import ${imp.name} made ${made.length} agents in ${delivered} attempt(s)`);
    if (imp.outcome === "rejected" && made.length > 0) v(`import ${imp.name} was refused but made an agent`);
    if (imp.outcome === "acked" && imp.agentIds.some((id) => !made.some((a) => a.id === id)))
      v(`import ${imp.name} was acknowledged but its agent is missing`);
    for (const agent of made) {
      const blocks = await disk.getBlocks(agent.block_ids);
      const messages = await disk.listMessages(agent.id, ALL);
      if (!blocks.some((b) => b.label === IMPORTED_BLOCK_LABEL) || messages.length === 0)
        v(`import ${imp.name} left half an agent (${blocks.length} blocks, ${messages.length} messages)`);
    }
  }
}

/**
 * Mailboxes and runs in flight on each live node are bounded by the work it has: the requests it
 * is serving and the async messages it is delivering (at most OUTBOX_SENDERS_DELIVERING_MAX at
 * once), each with the turns it may call synchronously along a chain of agents.
 */
export function checkBounded(cluster: SimCluster, history: History, where: string): void {
  for (const node of cluster.liveNodes()) {
    if (node.kelpie === null) continue;
    const stats = node.services.runtime.stats();
    const work = node.inFlight + OUTBOX_SENDERS_DELIVERING_MAX;
    const bound = work * (AGENT_CALL_DEPTH_MAX + 1);
    if (stats.mailboxDepthTotal > bound) {
      history.violation(
        `${where}: node n${node.id} holds ${stats.mailboxDepthTotal} ops in mailboxes for ${node.inFlight} requests`,
      );
    }
    const runs = node.services.messages.activeRunsCount();
    if (runs > bound)
      history.violation(
        `${where}: node n${node.id} has ${runs} runs in flight for ${node.inFlight} requests`,
      );
    if (stats.activeCount > history.agents.length + node.inFlight) {
      history.violation(
        `${where}: node n${node.id} keeps ${stats.activeCount} activations for ${history.agents.length} agents`,
      );
    }
  }
}

/** Every agent's register history and the working-memory map history must be linearizable. */
export function checkHistories(history: History): void {
  for (const agent of history.agents) {
    const ops = history.registerOps.get(agent.id)!;
    const result = checkLinearizable(ops, registerModel, { budget: LINEARIZABILITY_BUDGET });
    if (result.ok === false)
      history.violation(`scratch block of ${agent.name} is not linearizable: ${result.reason}`);
    else if (result.ok === "unknown") history.violation(`scratch block of ${agent.name}: ${result.reason}`);
  }
  // A deleted agent's working memory goes with it, which the map does not model: reads answered
  // after the delete was sent are left out, and so are writes called after it (no read kept can
  // see them). Found by seed 464: a read racing the delete saw the key gone.
  const kvOps = history.kvOps.filter((op) => {
    const agentId = op.input.key.slice(0, op.input.key.lastIndexOf("/"));
    const deleteSentAt = history.agentsById.get(agentId)?.deleteSentAt ?? null;
    if (deleteSentAt === null) return true;
    return op.input.kind === "get" ? op.ret !== null && op.ret < deleteSentAt : op.call < deleteSentAt;
  });
  const result = checkLinearizable(kvOps, kvMapModel, {
    partition: kvPartitionByKey,
    budget: LINEARIZABILITY_BUDGET,
  });
  if (result.ok === false) history.violation(`working memory is not linearizable: ${result.reason}`);
  else if (result.ok === "unknown") history.violation(`working memory: ${result.reason}`);
  // Working memory's limits: every put accepted or refused as a map with those limits would.
  const limits = boundedMapModel({
    keysMax: WORKING_MEMORY_KEYS_PER_AGENT_MAX,
    bytesMax: WORKING_MEMORY_AGENT_BYTES_MAX,
  });
  for (const agent of history.agents) {
    const ops = history.workingSizeOps.get(agent.id) ?? [];
    if (agent.deleteSent || ops.length === 0) continue;
    const sized = checkLinearizable(ops, limits, { budget: LINEARIZABILITY_BUDGET });
    if (sized.ok === false)
      history.violation(`working memory limits of ${agent.name} are not linearizable: ${sized.reason}`);
    else if (sized.ok === "unknown")
      history.violation(`working memory limits of ${agent.name}: ${sized.reason}`);
  }
  for (const c of history.conversations) {
    if (history.agentsById.get(c.agentId)?.deleteSent === true) continue;
    const conv = checkLinearizable(c.ops, conversationModel, { budget: LINEARIZABILITY_BUDGET });
    if (conv.ok === false) history.violation(`conversation ${c.id} is not linearizable: ${conv.reason}`);
    else if (conv.ok === "unknown") history.violation(`conversation ${c.id}: ${conv.reason}`);
  }
}
