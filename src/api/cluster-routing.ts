// Any node accepts any request. A request that acts on an agent (every write, and streams) runs
// on the node holding the agent's lease: this node takes the lease when nobody live holds it,
// else forwards the request to the holder. When the holder cannot be reached, or answers that it
// is not serving (it lost the database), the request waits for its lease to lapse (at most a lease
// TTL, plus a margin) and then runs here. When the holder took the request and then stops
// heartbeating, the request fails as OWNER_FAILED rather than wait for an answer that may never come.
// A request another node forwarded runs where it lands, but only when its node credential checks
// out (cluster-auth.ts): a client's cluster headers are dropped, so a client cannot skip routing.
// An agent's async message to an agent held by another node goes there the same way (cluster-outbox.ts).
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { ClusterMember } from "../cluster/member.ts";
import { AgentRouter } from "../cluster/routing.ts";
import type { Clock, Timer } from "../core/clock.ts";
import { KelpieError } from "../core/errors.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { LeaseOwner, Storage } from "../storage/types.ts";
import { installClusterAuth } from "./cluster-auth.ts";
import { DEFAULT_CONVERSATION } from "./conversations.ts";
import {
  type ForwardOutcome,
  forward,
  forwardableBody,
  NOT_SERVING_HEADER,
  type NodeTransport,
} from "./forward.ts";

/** The agent a request acts on, when it must run at the agent's owner; null when it can run anywhere. */
async function agentOf(req: FastifyRequest, storage: Storage): Promise<string | null> {
  const route = req.routeOptions.url ?? "";
  const writes = req.method !== "GET" && req.method !== "HEAD" && req.method !== "OPTIONS";
  if (!writes && !route.endsWith("/stream")) return null;
  const params = (req.params ?? {}) as Record<string, string | undefined>;
  if (params.agent_id !== undefined) return params.agent_id;
  if (params.conversation_id !== undefined && route.startsWith("/v1/conversations/")) {
    if (params.conversation_id === DEFAULT_CONVERSATION) {
      const fromBody = (req.body as { agent_id?: unknown } | undefined)?.agent_id;
      const fromQuery = (req.query as { agent_id?: unknown } | undefined)?.agent_id;
      const id = typeof fromBody === "string" ? fromBody : fromQuery;
      return typeof id === "string" ? id : null;
    }
    return (await storage.getConversation(params.conversation_id))?.agent_id ?? null;
  }
  if (params.run_id !== undefined && route.startsWith("/v1/runs/")) {
    return (await storage.getRun(params.run_id))?.agent_id ?? null;
  }
  return null;
}

/**
 * Aborts `watch` once `owner` has sent no heartbeat for a lease TTL: its leases have lapsed (or
 * any node may take them over), so nothing more it commits will stand, and its answer may never
 * come (a node cut off from the database hangs on it). Returns a function that stops watching.
 */
export function watchOwner(
  member: ClusterMember,
  clock: Clock,
  owner: LeaseOwner,
  watch: AbortController,
): () => void {
  let timer: Timer | null = null;
  const again = () => {
    if (timer !== null) timer = clock.setTimer(member.config.heartbeatIntervalMs, check);
  };
  const check = () => {
    member.isLive(owner).then((live) => {
      if (live) again();
      else if (timer !== null) watch.abort(`node ${owner.node_id} stopped heartbeating`);
    }, again); // This node cannot tell (its own database trouble): keep waiting, as before.
  };
  timer = clock.setTimer(member.config.heartbeatIntervalMs, check);
  return () => {
    timer?.cancel();
    timer = null;
  };
}

export function installClusterRouting(
  app: FastifyInstance,
  member: ClusterMember,
  runtime: Runtime,
  storage: Storage,
  clock: Clock,
  /** How requests reach their owner; default HTTP. */
  transport?: NodeTransport,
): { fromNode(req: FastifyRequest): string | null } {
  const router = new AgentRouter(member, runtime, clock);
  const forwardedBy = installClusterAuth(app, () => member.auth);
  /** Requests whose node credential checked out: the node that sent each. */
  const fromNodes = new WeakMap<FastifyRequest, string>();

  app.addHook("preHandler", async (req, reply) => {
    // A client's cluster headers are gone after this; a forged credential is refused.
    const fromNode = forwardedBy(req, reply);
    if (reply.sent) return reply;
    if (fromNode !== null) fromNodes.set(req, fromNode);
    if (!member.serving() && req.method !== "GET") {
      // Cut off from the database (or superseded): say so at once instead of hanging on it. A node
      // that forwarded the request here learns from the header that nothing happened here.
      reply.header(NOT_SERVING_HEADER, member.state);
      throw new KelpieError(
        "STORAGE_UNAVAILABLE",
        `node ${member.config.nodeId} is ${member.state}: try another node`,
      );
    }
    // Forwarded by a node that routed it here: served here, never forwarded again.
    if (fromNode !== null || !forwardableBody(req)) return;
    const agentId = await agentOf(req, storage);
    if (agentId === null) return;
    const routed = await router.route(
      agentId,
      async (owner) => {
        const watch = new AbortController();
        const unwatch = watchOwner(member, clock, owner, watch);
        let outcome: ForwardOutcome;
        try {
          outcome = await forward(req, reply, owner, member.auth, watch.signal, transport);
        } finally {
          unwatch();
        }
        return outcome.kind === "answered" ? { kind: "answered", answer: reply } : outcome;
      },
      (owner, reason) =>
        req.log.warn(
          { agent_id: agentId, owner: owner.node_id, reason },
          "owner unreachable; waiting for its lease to lapse",
        ),
    );
    if (routed.kind === "answered") return reply;
  });
  return { fromNode: (req) => fromNodes.get(req) ?? null };
}
