// Async messages between agents across nodes. The sender's node delivers its outbox entries
// (agent/outbox.ts) through the router every request on an agent takes (cluster/routing.ts): here
// when the target's lease is here or free, else at the live node holding it, waiting out an
// unreachable holder's lease as a client's request would. There it goes as a signed node-to-node
// request naming only the entry: the owner reads the entry from the shared database and delivers
// it in its own runtime under the entry's idempotency key. No client stands behind such a request,
// so the route asks for the node credential (cluster/node-auth.ts) instead of an API key.
import http from "node:http";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { MessageService } from "../agent/message-service.ts";
import { type Delivery, localDelivery } from "../agent/outbox.ts";
import type { ClusterMember } from "../cluster/member.ts";
import { bodyDigest, CLUSTER_ROUTES_PREFIX } from "../cluster/node-auth.ts";
import type { AgentRouter, ForwardOutcome } from "../cluster/routing.ts";
import type { Clock } from "../core/clock.ts";
import { FORWARD_CONNECT_TIMEOUT_MS } from "../core/constants.ts";
import { ERRORS, type ErrorCode, KelpieError } from "../core/errors.ts";
import { requireId } from "../core/ids.ts";
import type { LeaseOwner, OutboxRecord, Storage } from "../storage/types.ts";
import { watchOwner } from "./cluster-routing.ts";
import { NOT_SERVING_HEADER, type NodeTransport } from "./forward.ts";

const OUTBOX_DELIVER_ROUTE = `${CLUSTER_ROUTES_PREFIX}outbox/:entry_id/deliver`;
/** An owner's answer read for its error code; anything longer is cut (the code comes first). */
const OWNER_ANSWER_BYTES_MAX = 64 * 1024;

const deliverPath = (entryId: string) =>
  `${CLUSTER_ROUTES_PREFIX}outbox/${encodeURIComponent(entryId)}/deliver`;

/** What the owner answered: its status, and the error code its body gave, if any. */
export interface OwnerAnswer {
  status: number;
  code: string | null;
  detail: string;
}

/** Delivers, on this node, the stored entry a request names (an entry no longer stored was delivered). */
export function outboxDeliveryHere(
  storage: Storage,
  messages: () => MessageService,
): (entryId: string) => Promise<void> {
  const deliver = localDelivery(messages);
  return async (entryId) => {
    const entry = await storage.getOutboxEntry(entryId);
    if (entry !== null) await deliver(entry);
  };
}

export function installOutboxDeliveryRoute(
  app: FastifyInstance,
  fromNode: (req: FastifyRequest) => string | null,
  deliverHere: (entryId: string) => Promise<void>,
): void {
  app.post<{ Params: { entry_id: string } }>(OUTBOX_DELIVER_ROUTE, async (req, reply) => {
    if (fromNode(req) === null) {
      return reply.code(401).send({
        detail: "Only another node of the cluster may deliver outbox entries.",
        code: "UNAUTHORIZED",
      });
    }
    await deliverHere(requireId("outbox", req.params.entry_id, ["path", "entry_id"]));
    return { delivered: true };
  });
}

/** Asks `owner` to deliver `entry`; the outcome says whether it was reached, and what it answered. */
export function remoteOutboxDelivery(
  member: ClusterMember,
  clock: Clock,
  /** How the request reaches the owner; default HTTP. */
  transport?: NodeTransport,
): (owner: LeaseOwner, entry: OutboxRecord) => Promise<ForwardOutcome<OwnerAnswer>> {
  return async (owner, entry) => {
    const watch = new AbortController();
    const unwatch = watchOwner(member, clock, owner, watch);
    try {
      const path = deliverPath(entry.id);
      return transport === undefined
        ? await post(member, owner, path, watch.signal)
        : await postThrough(transport, member, owner, path, watch.signal);
    } finally {
      unwatch();
    }
  };
}

function post(
  member: ClusterMember,
  owner: LeaseOwner,
  path: string,
  giveUp: AbortSignal,
): Promise<ForwardOutcome<OwnerAnswer>> {
  const base = new URL(owner.advertise_url);
  const headers = member.auth.sign(owner.node_id, {
    method: "POST",
    target: path,
    bodySha256: bodyDigest(undefined),
  });
  return new Promise((resolve) => {
    let connected = false;
    let settled = false;
    const settle = (outcome: ForwardOutcome<OwnerAnswer>) => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      resolve(outcome);
    };
    const request = http.request(
      { protocol: base.protocol, hostname: base.hostname, port: base.port, method: "POST", path, headers },
      (res) => {
        if (res.headers[NOT_SERVING_HEADER] !== undefined) {
          res.resume();
          settle({ kind: "unreachable", reason: `${base.host}: ${res.headers[NOT_SERVING_HEADER]}` });
          return;
        }
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          if (text.length < OWNER_ANSWER_BYTES_MAX) text += chunk;
        });
        res.on("end", () => settle({ kind: "answered", answer: ownerAnswer(res.statusCode ?? 502, text) }));
        res.on("error", (err) => settle({ kind: "failed", reason: `${base.host}: ${err.message}` }));
      },
    );
    const connectTimer = setTimeout(() => {
      if (!connected) request.destroy(new Error(`no connection within ${FORWARD_CONNECT_TIMEOUT_MS} ms`));
    }, FORWARD_CONNECT_TIMEOUT_MS);
    request.once("socket", (socket) => {
      if (!socket.connecting) connected = true;
      else socket.once("connect", () => (connected = true));
    });
    giveUp.addEventListener("abort", () => request.destroy(new Error(String(giveUp.reason))), { once: true });
    request.on("error", (err: NodeJS.ErrnoException) => {
      const reason = `${base.host}: ${err.code ?? err.message}`;
      settle(connected ? { kind: "failed", reason } : { kind: "unreachable", reason });
    });
    request.end();
  });
}

async function postThrough(
  transport: NodeTransport,
  member: ClusterMember,
  owner: LeaseOwner,
  path: string,
  giveUp: AbortSignal,
): Promise<ForwardOutcome<OwnerAnswer>> {
  const headers = member.auth.sign(owner.node_id, {
    method: "POST",
    target: path,
    bodySha256: bodyDigest(undefined),
  });
  const outcome = await transport(owner, { method: "POST", path, headers, body: undefined }, giveUp);
  if (outcome.kind !== "answered") return outcome;
  const { status, headers: answered, body } = outcome.answer;
  const notServing = answered[NOT_SERVING_HEADER];
  if (notServing !== undefined)
    return { kind: "unreachable", reason: `${owner.node_id}: ${String(notServing)}` };
  return { kind: "answered", answer: ownerAnswer(status, body.slice(0, OWNER_ANSWER_BYTES_MAX)) };
}

function ownerAnswer(status: number, text: string): OwnerAnswer {
  try {
    const body = JSON.parse(text) as { code?: unknown; detail?: unknown };
    return {
      status,
      code: typeof body.code === "string" ? body.code : null,
      detail: typeof body.detail === "string" ? body.detail : text,
    };
  } catch {
    return { status, code: null, detail: text };
  }
}

/**
 * Delivery in a cluster: at the target's owner, found and reached as a client's request to the
 * target would be. An owner's error keeps its code, so the dispatcher retries what is retryable.
 */
export function routedDelivery(
  router: AgentRouter,
  local: Delivery,
  remote: (owner: LeaseOwner, entry: OutboxRecord) => Promise<ForwardOutcome<OwnerAnswer>>,
): Delivery {
  return async (entry) => {
    const routed = await router.route(entry.target_agent_id, (owner) => remote(owner, entry));
    if (routed.kind === "here") return local(entry);
    const { status, code, detail } = routed.answer;
    if (status >= 200 && status < 300) return;
    const known = code !== null && code in ERRORS ? (code as ErrorCode) : null;
    // A refused credential is a cluster being reconfigured, not a bad message: worth another try.
    const fallback: ErrorCode =
      status === 401 || status === 429 || status >= 500 ? "OWNER_FAILED" : "BAD_REQUEST";
    throw new KelpieError(known ?? fallback, `the target's node answered ${status}: ${detail}`);
  };
}
