// How a client's request reaches the code that serves it in the simulated cluster, the way
// src/api/cluster-routing.ts does it over HTTP (which the simulation cannot run: it forwards with
// node:http): a request that acts on an agent runs on the node holding the agent's lease. The node
// it lands on claims the lease (the real runtime and ClusterMember: a no-op op activates the agent
// and takes the lease when nobody live holds it); when another node holds it, the request is
// forwarded there over the simulated network between nodes and the owner's answer comes back.
// When the owner cannot be reached (dead, or cut off from this node), the request waits for its
// lease to lapse, polling, up to a lease TTL plus a margin, then runs here or gives up with
// AGENT_ELSEWHERE; when the owner took the request and then failed (it died, or the link broke),
// the answer is OWNER_FAILED: it may or may not have taken effect. Reads run where they land.
import { AgentRouter, type ForwardOutcome } from "../cluster/routing.ts";
import { FORWARD_CONNECT_TIMEOUT_MS } from "../core/constants.ts";
import type { SimCluster, SimNode } from "./cluster.ts";
import type { History } from "./history.ts";
import type { BugSwitches } from "./mutations.ts";
import { NETWORK_DELAY_MS_MIN, type SimNetwork } from "./network.ts";
import { errorReply, type Reply, type Request, serve } from "./requests.ts";
import type { SimScheduler } from "./scheduler.ts";

/** After a link breaks (a crash, a partition), a forwarded request's connection resets this soon. */
export const FORWARD_RESET_MS = 100;

/** The agent whose owner must serve a request (writes on an agent), or null: it runs where it lands. */
export function agentOf(req: Request): string | null {
  switch (req.kind) {
    case "send":
    case "block_write":
    case "delete_agent":
    case "working_put":
    case "archival_insert":
      return req.agentId;
    default:
      return null;
  }
}

export interface RouterDeps {
  cluster: SimCluster;
  network: SimNetwork;
  scheduler: SimScheduler;
  history: History;
  bugs: BugSwitches;
  trace: (line: string) => void;
}

export class SimRouter {
  forwardsCount = 0;

  constructor(private readonly deps: RouterDeps) {}

  /** Each node process's router (the production one), made on first use. */
  private readonly routers = new WeakMap<object, AgentRouter>();

  private routerOf(node: SimNode): AgentRouter {
    const { runtime } = node.services;
    let router = this.routers.get(runtime);
    if (router === undefined) {
      router = new AgentRouter(node.member, runtime, node.clock);
      this.routers.set(runtime, router);
    }
    return router;
  }

  /** Serves a request that arrived at `node` from a client: here, or at its agent's owner. */
  async handle(node: SimNode, req: Request, label: string): Promise<Reply> {
    const agentId = agentOf(req);
    if (agentId === null) return this.serveHere(node, req);
    try {
      const routed = await this.routerOf(node).route<Reply>(
        agentId,
        (owner) =>
          this.forward(
            node,
            this.deps.cluster.processOf(owner),
            req,
            `${label} to ${owner.node_id}#${owner.incarnation}`,
          ),
        (_owner, reason) =>
          this.deps.trace(`${label} owner unreachable (${reason}): waiting for its lease to lapse`),
      );
      return routed.kind === "answered" ? routed.answer : this.serveHere(node, req);
    } catch (err) {
      return errorReply(err);
    }
  }

  /** Serves a request on this node with the real services; each such call may take effect once. */
  private serveHere(node: SimNode, req: Request): Promise<Reply> {
    if ("token" in req) this.deps.history.delivered(req.token);
    return serve(node.services, req, this.deps.bugs);
  }

  /**
   * Sends a request to the owner and waits for its answer. The connection counts as made when the
   * request arrives there: before that, a broken link or a dead owner means the owner never saw
   * it (unreachable); after, it means the request may have taken effect (failed).
   */
  private forward(
    from: SimNode,
    to: SimNode | null,
    req: Request,
    label: string,
  ): Promise<ForwardOutcome<Reply>> {
    const { scheduler, network, trace } = this.deps;
    this.forwardsCount++;
    return new Promise((resolve) => {
      let settled = false;
      let connected = false;
      const settle = (outcome: ForwardOutcome<Reply>) => {
        if (settled) return;
        settled = true;
        connectTimer.cancel();
        from.forwards.delete(fail);
        to?.forwards.delete(fail);
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
      const connectTimer = from.clock.setTimer(FORWARD_CONNECT_TIMEOUT_MS, () => {
        if (!connected)
          settle({ kind: "unreachable", reason: `no connection within ${FORWARD_CONNECT_TIMEOUT_MS} ms` });
      });
      if (to === null) {
        scheduler.schedule(NETWORK_DELAY_MS_MIN, () =>
          settle({ kind: "unreachable", reason: "unknown node" }),
        );
        return;
      }
      from.forwards.add(fail);
      to.forwards.add(fail);
      trace(`${label} forwarded by n${from.id} to n${to.id}`);
      network.sendBetweenNodes(from.id, to.id, `${label} forward`, () => {
        // The sender gave up (its connect timed out, the link broke): this request never arrives.
        if (settled) return;
        if (to.state === "dead" || to.state === "booting") {
          scheduler.schedule(NETWORK_DELAY_MS_MIN, () =>
            settle({ kind: "unreachable", reason: "connection refused" }),
          );
          return;
        }
        connected = true;
        connectTimer.cancel();
        to.inFlight++;
        void this.serveHere(to, req).then((reply) => {
          to.inFlight--;
          if (to.state === "dead") return;
          network.sendBetweenNodes(to.id, from.id, `${label} forward reply`, () =>
            settle({ kind: "answered", answer: reply }),
          );
        });
      });
    });
  }
}
