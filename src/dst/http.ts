// How requests reach a simulated node's HTTP layer. A client's request is injected into the node's
// real Fastify app (the one createKelpie builds for a listening server), so routes, hooks,
// idempotency and the cluster's routing run as users reach them. A request that acts on an agent
// another node holds is forwarded by that real routing code (src/api/cluster-routing.ts) through
// the transport this file gives each node: the simulated network between nodes instead of HTTP
// sockets. The connection counts as made when the request arrives at the owner: before that, a
// broken link or a dead owner means the owner never saw it (unreachable); after, it means the
// request may have taken effect (failed). The owner's answer travels back over the same network.
import type { FastifyInstance } from "fastify";
import type { NodeRequest, NodeResponse, NodeTransport } from "../api/forward.ts";
import type { ForwardOutcome } from "../cluster/routing.ts";
import { FORWARD_CONNECT_TIMEOUT_MS } from "../core/constants.ts";
import { WORKING_MEMORY_LIMITS } from "../memory/working-memory.ts";
import type { LeaseOwner, WorkingMemoryEntry } from "../storage/types.ts";
import type { SimNode } from "./cluster.ts";
import type { BugSwitches } from "./mutations.ts";
import { NETWORK_DELAY_MS_MIN, type SimNetwork } from "./network.ts";
import { type HttpCall, httpOf, type Reply, type Request, replyOf, thrownReply } from "./requests.ts";
import type { SimScheduler } from "./scheduler.ts";
import { SCRATCH_BLOCK_LABEL } from "./sim-llm.ts";

/** After a link breaks (a crash, a partition), a forwarded request's connection resets this soon. */
export const FORWARD_RESET_MS = 100;

/** `limit_checked_outside_txn`: the time between the request layer's read and the write. */
const LIMIT_CHECK_TO_WRITE_MS = 100;

/** One request into a node's app, as its HTTP server would hand it over. */
export async function injectInto(app: FastifyInstance, request: NodeRequest): Promise<NodeResponse> {
  const res = await app.inject({
    method: request.method as "GET",
    url: request.path,
    headers: request.headers,
    ...(request.body === undefined ? {} : { payload: request.body }),
  });
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(res.headers)) {
    if (value !== undefined) headers[name] = typeof value === "number" ? String(value) : value;
  }
  return { status: res.statusCode, headers, body: res.body };
}

function nodeRequestOf(call: HttpCall): NodeRequest {
  const headers: Record<string, string> = { ...call.headers };
  if (call.raw !== undefined) {
    headers["content-type"] = call.raw.contentType;
    return { method: call.method, path: call.path, headers, body: call.raw.bytes };
  }
  const body = call.body === undefined ? undefined : Buffer.from(JSON.stringify(call.body));
  if (body !== undefined) headers["content-type"] = "application/json";
  return { method: call.method, path: call.path, headers, body };
}

/** A client's request served by a node's HTTP layer; planted bugs of the request layer act here. */
export async function serveHttp(node: SimNode, req: Request, bugs: BugSwitches): Promise<Reply> {
  const { app } = node.kelpie!;
  const once = async (call: HttpCall, as: Request = req): Promise<Reply> => {
    try {
      const res = await injectInto(app, nodeRequestOf(call));
      return replyOf(as, res.status, res.body);
    } catch (err) {
      return thrownReply(err);
    }
  };
  let call = httpOf(req);
  if (bugs.truncateBlockValue && req.kind === "block_write") {
    // Planted bug: the request layer clips a value to the block's limit instead of passing it on.
    const readReq: Request = { kind: "block_read", agentId: req.agentId, label: SCRATCH_BLOCK_LABEL };
    const read = await once(httpOf(readReq), readReq);
    if (read.ok && read.value.kind === "block_read" && req.value.length > read.value.limit)
      call = httpOf({ ...req, value: req.value.slice(0, read.value.limit) });
  }
  if (bugs.limitOutsideTxn && (req.kind === "working_put" || req.kind === "working_fill")) {
    // Planted bug: the limits are checked against a read made before the write, outside its
    // transaction (the storage wrapper commits the put with no check of its own).
    const refusal = await checkWorkingLimitsByRead(node, req.agentId, req.key, req.value);
    if (refusal !== null) return refusal;
    // The write is a round trip of its own after the read (to the owner, through its mailbox).
    await new Promise<void>((resolve) => node.clock.setTimer(LIMIT_CHECK_TO_WRITE_MS, resolve));
  }
  const reply = await once(call);
  // Planted bug: a retryable failure of a non-idempotent request is retried here, on the server,
  // with no way to know whether the first attempt already took effect.
  if (
    bugs.doubleApplyOnRetry &&
    !reply.ok &&
    reply.retryable &&
    (req.kind === "send" || req.kind === "archival_insert")
  )
    return once(call);
  return reply;
}

/** `limit_checked_outside_txn`: the engine's limit check, made on a separate read; a refusal, or null. */
async function checkWorkingLimitsByRead(
  node: SimNode,
  agentId: string,
  key: string,
  value: string,
): Promise<Reply | null> {
  let entries: WorkingMemoryEntry[];
  try {
    entries = await node.kelpie!.services.env.storage.tiers.listWorking(agentId);
  } catch (err) {
    // As the route answers a failed read: 503, worth another try.
    return { ok: false, code: "STORAGE_UNAVAILABLE", retryable: true, message: String(err) };
  }
  const nowMs = node.kelpie!.services.env.clock.nowMs();
  const others = entries.filter(
    (e) => e.key !== key && (e.expires_at_ms === null || e.expires_at_ms > nowMs),
  );
  const size = Buffer.byteLength(JSON.stringify(value), "utf8") + Buffer.byteLength(key, "utf8");
  const bytes = others.reduce((n, e) => n + e.size_bytes, size);
  if (others.length < WORKING_MEMORY_LIMITS.keys_max && bytes <= WORKING_MEMORY_LIMITS.bytes_max) return null;
  return {
    ok: false,
    code: "BAD_REQUEST",
    retryable: false,
    message: `working memory of agent ${agentId} would hold ${bytes} bytes in ${others.length + 1} keys, over its limit`,
  };
}

export interface LinksDeps {
  network: SimNetwork;
  scheduler: SimScheduler;
  /** The process a lease owner names, if it is one of this run's. */
  processOf(owner: LeaseOwner): SimNode | null;
  trace: (line: string) => void;
}

/** The simulated links between nodes: each node's transport for forwarding and outbox deliveries. */
export class SimLinks {
  forwardsCount = 0;

  constructor(private readonly deps: LinksDeps) {}

  transportFor(from: SimNode): NodeTransport {
    return (owner, request, giveUp) =>
      this.send(
        from,
        this.deps.processOf(owner),
        request,
        `n${from.id} ${request.method} ${request.path}`,
        giveUp,
      );
  }

  private send(
    from: SimNode,
    to: SimNode | null,
    request: NodeRequest,
    label: string,
    giveUp: AbortSignal | undefined,
  ): Promise<ForwardOutcome<NodeResponse>> {
    const { scheduler, network, trace } = this.deps;
    this.forwardsCount++;
    return new Promise((resolve) => {
      let settled = false;
      let connected = false;
      const settle = (outcome: ForwardOutcome<NodeResponse>) => {
        if (settled) return;
        settled = true;
        connectTimer.cancel();
        from.forwards.delete(fail);
        to?.forwards.delete(fail);
        giveUp?.removeEventListener("abort", onGiveUp);
        if (outcome.kind !== "answered") trace(`${label} forward ${outcome.kind}: ${outcome.reason}`);
        resolve(outcome);
      };
      const fail = () => {
        scheduler.schedule(FORWARD_RESET_MS, () =>
          settle(
            connected
              ? { kind: "failed", reason: "connection reset" }
              : { kind: "unreachable", reason: "connection reset" },
          ),
        );
      };
      const onGiveUp = () => {
        const reason = String(giveUp?.reason);
        settle(connected ? { kind: "failed", reason } : { kind: "unreachable", reason });
      };
      const connectTimer = from.clock.setTimer(FORWARD_CONNECT_TIMEOUT_MS, () => {
        if (!connected)
          settle({ kind: "unreachable", reason: `no connection within ${FORWARD_CONNECT_TIMEOUT_MS} ms` });
      });
      if (giveUp?.aborted) return onGiveUp();
      giveUp?.addEventListener("abort", onGiveUp, { once: true });
      if (to === null) {
        scheduler.schedule(NETWORK_DELAY_MS_MIN, () =>
          settle({ kind: "unreachable", reason: "unknown node" }),
        );
        return;
      }
      from.forwards.add(fail);
      to.forwards.add(fail);
      trace(`${label} forwarded to n${to.id}`);
      network.sendBetweenNodes(from.id, to.id, `${label} forward`, () => {
        // The sender gave up (its connect timed out, the link broke): this request never arrives.
        if (settled) return;
        if (to.state === "dead" || to.state === "booting" || to.kelpie === null) {
          scheduler.schedule(NETWORK_DELAY_MS_MIN, () =>
            settle({ kind: "unreachable", reason: "connection refused" }),
          );
          return;
        }
        connected = true;
        connectTimer.cancel();
        to.inFlight++;
        const answered = (response: NodeResponse) => {
          to.inFlight--;
          if (response.status >= 400)
            trace(`${label} answered ${response.status} ${response.body.slice(0, 160)}`);
          if (to.state === "dead") return;
          network.sendBetweenNodes(to.id, from.id, `${label} forward reply`, () =>
            settle({ kind: "answered", answer: response }),
          );
        };
        injectInto(to.kelpie.app, request).then(answered, (err: unknown) =>
          answered({
            status: 500,
            headers: {},
            body: JSON.stringify({ detail: String(err), code: "INTERNAL" }),
          }),
        );
      });
    });
  }
}
