// The workload: a few clients, each issuing a seeded mix of API-level operations on many agents
// (create, message with tool chains, block edits and reads, working-memory puts and gets, archival
// inserts and searches, deletes) through the simulated network to any node of the cluster (the
// node forwards a request to its agent's owner), with timeouts and retries as a real client
// would. Each call and its outcome go into the history; what can be checked at once (values
// clipped, limits ignored, a search missing an acknowledged passage) is checked at once.
import type { Rng } from "../core/rng.ts";
import type { SimCluster, SimNode } from "./cluster.ts";
import type { History, ImportFacts } from "./history.ts";
import { serveHttp } from "./http.ts";
import type {
  BoundedMapInput,
  BoundedMapOutput,
  ConversationInput,
  ConversationOutput,
  KvInput,
  KvOutput,
  Operation,
  RegisterInput,
  RegisterOutput,
} from "./linearizability.ts";
import type { BugSwitches } from "./mutations.ts";
import type { SimNetwork } from "./network.ts";
import { type Reply, type Request, SCRATCH_BLOCK_LIMIT_CHARS } from "./requests.ts";
import type { SimScheduler } from "./scheduler.ts";
import { LOG_BLOCK_LABEL, type PlanStep, SCRATCH_BLOCK_LABEL } from "./sim-llm.ts";

export const CLIENT_ATTEMPTS_MAX = 3;
export const CLIENT_TIMEOUT_MS = 4_000;
export const CLIENT_SEND_TIMEOUT_MS = 10_000;
export const CLIENT_THINK_MS_MAX = 400;
export const CLIENT_BACKOFF_MS = 250;
export const WORKING_KEYS = ["k0", "k1", "k2"] as const;
/** Large working-memory puts sent at once to one agent, to keys f0..f<count-1>, this big each. */
export const WORKING_FILL_BURST = 8;
export const WORKING_FILL_KEYS_COUNT = 24;
export const WORKING_FILL_VALUE_CHARS = 60_000;
/** Working-memory values name their op in this many digits, so a key's puts are all one size. */
const WORKING_VALUE_ID_DIGITS = 9;
/** Archival inserts sent at once as an agent's first (its own archive is made on first use). */
export const ARCHIVAL_FIRST_BURST = 3;
/** History client ids of concurrent connections start here (the checker's start at 1,000,000). */
const BURST_CLIENT_BASE = 10_000;
/** Agents deleted in one run at most, so most of the run works on live agents. */
export const AGENT_DELETES_MAX = 2;

export interface WorkloadDeps {
  scheduler: SimScheduler;
  cluster: SimCluster;
  network: SimNetwork;
  history: History;
  rng: Rng;
  bugs: BugSwitches;
  trace: (line: string) => void;
}

/** A well-formed log block: appended tokens, each whole (a clipped one would show). */
export function logBlockProblems(value: string): string | null {
  for (const segment of value.split("\n")) {
    if (segment !== "" && !/^t\d+;$/.test(segment)) return `log block holds a malformed entry '${segment}'`;
  }
  return null;
}

type Outcome = { kind: "reply"; reply: Reply } | { kind: "timeout" } | { kind: "reset" };

/** After a partition, the load balancer resets the connections to the lost node this soon. */
export const CONNECTION_RESET_MS = 100;

export class Workload {
  private deletes = 0;
  /** Agents that had an archival insert sent. */
  private readonly archivalUsed = new Set<string>();
  /** Requests waiting on each node, to reset when the node is partitioned away. */
  private readonly waiting = new Map<number, Set<() => void>>();
  /** Which node each attempt goes to (a stream of its own, so routing does not reshuffle the ops). */
  private readonly routeRng: Rng;

  constructor(private readonly deps: WorkloadDeps) {
    this.routeRng = deps.rng.fork("route");
    deps.network.onPartition.push((nodeId) => {
      for (const reset of this.waiting.get(nodeId) ?? []) deps.scheduler.schedule(CONNECTION_RESET_MS, reset);
    });
  }

  /** Sends a request to a node through the network; the node serves it (or has its owner serve it). */
  private rpc(
    node: SimNode,
    client: number,
    req: Request,
    label: string,
    timeoutMs: number,
  ): Promise<Outcome> {
    const { scheduler, network, trace } = this.deps;
    let waiting = this.waiting.get(node.id);
    if (waiting === undefined) {
      waiting = new Set();
      this.waiting.set(node.id, waiting);
    }
    const pending = waiting;
    return new Promise((resolve) => {
      let settled = false;
      const settle = (outcome: Outcome) => {
        if (settled) return;
        settled = true;
        timer.cancel();
        pending.delete(reset);
        resolve(outcome);
      };
      const reset = () => settle({ kind: "reset" });
      pending.add(reset);
      const timer = scheduler.schedule(timeoutMs, () => settle({ kind: "timeout" }));
      network.send({ client, node: node.id, toNode: true }, `${label} request`, () => {
        if (node.state === "dead" || node.state === "booting") return;
        node.inFlight++;
        if ("token" in req) this.deps.history.delivered(req.token);
        void serveHttp(node, req, this.deps.bugs).then((reply) => {
          node.inFlight--;
          if (node.state === "dead") return;
          network.send({ client, node: node.id, toNode: false }, `${label} reply`, () => {
            if (settled) return trace(`${label} late reply dropped`);
            settle({ kind: "reply", reply });
          });
        });
      });
    });
  }

  /**
   * Runs one operation to an outcome: retries on timeouts and retryable errors. Returns the reply
   * that settled it (ok or a definite error), or null when every attempt was lost or failed.
   */
  private async execute(
    client: number,
    opId: number,
    req: Request,
    record: (call: number, ret: number | null, reply: Reply | null) => void,
  ): Promise<Reply | null> {
    const { scheduler, cluster, history, trace } = this.deps;
    const agent = "agentId" in req ? ` ${history.nameOf(req.agentId)}` : "";
    for (let attempt = 1; attempt <= CLIENT_ATTEMPTS_MAX; attempt++) {
      const label = `c${client} op${opId}.${attempt} ${req.kind}${agent}`;
      const node = cluster.pickNode(this.routeRng);
      if (node === null) {
        trace(`${label} no server`);
        await scheduler.sleep(CLIENT_BACKOFF_MS * attempt);
        continue;
      }
      const call = history.tick();
      trace(`${label} call n${node.id}`);
      const timeoutMs = req.kind === "send" ? CLIENT_SEND_TIMEOUT_MS : CLIENT_TIMEOUT_MS;
      const outcome = await this.rpc(node, client, req, label, timeoutMs);
      if (outcome.kind === "reply" && outcome.reply.ok) {
        const ret = history.tick();
        trace(`${label} ok ${summary(outcome.reply)}`);
        record(call, ret, outcome.reply);
        return outcome.reply;
      }
      if (outcome.kind === "reply" && !outcome.reply.ok) {
        const { reply } = outcome;
        trace(`${label} error ${reply.code}`);
        if (reply.code.startsWith("UNEXPECTED_") || reply.code === "INTERNAL") {
          history.violation(
            `${label}: the server failed with an unexpected error: ${reply.code} ${reply.message}`,
          );
        }
        // The op may or may not have taken effect: it stays pending (no return) in the history.
        record(call, null, reply);
        if (!reply.retryable) return reply;
      } else {
        trace(`${label} ${outcome.kind}`);
        record(call, null, null);
      }
      await scheduler.sleep(CLIENT_BACKOFF_MS * attempt);
    }
    return null;
  }

  private pickAgent(): string | null {
    const live = this.deps.history.liveAgents();
    return live.length === 0 ? null : live[this.deps.rng.int(live.length)]!.id;
  }

  /** One client: `opsCount` operations, each after a seeded think time. */
  async client(client: number, opsCount: number): Promise<void> {
    const { rng, scheduler } = this.deps;
    for (let i = 0; i < opsCount; i++) {
      await scheduler.sleep(rng.int(CLIENT_THINK_MS_MAX));
      const roll = rng.int(100);
      const agentId = this.pickAgent();
      if (agentId === null || roll < 3) await this.createAgent(client);
      else if (roll < 26) await this.send(client, agentId);
      else if (roll < 30) await this.concurrentSends(client, agentId);
      else if (roll < 42) await this.blockWrite(client, agentId);
      else if (roll < 52) await this.blockRead(client, agentId);
      else if (roll < 59) await this.workingPut(client, agentId);
      else if (roll < 65) await this.workingGet(client, agentId);
      else if (roll < 70) await this.archivalInsert(client, agentId);
      else if (roll < 74) await this.archivalSearch(client, agentId);
      else if (roll < 79) await this.workingFill(client);
      else if (roll < 81) await this.conversationCreate(client, agentId);
      else if (roll < 88) await this.conversationOp(client);
      else if (roll < 93) await this.archiveOp(client, agentId);
      else if (roll < 95) await this.importAgent(client);
      else if (roll < 97 && this.deletes < AGENT_DELETES_MAX && this.deps.history.liveAgents().length > 2)
        await this.deleteAgent(client, agentId);
      else await this.blockRead(client, agentId);
    }
  }

  async createAgent(client: number): Promise<string | null> {
    const { history } = this.deps;
    const opId = history.nextOpId();
    let initWrite: Operation<RegisterInput, RegisterOutput> | null = null;
    const reply = await this.execute(
      client,
      opId,
      { kind: "create_agent", name: `dst-${opId}` },
      (call, ret, r) => {
        if (r?.ok && r.value.kind === "create_agent") {
          // The new scratch block's first value is a write the create made.
          initWrite = {
            id: opId,
            client,
            call,
            ret,
            input: { kind: "write", value: "init" },
            output: { kind: "write" },
          };
        }
      },
    );
    if (reply === null || !reply.ok || reply.value.kind !== "create_agent") return null;
    const facts = history.addAgent(reply.value.agentId);
    history.registerOps.get(facts.id)!.push(initWrite!);
    return facts.id;
  }

  /** Two sends to one agent at once (one client, two connections): two whole turns, one after the other. */
  private async concurrentSends(client: number, agentId: string): Promise<void> {
    await Promise.all([this.send(client, agentId), this.send(client, agentId)]);
  }

  private async send(client: number, agentId: string): Promise<void> {
    const { history, rng } = this.deps;
    const opId = history.nextOpId();
    const token = `t${opId}`;
    const plan: PlanStep[] = [];
    if (rng.next() < 0.7) plan.push("append");
    if (rng.next() < 0.3) plan.push("archival");
    if (rng.next() < 0.3) plan.push("sandbox");
    if (rng.next() < 0.25) plan.push("newblock");
    // Another agent to message, synchronously (waiting for its answer) or through the outbox.
    const others = history.liveAgents().filter((a) => a.id !== agentId);
    const peer = others.length === 0 ? undefined : others[rng.int(others.length)]!.id;
    if (peer !== undefined && rng.next() < 0.15) plan.push("ask");
    if (peer !== undefined && rng.next() < 0.25) plan.push("tell");
    plan.push("send");
    const req: Request = {
      kind: "send",
      agentId,
      opId,
      token,
      plan,
      ...(peer === undefined ? {} : { peer }),
    };
    const reply = await this.execute(client, opId, req, () => {});
    if (reply?.ok && reply.value.kind === "send") {
      const { steps } = reply.value;
      history.ackedSends.push({
        agentId,
        token,
        messageIds: reply.value.messageIds,
        appendOk: steps.append === "success",
        archivalOk: steps.archival === "success",
        newblockOk: steps.newblock === "success",
        tellTo: steps.tell === "success" ? (peer ?? null) : null,
      });
    }
  }

  private async blockWrite(client: number, agentId: string): Promise<void> {
    const { history, rng } = this.deps;
    const opId = history.nextOpId();
    // One write in ten is over the block's limit: it must be rejected, never clipped.
    const over = rng.int(10) === 0;
    const value = over ? `s${opId}-${"x".repeat(SCRATCH_BLOCK_LIMIT_CHARS)}` : `s${opId}`;
    const ops = history.registerOps.get(agentId)!;
    const name = history.nameOf(agentId);
    await this.execute(client, opId, { kind: "block_write", agentId, value }, (call, ret, reply) => {
      if (reply !== null && !reply.ok && !reply.retryable) return; // definitely not applied
      if (reply?.ok && reply.value.kind === "block_write") {
        if (over) {
          history.violation(
            `op${opId} ${name}: a ${value.length}-character value was accepted into a block whose limit is ${reply.value.limit}`,
          );
        }
        if (reply.value.value !== value) {
          history.violation(`op${opId} ${name}: wrote '${value}' but the block holds '${reply.value.value}'`);
        }
      }
      ops.push({
        id: history.nextOpId(),
        client,
        call,
        ret,
        input: { kind: "write", value },
        output: ret === null ? undefined : { kind: "write" },
      });
    });
  }

  private async blockRead(client: number, agentId: string): Promise<void> {
    const { history, rng } = this.deps;
    const opId = history.nextOpId();
    const label = rng.next() < 0.7 ? SCRATCH_BLOCK_LABEL : LOG_BLOCK_LABEL;
    const ops = history.registerOps.get(agentId)!;
    const name = history.nameOf(agentId);
    await this.execute(client, opId, { kind: "block_read", agentId, label }, (call, ret, reply) => {
      if (ret === null || !reply?.ok || reply.value.kind !== "block_read") return;
      const { value, limit } = reply.value;
      if (value.length > limit)
        history.violation(`op${opId} ${name}: block ${label} holds ${value.length} > ${limit} characters`);
      if (label === LOG_BLOCK_LABEL) {
        const problem = logBlockProblems(value);
        if (problem !== null) history.violation(`op${opId} ${name}: ${problem}`);
        return;
      }
      ops.push({
        id: history.nextOpId(),
        client,
        call,
        ret,
        input: { kind: "read" },
        output: { kind: "read", value },
      });
    });
  }

  private kvRecord(
    client: number,
    input: KvInput,
  ): (call: number, ret: number | null, reply: Reply | null) => void {
    const { history } = this.deps;
    return (call, ret, reply) => {
      if (input.kind === "get") {
        if (ret === null || !reply?.ok || reply.value.kind !== "working_get") return;
        const output: KvOutput = { kind: "get", value: reply.value.value };
        history.kvOps.push({ id: history.nextOpId(), client, call, ret, input, output });
        return;
      }
      if (reply !== null && !reply.ok && !reply.retryable) return;
      const output: KvOutput | undefined = ret === null ? undefined : { kind: "put" };
      history.kvOps.push({ id: history.nextOpId(), client, call, ret, input, output });
    };
  }

  private async workingPut(client: number, agentId: string): Promise<void> {
    const { history, rng } = this.deps;
    const opId = history.nextOpId();
    const key = WORKING_KEYS[rng.int(WORKING_KEYS.length)]!;
    // Fixed width: every put to a key has one size, so a retried put applied twice is one put.
    const value = `w${String(opId).padStart(WORKING_VALUE_ID_DIGITS, "0")}`;
    const input: KvInput = { kind: "put", key: `${agentId}/${key}`, value };
    const kv = this.kvRecord(client, input);
    const size = this.sizeRecord(client, agentId, key, value);
    await this.execute(client, opId, { kind: "working_put", agentId, key, value }, (call, ret, reply) => {
      size(call, ret, reply);
      // A put the limits refused took no effect: no write in the values' history.
      if (reply !== null && !reply.ok && isLimitRefusal(reply)) return;
      kv(call, ret, reply);
    });
  }

  /**
   * Records a working-memory put by its size, for the limits (accepted, refused, or unknown). The
   * attempts of one put are one op while they are unknown, and the one accepted after them: they
   * all put the same key at the same size, so any of them taking effect, once or more, is that op
   * taking effect once (a put of a key at the size it has changes nothing). Recorded one per
   * attempt, a burst with timeouts left a dozen unknown ops and the search past its budget (seed 154).
   */
  private sizeRecord(
    client: number,
    agentId: string,
    key: string,
    value: string,
  ): (call: number, ret: number | null, reply: Reply | null) => void {
    const { history } = this.deps;
    const sizeBytes = Buffer.byteLength(JSON.stringify(value), "utf8") + Buffer.byteLength(key, "utf8");
    let unknown: Operation<BoundedMapInput, BoundedMapOutput> | null = null;
    return (call, ret, reply) => {
      let ops = history.workingSizeOps.get(agentId);
      if (ops === undefined) {
        ops = [];
        history.workingSizeOps.set(agentId, ops);
      }
      const input: BoundedMapInput = { kind: "put", key, sizeBytes };
      if (reply?.ok) {
        if (unknown === null) {
          const id = history.nextOpId();
          ops.push({ id, client, call, ret, input, output: { kind: "put", accepted: true } });
        } else {
          unknown.ret = ret;
          unknown.output = { kind: "put", accepted: true };
          unknown = null;
        }
      } else if (reply !== null && !reply.ok && isLimitRefusal(reply)) {
        const id = history.nextOpId();
        ops.push({ id, client, call, ret: history.tick(), input, output: { kind: "put", accepted: false } });
      } else if ((reply === null || reply.retryable) && unknown === null) {
        unknown = { id: history.nextOpId(), client, call, ret: null, input };
        ops.push(unknown);
      }
    };
  }

  /**
   * Working memory at its limits: a burst of large puts at once to one agent (the first live
   * one, so its memory fills up within a run); some must be refused, none may overflow it.
   */
  private async workingFill(client: number): Promise<void> {
    const { history, rng } = this.deps;
    const agentId = history.liveAgents()[0]?.id;
    if (agentId === undefined) return;
    const burst = Array.from({ length: WORKING_FILL_BURST }, (_, i) => {
      const opId = history.nextOpId();
      // Each put of the burst is its own connection: in the histories, its own client.
      const connection = BURST_CLIENT_BASE + client * WORKING_FILL_BURST + i;
      const key = `f${rng.int(WORKING_FILL_KEYS_COUNT)}`;
      const value = `w${String(opId).padStart(WORKING_VALUE_ID_DIGITS, "0")}-${"x".repeat(WORKING_FILL_VALUE_CHARS)}`;
      return this.execute(
        client,
        opId,
        { kind: "working_fill", agentId, key, value },
        this.sizeRecord(connection, agentId, key, value),
      );
    });
    await Promise.all(burst);
  }

  private async conversationCreate(client: number, agentId: string): Promise<void> {
    const { history } = this.deps;
    const opId = history.nextOpId();
    const summary = `c${opId}`;
    let first: Operation<ConversationInput, ConversationOutput> | null = null;
    const req: Request = { kind: "conv_create", agentId, summary };
    const reply = await this.execute(client, opId, req, (call, ret, r) => {
      if (r?.ok)
        first = {
          id: opId,
          client,
          call,
          ret,
          input: { kind: "write", summary },
          output: { kind: "write", ids: [] },
        };
    });
    if (reply?.ok && reply.value.kind === "conv_create" && first !== null)
      history.conversations.push({ id: reply.value.conversationId, agentId, ops: [first] });
  }

  /** A PATCH, a read or a message to one of the conversations made so far. */
  private async conversationOp(client: number): Promise<void> {
    const { history, rng } = this.deps;
    const live = history.conversations.filter((c) => history.agentsById.get(c.agentId)?.deleteSent !== true);
    if (live.length === 0) return;
    const conv = live[rng.int(live.length)]!;
    const opId = history.nextOpId();
    const roll = rng.int(3);
    const push = (op: Omit<Operation<ConversationInput, ConversationOutput>, "id">) =>
      conv.ops.push({ id: history.nextOpId(), ...op });
    if (roll === 0) {
      const summary = `s${opId}`;
      const req: Request = { kind: "conv_patch", conversationId: conv.id, summary };
      await this.execute(client, opId, req, (call, ret, reply) => {
        if (reply !== null && !reply.ok && !reply.retryable) return; // definitely not applied
        const input: ConversationInput = { kind: "write", summary };
        if (ret !== null && reply?.ok && reply.value.kind === "conv_patch")
          push({ client, call, ret, input, output: { kind: "write", ids: reply.value.contextIds } });
        else push({ client, call, ret: null, input });
      });
    } else if (roll === 1) {
      await this.execute(client, opId, { kind: "conv_get", conversationId: conv.id }, (call, ret, reply) => {
        if (ret === null || !reply?.ok || reply.value.kind !== "conv_get") return;
        const { summary, contextIds } = reply.value;
        push({
          client,
          call,
          ret,
          input: { kind: "read" },
          output: { kind: "read", summary, ids: contextIds },
        });
      });
    } else {
      const token = `t${opId}`;
      const plan: PlanStep[] = rng.next() < 0.5 ? ["append", "send"] : ["send"];
      const req: Request = { kind: "conv_send", conversationId: conv.id, opId, token, plan };
      await this.execute(client, opId, req, (call, ret, reply) => {
        if (ret !== null && reply?.ok && reply.value.kind === "conv_send")
          push({
            client,
            call,
            ret,
            input: { kind: "append", ids: reply.value.messageIds },
            output: { kind: "append" },
          });
        else push({ client, call, ret: null, input: { kind: "append", ids: [] } });
      });
    }
  }

  /** Archives of their own: made, filled with passages, attached to an agent, listed. */
  private async archiveOp(client: number, agentId: string): Promise<void> {
    const { history, rng } = this.deps;
    const opId = history.nextOpId();
    if (history.archives.length === 0 || rng.int(5) === 0) {
      const req: Request = { kind: "archive_create", name: `dst-archive-${opId}` };
      const reply = await this.execute(client, opId, req, () => {});
      if (reply?.ok && reply.value.kind === "archive_create")
        history.archives.push({ id: reply.value.archiveId, passages: [] });
      return;
    }
    const archive = history.archives[rng.int(history.archives.length)]!;
    const roll = rng.int(3);
    if (roll === 0) {
      const token = `t${opId}`;
      let ackedAt = 0;
      const req: Request = { kind: "archive_insert", archiveId: archive.id, token };
      const reply = await this.execute(client, opId, req, (_c, ret) => {
        if (ret !== null) ackedAt = ret;
      });
      if (reply?.ok && reply.value.kind === "archive_insert")
        archive.passages.push({ token, passageId: reply.value.passageId, ackedAt });
    } else if (roll === 1) {
      await this.execute(client, opId, { kind: "archive_attach", agentId, archiveId: archive.id }, () => {});
    } else {
      await this.execute(
        client,
        opId,
        { kind: "archive_list", archiveId: archive.id },
        (call, ret, reply) => {
          if (ret === null || !reply?.ok || reply.value.kind !== "archive_list") return;
          const { texts } = reply.value;
          for (const p of archive.passages) {
            if (p.ackedAt < call && !texts.includes(`passage ${p.token}`))
              history.violation(
                `op${opId}: archive ${archive.id} lists no passage ${p.token}, acknowledged before the list was called`,
              );
          }
        },
      );
    }
  }

  /** Imports the small agent file under an Idempotency-Key (its retries must not import it twice). */
  private async importAgent(client: number): Promise<void> {
    const { history } = this.deps;
    const opId = history.nextOpId();
    const name = `af-${opId}`;
    const facts: ImportFacts = { name, outcome: "unknown", agentIds: [] };
    history.imports.push(facts);
    const req: Request = { kind: "import_agent", name, idempotencyKey: `import-${opId}`, token: name };
    const reply = await this.execute(client, opId, req, () => {});
    if (reply?.ok && reply.value.kind === "import_agent") {
      facts.outcome = "acked";
      facts.agentIds = reply.value.agentIds;
    } else if (reply !== null && !reply.ok && !reply.retryable) facts.outcome = "rejected";
  }

  private async workingGet(client: number, agentId: string): Promise<void> {
    const { history, rng } = this.deps;
    const opId = history.nextOpId();
    const key = WORKING_KEYS[rng.int(WORKING_KEYS.length)]!;
    const input: KvInput = { kind: "get", key: `${agentId}/${key}` };
    await this.execute(client, opId, { kind: "working_get", agentId, key }, this.kvRecord(client, input));
  }

  /**
   * An archival insert; an agent's first is a burst of concurrent inserts (each its own
   * connection), as its own archive is made on first use: it must be made once.
   */
  private async archivalInsert(client: number, agentId: string): Promise<void> {
    if (this.archivalUsed.has(agentId)) return this.archivalInsertOne(client, agentId);
    this.archivalUsed.add(agentId);
    await Promise.all(
      Array.from({ length: ARCHIVAL_FIRST_BURST }, () => this.archivalInsertOne(client, agentId)),
    );
  }

  private async archivalInsertOne(client: number, agentId: string): Promise<void> {
    const { history } = this.deps;
    const opId = history.nextOpId();
    const token = `t${opId}`;
    let ackedAt = 0;
    const reply = await this.execute(client, opId, { kind: "archival_insert", agentId, token }, (_c, ret) => {
      if (ret !== null) ackedAt = ret;
    });
    if (reply?.ok && reply.value.kind === "archival_insert") {
      history.ackedPassages.push({ agentId, token, passageIds: reply.value.passageIds, ackedAt });
    }
  }

  private async archivalSearch(client: number, agentId: string): Promise<void> {
    const { history, rng } = this.deps;
    const opId = history.nextOpId();
    const known = history.ackedPassages.filter((p) => p.agentId === agentId);
    const target = known.length === 0 ? null : known[rng.int(known.length)]!;
    const token = target?.token ?? `t${opId}`;
    const name = history.nameOf(agentId);
    await this.execute(client, opId, { kind: "archival_search", agentId, token }, (call, ret, reply) => {
      if (ret === null || !reply?.ok || reply.value.kind !== "archival_search") return;
      for (const text of reply.value.texts) {
        if (!/^passage t\d+$/.test(text))
          history.violation(`op${opId} ${name}: search returned a malformed passage '${text}'`);
      }
      // Acknowledged before this search was called: the search must see it, unless the agent's
      // delete (which takes its archives along) was sent before the search answered.
      const deleting = history.agentsById.get(agentId)?.deleteSent === true;
      if (
        target !== null &&
        !deleting &&
        target.ackedAt < call &&
        !reply.value.texts.includes(`passage ${token}`)
      ) {
        history.violation(
          `op${opId} ${name}: search for ${token} missed a passage acknowledged before it was called`,
        );
      }
    });
  }

  private async deleteAgent(client: number, agentId: string): Promise<void> {
    const { history } = this.deps;
    const facts = history.agentsById.get(agentId)!;
    facts.deleteSent = true;
    facts.deleteSentAt = history.tick();
    this.deletes++;
    const opId = history.nextOpId();
    const reply = await this.execute(client, opId, { kind: "delete_agent", agentId }, () => {});
    if (reply?.ok) facts.deleteAcked = true;
  }
}

/** A put the working-memory limits refused (keys or bytes per agent): a definite no. */
export function isLimitRefusal(reply: Reply): boolean {
  return !reply.ok && !reply.retryable && /working memory of agent|limit/i.test(reply.message);
}

function summary(reply: Reply): string {
  if (!reply.ok) return reply.code;
  const v = reply.value;
  switch (v.kind) {
    case "create_agent":
      return "created";
    case "send":
      return `${v.stopReason} ${v.messageIds.length} msgs ${JSON.stringify(v.steps)}`;
    case "block_write":
    case "block_read":
      return `${v.value.length}/${v.limit} ${JSON.stringify(v.value.slice(-12))}`;
    case "working_get":
      return String(v.value);
    case "archival_insert":
      return `${v.passageIds.length} passages`;
    case "archival_search":
      return `${v.texts.length} hits`;
    default:
      return "";
  }
}
