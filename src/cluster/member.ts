// This node's place in the cluster: it registers in the shared database, heartbeats (which renews
// every lease it holds), takes and gives back agent leases as the runtime activates and drops
// agents, and drops the activations whose leases it lost. All lease and membership times are the
// database's; this node's clock only paces the heartbeat and notices when the database is gone.
import { assert } from "../core/assert.ts";
import type { Clock, Timer } from "../core/clock.ts";
import {
  HEARTBEATS_PER_LEASE_TTL,
  LEASE_TTL_MS_DEFAULT,
  LEASE_TTL_MS_MIN,
  NODE_DEAD_AFTER_LEASE_TTLS,
} from "../core/constants.ts";
import { KelpieError } from "../core/errors.ts";
import type { Placement } from "../runtime/placement.ts";
import type { ClusterStore, LeaseOwner, NodeIdentity } from "../storage/types.ts";
import { clusterKey, NodeAuth } from "./node-auth.ts";

export interface ClusterConfig {
  nodeId: string;
  /** Where other nodes reach this one (forwarded requests). */
  advertiseUrl: string;
  leaseTtlMs: number;
  heartbeatIntervalMs: number;
  /** KELPIE_CLUSTER_SECRET; unset: the secret kept in the shared database (node-auth.ts). */
  secret?: string | undefined;
}

export function clusterTimings(leaseTtlMs = LEASE_TTL_MS_DEFAULT, heartbeatIntervalMs?: number) {
  assert(leaseTtlMs >= LEASE_TTL_MS_MIN, `lease ttl must be at least ${LEASE_TTL_MS_MIN} ms`);
  const heartbeat = heartbeatIntervalMs ?? Math.floor(leaseTtlMs / HEARTBEATS_PER_LEASE_TTL);
  assert(heartbeat > 0 && heartbeat * 2 <= leaseTtlMs, "at least two heartbeats must fit in a lease ttl");
  return { leaseTtlMs, heartbeatIntervalMs: heartbeat };
}

/** What the runtime exposes to the member: which leases it relies on, and how to drop one. */
export interface LeaseHolder {
  /** Agent id → token of every activation that holds a lease. */
  heldLeases(): Map<string, number>;
  /** Ends the activation holding `token` (now when idle, else after its running op). */
  evict(agentId: string, token: number): void;
}

export interface MemberLog {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

/** The agent is leased to another live node: send the request there. */
export class AgentElsewhereError extends KelpieError {
  constructor(
    agentId: string,
    readonly owner: LeaseOwner,
  ) {
    super("AGENT_ELSEWHERE", `agent ${agentId} is active on node ${owner.node_id}; retry there or later`);
  }
}

export type MemberState = "joining" | "serving" | "lapsed" | "superseded" | "left";

export class ClusterMember implements Placement {
  readonly nodeDeadAfterMs: number;
  private identityValue: NodeIdentity | null = null;
  private authValue: NodeAuth | null = null;
  private holder: LeaseHolder | null = null;
  private timer: Timer | null = null;
  private lastRenewedMs = 0;
  private stateValue: MemberState = "joining";
  private beating = false;
  /** Leases this node took and has not given back or lost: agent id → token, and when. */
  private readonly granted = new Map<string, { token: number; atMs: number }>();
  /** Agents whose lease this node is taking right now. */
  private readonly acquiring = new Set<string>();

  constructor(
    private readonly store: ClusterStore,
    private readonly clock: Clock,
    readonly config: ClusterConfig,
    private readonly log: MemberLog,
  ) {
    clusterTimings(config.leaseTtlMs, config.heartbeatIntervalMs);
    this.nodeDeadAfterMs = config.leaseTtlMs * NODE_DEAD_AFTER_LEASE_TTLS;
  }

  get identity(): NodeIdentity {
    assert(this.identityValue !== null, "the node has not joined the cluster");
    return this.identityValue;
  }

  /** Signs the requests this node forwards and checks those forwarded to it. */
  get auth(): NodeAuth {
    assert(this.authValue !== null, "the node has not joined the cluster");
    return this.authValue;
  }

  get state(): MemberState {
    return this.stateValue;
  }

  /** Whether this node may serve agents: joined, and its last heartbeat is within a lease TTL. */
  serving(): boolean {
    return this.stateValue === "serving";
  }

  attach(holder: LeaseHolder): void {
    this.holder = holder;
  }

  /** Reads the cluster's secret, registers this node (a new incarnation), starts the heartbeat. */
  async join(): Promise<void> {
    const key = await clusterKey(this.config.secret, this.store);
    this.authValue = new NodeAuth(key, this.config.nodeId, this.clock);
    this.identityValue = await this.store.registerNode(this.config.nodeId, this.config.advertiseUrl);
    this.lastRenewedMs = this.clock.monotonicMs();
    this.stateValue = "serving";
    this.log.info(
      {
        node_id: this.config.nodeId,
        incarnation: this.identityValue.incarnation,
        advertise_url: this.config.advertiseUrl,
        lease_ttl_ms: this.config.leaseTtlMs,
      },
      "joined the cluster",
    );
    this.schedule();
  }

  private schedule(): void {
    this.timer = this.clock.setTimer(this.config.heartbeatIntervalMs, () => {
      if (this.stateValue === "left" || this.stateValue === "superseded") return;
      this.checkLapse(null);
      // A heartbeat stuck on an unreachable database does not hold up the next check.
      if (!this.beating) void this.beat();
      this.schedule();
    });
  }

  /** One heartbeat: refresh membership and leases, drop what was lost. */
  async beat(): Promise<void> {
    if (this.beating || this.identityValue === null) return;
    this.beating = true;
    let again = false;
    const startedMs = this.clock.monotonicMs();
    try {
      const renewed = await this.store.heartbeat(this.identityValue, this.config.leaseTtlMs);
      if (this.stateValue === "left") return;
      if (renewed === null) {
        this.stateValue = "superseded";
        this.log.error(
          { node_id: this.config.nodeId, incarnation: this.identityValue.incarnation },
          "this node's membership was taken over by a newer incarnation or ended: it stops serving agents",
        );
        this.evictAll(new Map(), Number.POSITIVE_INFINITY);
        return;
      }
      // A lease taken while this heartbeat was in flight may be missing from `renewed`: keep it.
      this.evictAll(renewed, startedMs);
      this.releaseStray(renewed);
      // A heartbeat that took a whole TTL (it hung on the database) proves nothing about now:
      // beat again at once rather than count from its start.
      if (this.clock.monotonicMs() - startedMs >= this.config.leaseTtlMs) {
        again = true;
        return;
      }
      // The database renewed the leases to its now + ttl at some instant after `startedMs`, so
      // counting from `startedMs` this node sees them lapse no later than the database does.
      this.lastRenewedMs = startedMs;
      if (this.stateValue === "lapsed") {
        this.log.info({ node_id: this.config.nodeId }, "the database is reachable again: serving agents");
      }
      this.stateValue = "serving";
    } catch (err) {
      this.log.warn(
        { node_id: this.config.nodeId, err: (err as Error).message },
        "heartbeat failed; leases lapse if the database stays unreachable",
      );
      this.checkLapse(err as Error);
    } finally {
      this.beating = false;
    }
    if (again) await this.beat();
  }

  /** Past a lease TTL since the last renewal, every lease is gone: drop the activations, say so. */
  private checkLapse(err: Error | null): void {
    const silentMs = this.clock.monotonicMs() - this.lastRenewedMs;
    if (silentMs < this.config.leaseTtlMs || this.stateValue !== "serving") return;
    this.stateValue = "lapsed";
    this.log.error(
      { node_id: this.config.nodeId, silent_ms: Math.round(silentMs), err: err?.message },
      "no heartbeat reached the database for a lease TTL: this node's leases lapsed; it commits nothing until it reconnects",
    );
    this.evictAll(new Map(), Number.POSITIVE_INFINITY);
  }

  /**
   * Gives back leases the database renewed that no activation here uses (its activation was
   * evicted without a release): otherwise they would stay with this node, renewed forever.
   */
  private releaseStray(renewed: Map<string, number>): void {
    for (const [agentId, token] of renewed) {
      if (this.acquiring.has(agentId) || this.granted.get(agentId)?.token === token) continue;
      void this.release(agentId, token);
    }
  }

  /** Ends every local activation granted before `beforeMs` whose lease is not in `kept` (agent id → token). */
  private evictAll(kept: Map<string, number>, beforeMs: number): void {
    if (this.holder === null) return;
    for (const [agentId, token] of this.holder.heldLeases()) {
      if (kept.get(agentId) === token) continue;
      const grant = this.granted.get(agentId);
      if (grant !== undefined && grant.token === token && grant.atMs >= beforeMs) continue;
      this.granted.delete(agentId);
      this.holder.evict(agentId, token);
    }
  }

  async acquire(agentId: string): Promise<number> {
    if (this.stateValue !== "serving") {
      throw new KelpieError("STORAGE_UNAVAILABLE", `node ${this.config.nodeId} is ${this.stateValue}`);
    }
    this.acquiring.add(agentId);
    try {
      const got = await this.store.acquireLease(
        agentId,
        this.identity,
        this.config.leaseTtlMs,
        this.nodeDeadAfterMs,
      );
      if (!got.acquired) throw new AgentElsewhereError(agentId, got.owner);
      // Stamped when the grant is known committed: a heartbeat that starts later must renew it.
      this.granted.set(agentId, { token: got.token, atMs: this.clock.monotonicMs() });
      return got.token;
    } finally {
      this.acquiring.delete(agentId);
    }
  }

  async release(agentId: string, token: number): Promise<void> {
    if (this.granted.get(agentId)?.token === token) this.granted.delete(agentId);
    if (this.identityValue === null || this.stateValue === "left") return;
    try {
      await this.store.releaseLease(agentId, this.identityValue, token);
    } catch (err) {
      // It lapses on its own within a TTL.
      this.log.warn({ agent_id: agentId, err: (err as Error).message }, "could not release a lease");
    }
  }

  /** The live node holding the agent's lease, or null. */
  owner(agentId: string): Promise<LeaseOwner | null> {
    return this.store.leaseOwner(agentId, this.nodeDeadAfterMs);
  }

  /**
   * Whether `owner`'s incarnation still heartbeats. One that has not for a lease TTL has let its
   * leases lapse (one taken after its last heartbeat lasts at most a heartbeat interval more), and
   * any node may take its agents over, which fences it.
   */
  async isLive(owner: LeaseOwner): Promise<boolean> {
    const nodes = await this.store.listNodes(this.nodeDeadAfterMs);
    return nodes.some((n) => n.node_id === owner.node_id && n.incarnation === owner.incarnation && n.live);
  }

  isSelf(owner: LeaseOwner): boolean {
    return (
      this.identityValue !== null &&
      owner.node_id === this.identityValue.node_id &&
      owner.incarnation === this.identityValue.incarnation
    );
  }

  /** Stops the heartbeat and gives back every lease (after the runtime has drained). */
  async leave(): Promise<void> {
    this.timer?.cancel();
    this.timer = null;
    if (this.identityValue === null || this.stateValue === "left") return;
    const wasServing = this.stateValue === "serving";
    this.stateValue = "left";
    if (!wasServing) return;
    try {
      await this.store.leave(this.identityValue);
      this.log.info({ node_id: this.config.nodeId }, "left the cluster and released its leases");
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "could not leave cleanly; leases lapse within a TTL");
    }
  }
}
