// Any node accepts any request. A request that acts on an agent (every write, and streams) runs
// on the node holding the agent's lease: this node takes the lease when nobody live holds it,
// else forwards the request to the holder. When the holder cannot be reached, or answers that it
// is not serving (it lost the database), the request waits for its lease to lapse (at most a lease
// TTL, plus a margin) and then runs here. When the holder took the request and then stops
// heartbeating, the request fails as OWNER_FAILED rather than wait for an answer that may never come.
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { ClusterMember } from "../cluster/member.ts";
import { AgentRouter } from "../cluster/routing.ts";
import type { Clock, Timer } from "../core/clock.ts";
import { KelpieError } from "../core/errors.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { LeaseOwner, Storage } from "../storage/types.ts";
import { DEFAULT_CONVERSATION } from "./conversations.ts";
import { FORWARDED_BY_HEADER, forward, forwardableBody, NOT_SERVING_HEADER } from "./forward.ts";

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

export function installClusterRouting(
  app: FastifyInstance,
  member: ClusterMember,
  runtime: Runtime,
  storage: Storage,
  clock: Clock,
): void {
  const router = new AgentRouter(member, runtime, clock);

  /**
   * Aborts `watch` once `owner` has sent no heartbeat for a lease TTL: its leases have lapsed (or
   * any node may take them over), so nothing more it commits will stand, and its answer may never
   * come (a node cut off from the database hangs on it). Returns a function that stops watching.
   */
  const watchOwner = (owner: LeaseOwner, watch: AbortController): (() => void) => {
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
  };

  app.addHook("preHandler", async (req, reply) => {
    if (!member.serving() && req.method !== "GET") {
      // Cut off from the database (or superseded): say so at once instead of hanging on it. A node
      // that forwarded the request here learns from the header that nothing happened here.
      reply.header(NOT_SERVING_HEADER, member.state);
      throw new KelpieError(
        "STORAGE_UNAVAILABLE",
        `node ${member.config.nodeId} is ${member.state}: try another node`,
      );
    }
    if (req.headers[FORWARDED_BY_HEADER] !== undefined || !forwardableBody(req)) return;
    const agentId = await agentOf(req, storage);
    if (agentId === null) return;
    const routed = await router.route(
      agentId,
      async (owner) => {
        const watch = new AbortController();
        const unwatch = watchOwner(owner, watch);
        const outcome = await forward(req, reply, owner.advertise_url, member.config.nodeId, watch.signal);
        unwatch();
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
}
