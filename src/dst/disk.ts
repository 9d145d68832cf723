// The simulated disk, which is also the cluster's shared database: the in-memory engine (the
// reference semantics of the Storage contract, with membership and leases as PostgreSQL keeps
// them, timed by the database's clock: the simulation's global time, unskewed), which outlives
// every simulated node, so a crash is "drop the node, keep the disk". Around it, what a careful
// engine (and the checker) needs: a checksum of every block, message and working-memory entry as
// written, so a read can tell corrupt bytes from real ones; and a log of token acquisitions,
// lease and membership calls, and fenced commits in the order the engine applied them, checked
// as it grows against the checker's own model of who holds which lease until when (built from the
// engine's answers, each at its database time). Single activation:
// - tokens only go up, and an accepted commit carries its agent's newest token (a stale owner
//   never writes), so accepted tokens never go backwards;
// - a token is only ever used by one node incarnation, the one it was leased to;
// - a commit under a lease is accepted only before the lease lapses (database time): a node cut
//   off from the database stops committing once its lease is gone, even before anyone takes over;
// - a lease is taken over while unexpired only from an incarnation that is gone (left,
//   superseded, or silent for the dead-after time), and heartbeats renew only unexpired leases
//   of their own incarnation.
import { createHash } from "node:crypto";
import { assert } from "../core/assert.ts";
import { KelpieError } from "../core/errors.ts";
import { MemoryStorage } from "../storage/memory.ts";
import type {
  BlockRecord,
  ClusterStore,
  CommitOptions,
  LeaseAcquisition,
  MessageRecord,
  Mutation,
  NodeIdentity,
  Storage,
  WorkingMemoryEntry,
} from "../storage/types.ts";

export type ChecksumKind = "block" | "message" | "working";

export function checksum(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex");
}

export function workingKey(entry: { agent_id: string; key: string }): string {
  return `${entry.agent_id}\u0000${entry.key}`;
}

/** Who made a call, as the cluster knows it: `node-2#3` (node id and incarnation), or null (no node). */
export type Origin = string | null;

export function originOf(node: NodeIdentity): string {
  return `${node.node_id}#${node.incarnation}`;
}

/** What the engine did, in the order it did it (each at the database time it did it). */
type FenceEvent =
  | { kind: "acquire"; agentId: string; token: number | null }
  | {
      kind: "commit";
      agentId: string;
      token: number;
      origin: Origin;
      atMs: number;
      applied: boolean | null;
      lapsed: boolean;
      deletes: string[];
    }
  | { kind: "register"; nodeId: string; atMs: number; incarnation: number | null; done: boolean }
  | {
      kind: "lease";
      agentId: string;
      holder: string;
      atMs: number;
      ttlMs: number;
      deadAfterMs: number;
      result: LeaseAcquisition | null;
      done: boolean;
    }
  | {
      kind: "renew";
      holder: string;
      atMs: number;
      ttlMs: number;
      result: Map<string, number> | null;
      done: boolean;
    }
  | { kind: "release"; agentId: string; holder: string; token: number; done: boolean }
  | { kind: "leave"; holder: string; atMs: number; done: boolean };

/** The checker's own view of one agent's newest token and its lease, built from the engine's answers. */
interface LeaseView {
  token: number;
  /** The incarnation the token was leased to; null for a token taken with acquireFence (no lease). */
  holder: string | null;
  /** Database time the lease ends, as its acquisition and renewals set it. */
  expiresAtMs: number;
  /** Given back (release or leave): no lease is left to lapse, and no later holder exists yet. */
  released: boolean;
}

/** The checker's view of one node incarnation's membership. */
interface MemberView {
  heartbeatAtMs: number;
  left: boolean;
  superseded: boolean;
}

export interface DiskOptions {
  /** The database's clock (the simulation's global time, which no node's skew touches). */
  nowMs?: () => number;
  /** Planted bug: the engine applies fenced commits without comparing the token (it checks the lease). */
  skipFencingCheck: boolean;
  /** Planted bug: a crash loses the last commit even though it was acknowledged. */
  loseLastCommitOnCrash: boolean;
  /** Planted bug: the engine compares the token but lets a lapsed lease commit. */
  skipLeaseLapseCheck?: boolean;
}

/** The engine's fence row, as the planted bugs read it. */
interface FenceRowView {
  token: number;
  lease_expires_at: number | null;
}

/** What the engine keeps private: its tables swap whole on each commit (copy on write). */
interface MemoryStorageTables {
  tables: unknown;
}

export class SimDisk {
  readonly raw: MemoryStorage;
  readonly storage: Storage;
  /** The engine's membership and leases, observed by the checker. */
  readonly cluster: ClusterStore;
  readonly nowMs: () => number;
  private readonly checksums = new Map<string, string>();
  /** Every block created, by id: its label. */
  private readonly mintedBlocks = new Map<string, string>();
  private readonly fenceLog: FenceEvent[] = [];
  private fenceChecked = 0;
  private readonly leases = new Map<string, LeaseView>();
  /** Per agent, the newest token of an accepted commit (tokens never go backwards). */
  private readonly acceptedMax = new Map<string, number>();
  /** Per agent and token, the one incarnation whose commits with it were accepted. */
  private readonly tokenUser = new Map<string, string>();
  /** Per agent and token, the incarnation it was leased to. */
  private readonly lessees = new Map<string, string>();
  private readonly members = new Map<string, MemberView>();
  /** Single-activation violations found so far (each a sentence). */
  readonly violations: string[] = [];
  fencedCommitsCount = 0;
  fencedCommitsRejectedCount = 0;
  /** Fenced commits the engine rejected because their lease had lapsed (token still the newest). */
  lapsedCommitsRejectedCount = 0;
  /** Leases taken, and of those taken over from another incarnation that had not given it back. */
  leasesAcquiredCount = 0;
  leasesTakenOverCount = 0;
  /** Accepted commits by origin, with their database time (for tests). */
  readonly acceptedCommits: { agentId: string; token: number; origin: Origin; atMs: number }[] = [];
  private tablesBeforeLastCommit: unknown = null;

  constructor(private readonly options: DiskOptions) {
    this.nowMs = options.nowMs ?? (() => 0);
    const raw = new MemoryStorage({ nowMs: this.nowMs });
    this.raw = raw;
    this.cluster = this.observedCluster(raw.cluster);
    this.storage = new Proxy(raw, {
      get: (target, prop, receiver) => {
        if (prop === "commit") return (m: Mutation[], o?: CommitOptions) => this.commitAs(null, m, o);
        if (prop === "acquireFence") return (agentId: string) => this.acquireFence(agentId);
        if (prop === "cluster") return this.cluster;
        const value = Reflect.get(target, prop, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as Storage;
  }

  /**
   * Ids come from seeded streams drawn once each: a new block under an id an earlier block was
   * created with means a stream replayed its draws (forked again where it should be drawn from).
   */
  private checkMinted(mutations: Mutation[]): void {
    for (const m of mutations) {
      if (m.op !== "put_block" || !m.create) continue;
      const label = this.mintedBlocks.get(m.block.id);
      if (label !== undefined && label !== m.block.label)
        this.violation(`block id ${m.block.id} was minted twice: for '${label}' and for '${m.block.label}'`);
    }
  }

  checksumOf(kind: ChecksumKind, id: string): string | undefined {
    return this.checksums.get(`${kind}:${id}`);
  }

  /** A commit made by `origin` (the node incarnation whose storage view sent it). */
  commitAs(origin: Origin, mutations: Mutation[], options?: CommitOptions): Promise<void> {
    const fence = options?.fence;
    const entry: FenceEvent | null =
      fence === undefined
        ? null
        : {
            kind: "commit",
            agentId: fence.agent_id,
            token: fence.token,
            origin,
            atMs: this.nowMs(),
            applied: null,
            lapsed: false,
            deletes: mutations.flatMap((m) => (m.op === "delete_agent" ? [m.agent_id] : [])),
          };
    if (entry !== null) this.fenceLog.push(entry);
    this.checkMinted(mutations);
    if (this.options.loseLastCommitOnCrash)
      this.tablesBeforeLastCommit = (this.raw as unknown as MemoryStorageTables).tables;
    // The engine applies a commit synchronously inside this call, so the checksums written just
    // after it describe exactly what it stored (or nothing, when it threw).
    const done = this.engineCommit(mutations, options);
    return done.then(
      () => {
        this.recordChecksums(mutations);
        for (const m of mutations)
          if (m.op === "put_block" && m.create) this.mintedBlocks.set(m.block.id, m.block.label);
        if (entry?.kind === "commit") entry.applied = true;
        this.advanceFenceCheck();
      },
      (err: unknown) => {
        if (entry?.kind === "commit") {
          entry.applied = false;
          entry.lapsed = err instanceof Error && /lapsed/.test(err.message);
        }
        this.advanceFenceCheck();
        throw err;
      },
    );
  }

  private engineCommit(mutations: Mutation[], options?: CommitOptions): Promise<void> {
    const fence = options?.fence;
    const { skipFencingCheck, skipLeaseLapseCheck } = this.options;
    if (fence === undefined || (!skipFencingCheck && !skipLeaseLapseCheck))
      return this.raw.commit(mutations, options);
    // A planted bug leaves one of the engine's two fence checks out: the other is made here, on
    // the engine's own fence row, in the same synchronous step as the commit (as the engine would).
    const tables = (this.raw as unknown as { tables: { fences: Map<string, FenceRowView> } }).tables;
    const row = tables.fences.get(fence.agent_id);
    if (!skipFencingCheck && (row?.token ?? 0) !== fence.token) {
      return Promise.reject(
        new KelpieError("FENCED", `agent ${fence.agent_id}: fencing token ${fence.token} is stale`),
      );
    }
    if (!skipLeaseLapseCheck && row?.lease_expires_at != null && row.lease_expires_at <= this.nowMs()) {
      return Promise.reject(
        new KelpieError("FENCED", `agent ${fence.agent_id}: the lease of token ${fence.token} lapsed`),
      );
    }
    return this.raw.commit(mutations);
  }

  private recordChecksums(mutations: Mutation[]): void {
    for (const m of mutations) {
      if (m.op === "put_block") this.setChecksum("block", m.block.id, m.block);
      else if (m.op === "delete_block") this.checksums.delete(`block:${m.block_id}`);
      else if (m.op === "put_message") this.setChecksum("message", m.message.id, m.message);
      else if (m.op === "put_working") this.setChecksum("working", workingKey(m.entry), m.entry);
      else if (m.op === "delete_working") this.checksums.delete(`working:${workingKey(m)}`);
    }
  }

  private setChecksum(
    kind: ChecksumKind,
    id: string,
    value: BlockRecord | MessageRecord | WorkingMemoryEntry,
  ) {
    this.checksums.set(`${kind}:${id}`, checksum(value));
  }

  private acquireFence(agentId: string): Promise<number> {
    const entry: FenceEvent = { kind: "acquire", agentId, token: null };
    this.fenceLog.push(entry);
    return this.raw.acquireFence(agentId).then((token) => {
      if (entry.kind === "acquire") entry.token = token;
      this.advanceFenceCheck();
      return token;
    });
  }

  /** The engine's ClusterStore with every call and answer logged, in engine order, for the checker. */
  private observedCluster(inner: ClusterStore): ClusterStore {
    const log = <T>(entry: FenceEvent, call: Promise<T>, fill: (result: T) => void): Promise<T> => {
      this.fenceLog.push(entry);
      return call.then(
        (result) => {
          fill(result);
          (entry as { done: boolean }).done = true;
          this.advanceFenceCheck();
          return result;
        },
        (err: unknown) => {
          (entry as { done: boolean }).done = true;
          this.advanceFenceCheck();
          throw err;
        },
      );
    };
    return {
      registerNode: (nodeId, advertiseUrl) => {
        const e = { kind: "register" as const, nodeId, atMs: this.nowMs(), incarnation: null, done: false };
        return log<NodeIdentity>(e, inner.registerNode(nodeId, advertiseUrl), (r) => {
          (e as { incarnation: number | null }).incarnation = r.incarnation;
        });
      },
      heartbeat: (node, ttlMs) => {
        const e = {
          kind: "renew" as const,
          holder: originOf(node),
          atMs: this.nowMs(),
          ttlMs,
          result: null as Map<string, number> | null,
          done: false,
        };
        return log(e, inner.heartbeat(node, ttlMs), (r) => {
          e.result = r === null ? null : new Map(r);
        });
      },
      acquireLease: (agentId, node, ttlMs, deadAfterMs) => {
        const e = {
          kind: "lease" as const,
          agentId,
          holder: originOf(node),
          atMs: this.nowMs(),
          ttlMs,
          deadAfterMs,
          result: null as LeaseAcquisition | null,
          done: false,
        };
        return log(e, inner.acquireLease(agentId, node, ttlMs, deadAfterMs), (r) => {
          e.result = r;
        });
      },
      releaseLease: (agentId, node, token) => {
        const e = { kind: "release" as const, agentId, holder: originOf(node), token, done: false };
        return log(e, inner.releaseLease(agentId, node, token), () => {});
      },
      leave: (node) => {
        const e = { kind: "leave" as const, holder: originOf(node), atMs: this.nowMs(), done: false };
        return log(e, inner.leave(node), () => {});
      },
      leaseOwner: (agentId, deadAfterMs) => inner.leaseOwner(agentId, deadAfterMs),
      listNodes: (deadAfterMs) => inner.listNodes(deadAfterMs),
    };
  }

  private violation(text: string): void {
    this.violations.push(text);
  }

  /** Replays the log in engine order, as far as every entry has resolved. */
  private advanceFenceCheck(): void {
    while (this.fenceChecked < this.fenceLog.length) {
      const e = this.fenceLog[this.fenceChecked]!;
      if (e.kind === "acquire") {
        if (e.token === null) return;
        this.newToken(e.agentId, e.token, { token: e.token, holder: null, expiresAtMs: 0, released: true });
      } else if (e.kind === "commit") {
        if (e.applied === null) return;
        this.checkCommit(e);
      } else {
        if (!e.done) return;
        this.checkCluster(e);
      }
      this.fenceChecked++;
    }
  }

  /** A token was handed out: it must be above every earlier one of the agent. */
  private newToken(agentId: string, token: number, view: LeaseView): void {
    const before = this.leases.get(agentId)?.token ?? 0;
    if (token <= before) {
      this.violation(`fencing token of agent ${agentId} did not increase: ${token} after ${before}`);
    }
    this.leases.set(agentId, view);
  }

  private checkCommit(e: Extract<FenceEvent, { kind: "commit" }>): void {
    this.fencedCommitsCount++;
    if (!e.applied) {
      this.fencedCommitsRejectedCount++;
      if (e.lapsed) this.lapsedCommitsRejectedCount++;
      return;
    }
    const agent = e.agentId;
    const lease = this.leases.get(agent);
    const latest = lease?.token ?? 0;
    const who = e.origin ?? "a client of the disk";
    // Single activation: only the newest token commits, and only while its lease holds.
    if (e.token !== latest) {
      this.violation(
        `single activation: a commit for agent ${agent} with stale fencing token ${e.token} was applied (newest token ${latest}) from ${who}`,
      );
    } else if (
      lease !== undefined &&
      lease.holder !== null &&
      !lease.released &&
      lease.expiresAtMs <= e.atMs
    ) {
      this.violation(
        `single activation: a commit for agent ${agent} from ${who} was applied at ${e.atMs} ms, after the lease of token ${e.token} lapsed at ${lease.expiresAtMs} ms`,
      );
    }
    const lessee = this.lessees.get(`${agent}#${e.token}`);
    if (lessee !== undefined && e.origin !== null && e.origin !== lessee) {
      this.violation(
        `single activation: token ${e.token} of agent ${agent} was leased to ${lessee} but ${e.origin} committed with it`,
      );
    }
    const max = this.acceptedMax.get(agent) ?? 0;
    if (e.token < max)
      this.violation(`single activation: agent ${agent} accepted token ${e.token} after token ${max}`);
    this.acceptedMax.set(agent, Math.max(max, e.token));
    if (e.origin !== null) {
      const key = `${agent}#${e.token}`;
      const user = this.tokenUser.get(key);
      if (user === undefined) this.tokenUser.set(key, e.origin);
      else if (user !== e.origin)
        this.violation(
          `single activation: token ${e.token} of agent ${agent} was used by ${user} and by ${e.origin}`,
        );
    }
    this.acceptedCommits.push({ agentId: agent, token: e.token, origin: e.origin, atMs: e.atMs });
    // A deleted agent's fence goes with it; a later activation starts again at 1.
    for (const id of e.deletes) {
      this.leases.delete(id);
      this.acceptedMax.delete(id);
      for (const map of [this.tokenUser, this.lessees])
        for (const key of [...map.keys()]) if (key.startsWith(`${id}#`)) map.delete(key);
    }
  }

  private member(holder: string): MemberView | undefined {
    return this.members.get(holder);
  }

  private checkCluster(e: Exclude<FenceEvent, { kind: "acquire" } | { kind: "commit" }>): void {
    switch (e.kind) {
      case "register": {
        if (e.incarnation === null) return;
        for (const [holder, m] of this.members) {
          if (holder.startsWith(`${e.nodeId}#`)) {
            const inc = Number(holder.slice(e.nodeId.length + 1));
            if (inc >= e.incarnation)
              this.violation(`node ${e.nodeId} registered incarnation ${e.incarnation} after ${inc}`);
            m.superseded = true;
          }
        }
        this.members.set(`${e.nodeId}#${e.incarnation}`, {
          heartbeatAtMs: e.atMs,
          left: false,
          superseded: false,
        });
        return;
      }
      case "renew": {
        const m = this.member(e.holder);
        if (e.result === null) return;
        if (m === undefined || m.left || m.superseded) {
          this.violation(`a heartbeat of ${e.holder}, which left or was superseded, was accepted`);
          return;
        }
        m.heartbeatAtMs = e.atMs;
        for (const [agent, token] of e.result) {
          const lease = this.leases.get(agent);
          if (
            lease === undefined ||
            lease.token !== token ||
            lease.holder !== e.holder ||
            lease.released ||
            lease.expiresAtMs <= e.atMs
          ) {
            this.violation(
              `a heartbeat of ${e.holder} renewed agent ${agent} token ${token}, which it does not hold unexpired`,
            );
            continue;
          }
          lease.expiresAtMs = e.atMs + e.ttlMs;
        }
        return;
      }
      case "lease": {
        const r = e.result;
        if (r === null) return;
        const before = this.leases.get(e.agentId);
        if (!r.acquired) return;
        this.leasesAcquiredCount++;
        if (
          before !== undefined &&
          before.holder !== null &&
          before.holder !== e.holder &&
          !before.released
        ) {
          // Taken over from another incarnation that did not give it back.
          this.leasesTakenOverCount++;
          // Two owners: taking an unexpired lease of another incarnation is allowed only when that
          // incarnation is gone (left, superseded, or its heartbeat older than the dead-after time).
          const m = this.member(before.holder);
          const gone = m === undefined || m.left || m.superseded || m.heartbeatAtMs <= e.atMs - e.deadAfterMs;
          if (before.expiresAtMs > e.atMs && !gone)
            this.violation(
              `two owners: ${e.holder} took agent ${e.agentId} (token ${r.token}) while ${before.holder} held an unexpired lease and was live`,
            );
        }
        this.lessees.set(`${e.agentId}#${r.token}`, e.holder);
        this.newToken(e.agentId, r.token, {
          token: r.token,
          holder: e.holder,
          expiresAtMs: e.atMs + e.ttlMs,
          released: false,
        });
        return;
      }
      case "release": {
        const lease = this.leases.get(e.agentId);
        if (lease !== undefined && lease.token === e.token && lease.holder === e.holder)
          lease.released = true;
        return;
      }
      case "leave": {
        const m = this.member(e.holder);
        if (m !== undefined) m.left = true;
        for (const lease of this.leases.values()) if (lease.holder === e.holder) lease.released = true;
        return;
      }
    }
  }

  /** Fence log entries not yet resolved (a commit still in the engine's hands). */
  fenceBacklog(): number {
    return this.fenceLog.length - this.fenceChecked;
  }

  /** A crash happened: with the planted bug, the last commit was never really made durable. */
  onCrash(): boolean {
    if (!this.options.loseLastCommitOnCrash || this.tablesBeforeLastCommit === null) return false;
    (this.raw as unknown as MemoryStorageTables).tables = this.tablesBeforeLastCommit;
    this.tablesBeforeLastCommit = null;
    return true;
  }

  assertQuiet(): void {
    assert(this.fenceBacklog() === 0, "fence log has unresolved entries after the run");
  }
}
