// The simulated nodes and what happens to them. Each node is a real Kelpie instance (createKelpie:
// runtime, agent loop, memory services, and the real ClusterMember for placement) over its own
// view of the one simulated database, with its own clock (skewed from the start), scripted LLM and
// sandbox. The nodes form a cluster: they register, heartbeat and take agent leases in the
// database, whose clock is the simulation's global time, so no node's skew decides who owns an
// agent. NODES_COUNT slots each run one process at a time:
// - a crash kills the process (its timers and its storage calls never complete); a fresh process
//   (the next incarnation of the slot's node id) boots after a seeded delay;
// - a restart drains the runtime, leaves the cluster cleanly (giving its leases back), and boots
//   the next incarnation;
// - a partition cuts a process off from the clients, from the other nodes (forwarded requests
//   fail), or from the database (its calls fail or hang, its heartbeats stop reaching the
//   database, its leases lapse in database time and other nodes take its agents over, and a
//   commit it sends late is fenced), while its clock and timers keep running; each heals on its
//   own schedule;
// - clock faults move one process's wall clock (a standing skew, or a jump).
import { assert } from "../core/assert.ts";
import type { Rng } from "../core/rng.ts";
import type { LlmProvidersConfig } from "../llm/registry.ts";
import { noNetworkFetch } from "../net/egress-fetch.ts";
import { createKelpie, type Kelpie } from "../server.ts";
import type { LeaseOwner } from "../storage/types.ts";
import type { SimDisk } from "./disk.ts";
import type { ActiveFaults, FaultCounters } from "./faults.ts";
import { SimLinks } from "./http.ts";
import { type BugSwitches, OpenTurnGate, PerStepForkRng, runTierWritesOutsideMailbox } from "./mutations.ts";
import type { SimNetwork } from "./network.ts";
import { type CrashKind, NodeStorage } from "./node-storage.ts";
import { NodeClock, type SimScheduler } from "./scheduler.ts";
import { SimEmbedders } from "./sim-embedder.ts";
import { SimLlm } from "./sim-llm.ts";
import { SimSandbox } from "./sim-sandbox.ts";

/** Nodes in the cluster (slots, each running one process at a time). */
export const NODES_COUNT = 3;
/** Agent lease TTL and heartbeat interval of every node (the production minimum is 200 ms). */
export const LEASE_TTL_MS = 1_000;
export const HEARTBEAT_INTERVAL_MS = 250;
export const NODE_RESTART_DELAY_MS_MIN = 200;
export const NODE_RESTART_DELAY_MS_MAX = 2_000;
/** An armed crash that finds no write in this long is disarmed (and not counted). */
export const CRASH_ARMED_MS = 5_000;
export const IDLE_TIMEOUT_MS = 4_000;
/** Every process boots with its own wall-clock offset of up to this much either way. */
export const BOOT_CLOCK_SKEW_MS_MAX = 5_000;
export const CLOCK_SKEW_MS_MAX = 10 * 60_000;
export const CLOCK_JUMP_MS_MAX = 2 * 3_600_000;
export const NODES_BOOTED_MAX = 1_000;
/** The cluster's shared secret (fixed: a generated one would come from the OS). */
export const CLUSTER_SECRET = "dst-simulated-cluster-secret-0123456789abcdef";

export type NodeState = "booting" | "up" | "stopping" | "dead";

export function nodeIdOfSlot(slot: number): string {
  return `node-${slot}`;
}

export class SimNode {
  state: NodeState = "booting";
  kelpie: Kelpie | null = null;
  storage: NodeStorage | null = null;
  armedCrash: { kind: CrashKind; untilMs: number } | null = null;
  /** Requests this process is serving (from clients, or forwarded by another node). */
  inFlight = 0;
  /** While cut off from the database: resolved when that heals. */
  dbHeal: { promise: Promise<void>; resolve: () => void } | null = null;
  /** Forwarded requests in flight to or from this process: each fails when the link breaks. */
  readonly forwards = new Set<() => void>();
  readonly clock: NodeClock;
  /** The wall-clock offset it booted with (time sync corrects it back to this). */
  bootWallOffsetMs = 0;

  constructor(
    /** The process's number in the run (n1, n2, ... in the trace). */
    readonly id: number,
    /** The cluster node (node-<slot>) it is an incarnation of. */
    readonly slot: number,
    scheduler: SimScheduler,
  ) {
    this.clock = new NodeClock(scheduler);
  }

  get nodeId(): string {
    return nodeIdOfSlot(this.slot);
  }

  /** `node-2#3` once registered. */
  get origin(): string | null {
    return this.storage?.origin ?? null;
  }

  get services() {
    assert(this.kelpie !== null, `node ${this.id} has no services yet`);
    return this.kelpie.services;
  }

  get member() {
    const member = this.services.cluster;
    assert(member !== undefined, `node ${this.id} runs without a cluster member`);
    return member;
  }
}

export interface ClusterDeps {
  scheduler: SimScheduler;
  disk: SimDisk;
  network: SimNetwork;
  rng: Rng;
  faults: ActiveFaults;
  counters: FaultCounters;
  trace: (line: string) => void;
  bugs: BugSwitches;
  llm: LlmProvidersConfig;
  /** A broken guarantee seen inside a node (by its scripted model). */
  violation: (text: string) => void;
}

export class SimCluster {
  /** Every process booted in the run, in boot order. */
  readonly nodes: SimNode[] = [];
  /** The process of each slot (index slot - 1), null between a death and the next boot. */
  readonly slots: (SimNode | null)[] = Array.from({ length: NODES_COUNT }, () => null);
  /** Whether faults are injected (off while booting the first nodes and after the workload). */
  faultsOn = false;
  private readonly bootPending = new Set<number>();
  private clientPartitionActive = false;
  private nodePartitionActive = false;
  /** The network between nodes as their forwarding and outbox code sees it. */
  readonly links: SimLinks;

  constructor(private readonly deps: ClusterDeps) {
    this.links = new SimLinks({
      network: deps.network,
      scheduler: deps.scheduler,
      processOf: (owner) => this.processOf(owner),
      trace: deps.trace,
    });
  }

  private get trace() {
    return this.deps.trace;
  }

  /** Boots every slot's first process. */
  async bootAll(): Promise<void> {
    for (let slot = 1; slot <= NODES_COUNT; slot++) await this.boot(slot);
  }

  /** Boots a new process in a slot: the next incarnation of its node. */
  async boot(slot: number): Promise<SimNode> {
    const { deps } = this;
    assert(this.nodes.length < NODES_BOOTED_MAX, "too many nodes booted in one run");
    assert(this.slots[slot - 1] === null, `slot ${slot} already runs a process`);
    const node = new SimNode(this.nodes.length + 1, slot, deps.scheduler);
    this.nodes.push(node);
    this.slots[slot - 1] = node;
    const rng = deps.rng.fork(`node-${node.id}`);
    node.clock.wallOffsetMs = rng.int(2 * BOOT_CLOCK_SKEW_MS_MAX + 1) - BOOT_CLOCK_SKEW_MS_MAX;
    node.bootWallOffsetMs = node.clock.wallOffsetMs;
    const nowMs = () => deps.scheduler.nowMs();
    const trace = (line: string) => this.trace(`n${node.id} ${line}`);
    const nodeStorage = new NodeStorage({
      disk: deps.disk,
      clock: node.clock,
      rng: rng.fork("storage"),
      faults: deps.faults,
      counters: deps.counters,
      nowMs,
      trace,
      faultsEnabled: () => this.faultsOn && node.state !== "booting",
      isDead: () => node.state === "dead",
      takeArmedCrash: (isMultiRowCommit) => {
        const armed = node.armedCrash;
        if (armed === null || nowMs() > armed.untilMs) return null;
        if (armed.kind === "crash_during_txn" && !isMultiRowCommit) return null;
        node.armedCrash = null;
        return armed.kind;
      },
      crash: (kind) => this.crash(node, kind),
      dbPartition: () => node.dbHeal?.promise ?? null,
      ackBeforeCommit: deps.bugs.ackBeforeCommit,
      outboxWriteBehind: deps.bugs.outboxWriteBehind,
      skipChecksumVerify: deps.bugs.skipChecksumVerify,
      uncheckedWorkingLimits: deps.bugs.limitOutsideTxn,
    });
    node.storage = nodeStorage;
    const externals = { clock: node.clock, faults: deps.faults, counters: deps.counters, nowMs, trace };
    const envRng = rng.fork("env");
    const kelpie = await createKelpie(
      {
        clock: node.clock,
        rng: deps.bugs.forkPerStep ? new PerStepForkRng(envRng, nowMs) : envRng,
        storage: nodeStorage.storage,
      },
      {
        logger: false,
        llm: deps.llm,
        llmProviderOverride: new SimLlm({ ...externals, rng: rng.fork("llm"), violation: deps.violation }),
        embedders: new SimEmbedders(deps.llm, noNetworkFetch),
        idleTimeoutMs: IDLE_TIMEOUT_MS,
        nodeTransport: this.links.transportFor(node),
        ...(deps.bugs.interleaveTurns ? { turnGate: new OpenTurnGate(node.clock) } : {}),
        cluster: {
          secret: CLUSTER_SECRET,
          nodeId: node.nodeId,
          advertiseUrl: `sim://${node.nodeId}`,
          leaseTtlMs: LEASE_TTL_MS,
          heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
        },
      },
    );
    // The one custom tool runs in the simulated sandbox.
    kelpie.services.toolRunners.registerType(
      "custom",
      new SimSandbox({ ...externals, rng: rng.fork("sandbox") }),
    );
    if (deps.bugs.tierWriteOutsideMailbox) runTierWritesOutsideMailbox(kelpie.services.runtime);
    // Routes and hooks registered before the first request, as a listening server has them.
    await kelpie.app.ready();
    node.kelpie = kelpie;
    if (node.state === "booting") {
      node.state = "up";
      this.trace(`n${node.id} up as ${node.origin} (wall offset ${node.clock.wallOffsetMs}ms)`);
    }
    return node;
  }

  private scheduleBoot(slot: number, delayMs: number): void {
    if (this.bootPending.has(slot)) return;
    this.bootPending.add(slot);
    this.deps.scheduler.schedule(delayMs, () => {
      this.bootPending.delete(slot);
      // Another path may have brought the slot up meanwhile: one process per slot.
      if (this.slots[slot - 1] === null) void this.boot(slot);
    });
  }

  /** The processes serving now. */
  upNodes(): SimNode[] {
    return this.slots.filter((n): n is SimNode => n !== null && n.state === "up");
  }

  /** Where a client's request goes: any serving process (the load balancer knows no owners). */
  pickNode(rng: Rng): SimNode | null {
    const up = this.upNodes();
    return up.length === 0 ? null : up[rng.int(up.length)]!;
  }

  /** The process a lease owner names, if it is one of this run's (alive or not). */
  processOf(owner: LeaseOwner): SimNode | null {
    const origin = `${owner.node_id}#${owner.incarnation}`;
    for (let i = this.nodes.length - 1; i >= 0; i--)
      if (this.nodes[i]!.origin === origin) return this.nodes[i]!;
    return null;
  }

  private pickFault(filter: (node: SimNode) => boolean = () => true): SimNode | null {
    const candidates = this.upNodes().filter(filter);
    return candidates.length === 0 ? null : candidates[this.deps.rng.int(candidates.length)]!;
  }

  /** Kills a process as SIGKILL would; the slot's next process boots after a seeded delay. */
  crash(node: SimNode, why: string): void {
    if (node.state === "dead") return;
    node.state = "dead";
    node.clock.kill();
    this.trace(`n${node.id} crash (${why})`);
    if (this.deps.disk.onCrash()) this.trace("disk lost its last commit in the crash");
    this.breakForwards(node);
    if (this.slots[node.slot - 1] === node) this.slots[node.slot - 1] = null;
    const { rng } = this.deps;
    this.scheduleBoot(
      node.slot,
      NODE_RESTART_DELAY_MS_MIN + rng.int(NODE_RESTART_DELAY_MS_MAX - NODE_RESTART_DELAY_MS_MIN),
    );
  }

  private breakForwards(node: SimNode): void {
    for (const fail of [...node.forwards]) fail();
  }

  /** Arms a crash for one process's next write of the right kind; false when none is up. */
  armCrash(kind: CrashKind): boolean {
    const node = this.pickFault();
    if (node === null) return false;
    node.armedCrash = { kind, untilMs: this.deps.scheduler.nowMs() + CRASH_ARMED_MS };
    this.trace(`n${node.id} armed ${kind}`);
    return true;
  }

  /** Cuts one process off from the clients for `durationMs` (it keeps serving forwarded requests). */
  partitionFromClients(durationMs: number): boolean {
    if (this.clientPartitionActive) return false;
    const node = this.pickFault();
    if (node === null) return false;
    this.clientPartitionActive = true;
    this.deps.network.partition(node.id);
    this.deps.counters.count("network_partition");
    this.trace(`fault network_partition n${node.id} from the clients for ${durationMs}ms`);
    this.deps.scheduler.schedule(durationMs, () => {
      this.deps.network.heal(node.id);
      this.clientPartitionActive = false;
      this.trace(`n${node.id} reachable from the clients again`);
    });
    return true;
  }

  /** Cuts one process off from the other nodes for `durationMs`: forwarding to or from it fails. */
  partitionFromNodes(durationMs: number, chosen?: SimNode): boolean {
    if (this.nodePartitionActive) return false;
    const node = chosen ?? this.pickFault();
    if (node === null || node.state !== "up") return false;
    this.nodePartitionActive = true;
    this.deps.network.isolate(node.id);
    this.breakForwards(node);
    this.deps.counters.count("node_partition");
    this.trace(`fault node_partition n${node.id} from the other nodes for ${durationMs}ms`);
    this.deps.scheduler.schedule(durationMs, () => {
      this.deps.network.rejoin(node.id);
      this.nodePartitionActive = false;
      this.trace(`n${node.id} reachable from the other nodes again`);
    });
    return true;
  }

  /**
   * Cuts one process off from the database for `durationMs`; its clock and timers keep running,
   * so it notices its leases lapse while other nodes take its agents over.
   */
  partitionFromDatabase(durationMs: number, chosen?: SimNode): boolean {
    const node = chosen ?? this.pickFault((n) => n.dbHeal === null);
    if (node === null || node.dbHeal !== null || node.state !== "up") return false;
    let resolve = () => {};
    const promise = new Promise<void>((r) => {
      resolve = r;
    });
    node.dbHeal = { promise, resolve };
    this.deps.counters.count("db_partition");
    this.trace(`fault db_partition n${node.id} from the database for ${durationMs}ms`);
    this.deps.scheduler.schedule(durationMs, () => {
      const heal = node.dbHeal;
      node.dbHeal = null;
      this.trace(`n${node.id} reaches the database again`);
      heal?.resolve();
    });
    return true;
  }

  /** Drains and stops one process, leaving the cluster cleanly, then boots the slot's next one. */
  restart(): boolean {
    const node = this.pickFault();
    if (node === null) return false;
    this.deps.counters.count("node_restart");
    this.trace(`fault node_restart n${node.id}`);
    node.state = "stopping";
    void (async () => {
      await node.services.runtime.stop();
      await node.member.leave();
      if (node.state === "stopping") {
        node.state = "dead";
        node.clock.kill();
        this.breakForwards(node);
        if (this.slots[node.slot - 1] === node) this.slots[node.slot - 1] = null;
        this.trace(`n${node.id} stopped`);
      }
      this.scheduleBoot(node.slot, NODE_RESTART_DELAY_MS_MIN);
    })();
    return true;
  }

  /** Moves one process's wall clock: a standing offset (skew) or a step (jump). */
  moveClock(kind: "clock_skew" | "clock_jump"): boolean {
    const node = this.pickFault();
    if (node === null) return false;
    const { rng } = this.deps;
    const sign = rng.next() < 0.5 ? -1 : 1;
    if (kind === "clock_skew") node.clock.wallOffsetMs = sign * (1 + rng.int(CLOCK_SKEW_MS_MAX));
    else node.clock.wallOffsetMs += sign * (60_000 + rng.int(CLOCK_JUMP_MS_MAX));
    this.deps.counters.count(kind);
    this.trace(`fault ${kind} n${node.id} wall offset ${node.clock.wallOffsetMs}ms`);
    return true;
  }

  /**
   * Time sync catches up with every skewed or jumped clock (as NTP would): each process is back
   * at its boot offset. Until then a node more than CLUSTER_AUTH_SKEW_MS off cannot forward to or
   * be forwarded to by the others (their credentials' times disagree).
   */
  syncClocks(): void {
    for (const node of this.upNodes()) {
      if (node.clock.wallOffsetMs === node.bootWallOffsetMs) continue;
      node.clock.wallOffsetMs = node.bootWallOffsetMs;
      this.trace(`n${node.id} clock synced (wall offset ${node.clock.wallOffsetMs}ms)`);
    }
  }

  liveNodes(): SimNode[] {
    return this.nodes.filter((n) => n.state === "up" || n.state === "stopping");
  }

  /** Stops every node's timers at the end of the run. */
  shutdown(): void {
    for (const node of this.nodes) {
      node.clock.kill();
      if (node.state !== "dead") node.state = "dead";
    }
  }
}
