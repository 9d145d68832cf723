// Where a request that acts on an agent must run: here when this node holds (or can take) the
// agent's lease, else at the live node holding it. The loop of forwarding and waiting is the same
// over HTTP (src/api/cluster-routing.ts) and in the simulator (src/dst/routing.ts); only the
// transport differs, so it is written once here.
import type { Clock } from "../core/clock.ts";
import { LEASE_LAPSE_POLL_MS } from "../core/constants.ts";
import { isKelpieError, KelpieError } from "../core/errors.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { LeaseOwner } from "../storage/types.ts";
import { AgentElsewhereError, type ClusterMember } from "./member.ts";

/** Past the lease TTL, how much longer a request waits for an unreachable owner's lease to lapse. */
export const FAILOVER_WAIT_MARGIN_MS = 1_000;
/** Agents whose owner elsewhere a node remembers; past it the memory starts over. */
const OWNER_CACHE_ENTRIES_MAX = 10_000;

/** What became of a request sent to the owner. */
export type ForwardOutcome<T> =
  | { kind: "answered"; answer: T }
  /** The owner never saw it (no connection, or it refused as not serving): safe to run elsewhere. */
  | { kind: "unreachable"; reason: string }
  /** The owner had it and then failed: it may or may not have taken effect. */
  | { kind: "failed"; reason: string };

export type Routed<T> = { kind: "here" } | { kind: "answered"; answer: T };

export class AgentRouter {
  // Where agents live elsewhere, remembered for a heartbeat interval: a stream of requests for
  // one agent through this node then costs no database round trip each. A stale entry only sends
  // a request to a node that serves it itself (taking the lease when free) or refuses it.
  private readonly owners = new Map<string, { owner: LeaseOwner; untilMs: number }>();

  constructor(
    private readonly member: ClusterMember,
    private readonly runtime: Runtime,
    private readonly clock: Clock,
  ) {}

  /** Null when the agent runs here (its lease is ours now, or it does not exist); else its owner. */
  async claim(agentId: string): Promise<LeaseOwner | null> {
    if (this.runtime.isHeld(agentId)) return null;
    const nowMs = this.clock.monotonicMs();
    const known = this.owners.get(agentId);
    if (known !== undefined && known.untilMs > nowMs) return known.owner;
    const owner = await this.member.owner(agentId);
    if (owner !== null && !this.member.isSelf(owner)) {
      this.remember(agentId, owner, nowMs);
      return owner;
    }
    this.owners.delete(agentId);
    try {
      await this.runtime.invoke(agentId, async () => {}, "claim");
      return null;
    } catch (err) {
      if (err instanceof AgentElsewhereError) {
        this.remember(agentId, err.owner, nowMs);
        return err.owner;
      }
      if (isKelpieError(err) && (err.code === "AGENT_NOT_FOUND" || err.code === "NOT_FOUND")) return null;
      throw err;
    }
  }

  private remember(agentId: string, owner: LeaseOwner, nowMs: number): void {
    if (this.owners.size >= OWNER_CACHE_ENTRIES_MAX) this.owners.clear();
    this.owners.set(agentId, { owner, untilMs: nowMs + this.member.config.heartbeatIntervalMs });
  }

  /**
   * Runs the request here, or forwards it to the agent's owner. When the owner cannot be reached
   * the request waits for its lease to lapse (at most a lease TTL plus a margin), then runs here;
   * past that it fails AGENT_ELSEWHERE. An owner that failed after taking it: OWNER_FAILED.
   */
  async route<T>(
    agentId: string,
    forward: (owner: LeaseOwner) => Promise<ForwardOutcome<T>>,
    onWait?: (owner: LeaseOwner, reason: string) => void,
  ): Promise<Routed<T>> {
    const deadlineMs = this.clock.monotonicMs() + this.member.config.leaseTtlMs + FAILOVER_WAIT_MARGIN_MS;
    for (;;) {
      const owner = await this.claim(agentId);
      if (owner === null) return { kind: "here" };
      const outcome = await forward(owner);
      if (outcome.kind === "answered") return outcome;
      if (outcome.kind === "failed") {
        throw new KelpieError(
          "OWNER_FAILED",
          `node ${owner.node_id} failed while handling this request (${outcome.reason}); it may or may not have taken effect: retry with the same Idempotency-Key`,
        );
      }
      if (this.clock.monotonicMs() >= deadlineMs) {
        throw new KelpieError(
          "AGENT_ELSEWHERE",
          `agent ${agentId} is leased to node ${owner.node_id}, which cannot be reached (${outcome.reason}); retry shortly`,
        );
      }
      this.owners.delete(agentId);
      onWait?.(owner, outcome.reason);
      await this.clock.sleepMs(LEASE_LAPSE_POLL_MS);
    }
  }
}
