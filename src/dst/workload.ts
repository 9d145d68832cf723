// The workload: a few clients, each issuing a seeded mix of API-level operations on many agents
// (create, message with tool chains, block edits and reads, working-memory puts and gets, archival
// inserts and searches, deletes) through the simulated network to any node of the cluster (the
// node forwards a request to its agent's owner), with timeouts and retries as a real client
// would. Each call and its outcome go into the history; what can be checked at once (values
// clipped, limits ignored, a search missing an acknowledged passage) is checked at once.
import type { Rng } from "../core/rng.ts";
import type { SimCluster, SimNode } from "./cluster.ts";
import type { History } from "./history.ts";
import type { KvInput, KvOutput, Operation, RegisterInput, RegisterOutput } from "./linearizability.ts";
import type { BugSwitches } from "./mutations.ts";
import type { SimNetwork } from "./network.ts";
import { type Reply, type Request, SCRATCH_BLOCK_LIMIT_CHARS } from "./requests.ts";
import { SimRouter } from "./routing.ts";
import type { SimScheduler } from "./scheduler.ts";
import { LOG_BLOCK_LABEL, type PlanStep, SCRATCH_BLOCK_LABEL } from "./sim-llm.ts";

export const CLIENT_ATTEMPTS_MAX = 3;
export const CLIENT_TIMEOUT_MS = 4_000;
export const CLIENT_SEND_TIMEOUT_MS = 10_000;
export const CLIENT_THINK_MS_MAX = 400;
export const CLIENT_BACKOFF_MS = 250;
export const WORKING_KEYS = ["k0", "k1", "k2"] as const;
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
  /** Requests waiting on each node, to reset when the node is partitioned away. */
  private readonly waiting = new Map<number, Set<() => void>>();
  readonly router: SimRouter;
  /** Which node each attempt goes to (a stream of its own, so routing does not reshuffle the ops). */
  private readonly routeRng: Rng;

  constructor(private readonly deps: WorkloadDeps) {
    this.router = new SimRouter(deps);
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
        void this.router.handle(node, req, label).then((reply) => {
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
      else if (roll < 33) await this.send(client, agentId);
      else if (roll < 48) await this.blockWrite(client, agentId);
      else if (roll < 60) await this.blockRead(client, agentId);
      else if (roll < 70) await this.workingPut(client, agentId);
      else if (roll < 80) await this.workingGet(client, agentId);
      else if (roll < 88) await this.archivalInsert(client, agentId);
      else if (roll < 95) await this.archivalSearch(client, agentId);
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

  private async send(client: number, agentId: string): Promise<void> {
    const { history, rng } = this.deps;
    const opId = history.nextOpId();
    const token = `t${opId}`;
    const plan: PlanStep[] = [];
    if (rng.next() < 0.7) plan.push("append");
    if (rng.next() < 0.3) plan.push("archival");
    if (rng.next() < 0.3) plan.push("sandbox");
    plan.push("send");
    const reply = await this.execute(client, opId, { kind: "send", agentId, opId, token, plan }, () => {});
    if (reply?.ok && reply.value.kind === "send") {
      history.ackedSends.push({
        agentId,
        token,
        messageIds: reply.value.messageIds,
        appendOk: reply.value.steps.append === "success",
        archivalOk: reply.value.steps.archival === "success",
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
    const value = `w${opId}`;
    const input: KvInput = { kind: "put", key: `${agentId}/${key}`, value };
    await this.execute(
      client,
      opId,
      { kind: "working_put", agentId, key, value },
      this.kvRecord(client, input),
    );
  }

  private async workingGet(client: number, agentId: string): Promise<void> {
    const { history, rng } = this.deps;
    const opId = history.nextOpId();
    const key = WORKING_KEYS[rng.int(WORKING_KEYS.length)]!;
    const input: KvInput = { kind: "get", key: `${agentId}/${key}` };
    await this.execute(client, opId, { kind: "working_get", agentId, key }, this.kvRecord(client, input));
  }

  private async archivalInsert(client: number, agentId: string): Promise<void> {
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
      // Acknowledged before this search was called: the search must see it.
      if (target !== null && target.ackedAt < call && !reply.value.texts.includes(`passage ${token}`)) {
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
    this.deletes++;
    const opId = history.nextOpId();
    const reply = await this.execute(client, opId, { kind: "delete_agent", agentId }, () => {});
    if (reply?.ok) facts.deleteAcked = true;
  }
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
