// The simulated nodes and what happens to them. Each node is a real Kelpie instance (createKelpie:
// runtime, agent loop, memory services) over its own view of the one simulated disk, with its own
// clock, scripted LLM and sandbox. A crash kills the node (its timers and its storage calls never
// complete) and a fresh node boots over the same disk; a partition cuts a node off from the
// clients while it keeps running (a zombie still holding its activations and tokens), a new node
// takes over, and the zombie is stopped when the partition heals; a restart drains and stops a node
// cleanly; clock faults move a node's wall clock.
import { assert } from "../core/assert.ts";
import type { Rng } from "../core/rng.ts";
import type { LlmProvidersConfig } from "../llm/registry.ts";
import { createKelpie, type Kelpie } from "../server.ts";
import type { SimDisk } from "./disk.ts";
import type { ActiveFaults, FaultCounters } from "./faults.ts";
import type { BugSwitches } from "./mutations.ts";
import type { SimNetwork } from "./network.ts";
import { type CrashKind, NodeStorage } from "./node-storage.ts";
import { NodeClock, type SimScheduler } from "./scheduler.ts";
import { SimEmbedders } from "./sim-embedder.ts";
import { SimLlm } from "./sim-llm.ts";
import { SimSandbox } from "./sim-sandbox.ts";

export const NODE_RESTART_DELAY_MS_MIN = 200;
export const NODE_RESTART_DELAY_MS_MAX = 2_000;
/** How long after a partition starts a replacement node takes over. */
export const FAILOVER_DELAY_MS = 300;
/** An armed crash that finds no write in this long is disarmed (and not counted). */
export const CRASH_ARMED_MS = 5_000;
export const IDLE_TIMEOUT_MS = 4_000;
export const CLOCK_SKEW_MS_MAX = 10 * 60_000;
export const CLOCK_JUMP_MS_MAX = 2 * 3_600_000;
export const NODES_BOOTED_MAX = 1_000;

export type NodeState = "booting" | "up" | "stopping" | "dead";

export class SimNode {
  state: NodeState = "booting";
  kelpie: Kelpie | null = null;
  armedCrash: { kind: CrashKind; untilMs: number } | null = null;
  /** Requests delivered to this node and not yet answered. */
  inFlight = 0;
  readonly clock: NodeClock;

  constructor(
    readonly id: number,
    scheduler: SimScheduler,
  ) {
    this.clock = new NodeClock(scheduler);
  }

  get services() {
    assert(this.kelpie !== null, `node ${this.id} has no services yet`);
    return this.kelpie.services;
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
}

export class SimCluster {
  readonly nodes: SimNode[] = [];
  /** The node clients talk to (null while none is up). */
  current: SimNode | null = null;
  /** Whether faults are injected (off while booting the first node and after the workload). */
  faultsOn = false;
  private bootPending = false;
  private partitionActive = false;

  constructor(private readonly deps: ClusterDeps) {}

  private get trace() {
    return this.deps.trace;
  }

  /** Boots a new node over the disk and makes it current. */
  async boot(): Promise<SimNode> {
    const { deps } = this;
    assert(this.nodes.length < NODES_BOOTED_MAX, "too many nodes booted in one run");
    const node = new SimNode(this.nodes.length + 1, deps.scheduler);
    this.nodes.push(node);
    const rng = deps.rng.fork(`node-${node.id}`);
    const nowMs = () => deps.scheduler.nowMs();
    const nodeStorage = new NodeStorage({
      disk: deps.disk,
      clock: node.clock,
      rng: rng.fork("storage"),
      faults: deps.faults,
      counters: deps.counters,
      nowMs,
      trace: (line) => this.trace(`n${node.id} ${line}`),
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
      ackBeforeCommit: deps.bugs.ackBeforeCommit,
      skipChecksumVerify: deps.bugs.skipChecksumVerify,
    });
    const externals = {
      clock: node.clock,
      faults: deps.faults,
      counters: deps.counters,
      nowMs,
      trace: (line: string) => this.trace(`n${node.id} ${line}`),
    };
    const kelpie = await createKelpie(
      { clock: node.clock, rng: rng.fork("env"), storage: nodeStorage.storage },
      {
        logger: false,
        llm: deps.llm,
        llmProviderOverride: new SimLlm({ ...externals, rng: rng.fork("llm") }),
        embedders: new SimEmbedders(deps.llm),
        idleTimeoutMs: IDLE_TIMEOUT_MS,
      },
    );
    // The one custom tool runs in the simulated sandbox.
    kelpie.services.toolRunners.registerType(
      "custom",
      new SimSandbox({ ...externals, rng: rng.fork("sandbox") }),
    );
    node.kelpie = kelpie;
    if (node.state === "booting") {
      node.state = "up";
      this.current = node;
      this.trace(`n${node.id} up`);
    }
    return node;
  }

  private scheduleBoot(delayMs: number): void {
    if (this.bootPending) return;
    this.bootPending = true;
    this.deps.scheduler.schedule(delayMs, () => {
      this.bootPending = false;
      // Another path may have brought a node up meanwhile: one current node at a time.
      if (this.current === null) void this.boot();
    });
  }

  /** Kills a node as SIGKILL would; a replacement boots after a seeded delay if none is current. */
  crash(node: SimNode, why: string): void {
    if (node.state === "dead") return;
    node.state = "dead";
    node.clock.kill();
    this.trace(`n${node.id} crash (${why})`);
    if (this.deps.disk.onCrash()) this.trace("disk lost its last commit in the crash");
    if (this.current === node) this.current = null;
    if (this.current === null) {
      const { rng } = this.deps;
      this.scheduleBoot(
        NODE_RESTART_DELAY_MS_MIN + rng.int(NODE_RESTART_DELAY_MS_MAX - NODE_RESTART_DELAY_MS_MIN),
      );
    }
  }

  /** Arms a crash for the current node's next write of the right kind; false when no node is up. */
  armCrash(kind: CrashKind): boolean {
    const node = this.current;
    if (node === null || node.state !== "up") return false;
    node.armedCrash = { kind, untilMs: this.deps.scheduler.nowMs() + CRASH_ARMED_MS };
    this.trace(`n${node.id} armed ${kind}`);
    return true;
  }

  /** Cuts the current node off from the clients for `durationMs`; another node takes over. */
  partition(durationMs: number): boolean {
    const node = this.current;
    if (node === null || node.state !== "up" || this.partitionActive) return false;
    this.partitionActive = true;
    this.deps.network.partition(node.id);
    this.deps.counters.count("network_partition");
    this.trace(`fault network_partition n${node.id} for ${durationMs}ms`);
    this.current = null;
    this.scheduleBoot(FAILOVER_DELAY_MS);
    this.deps.scheduler.schedule(durationMs, () => {
      // The partition heals: the zombie is told it lost its lease and stops.
      this.crash(node, "stopped after partition");
      this.deps.network.heal(node.id);
      this.partitionActive = false;
    });
    return true;
  }

  /** Drains and stops the current node, then boots a new one. */
  restart(): boolean {
    const node = this.current;
    if (node === null || node.state !== "up") return false;
    this.deps.counters.count("node_restart");
    this.trace(`fault node_restart n${node.id}`);
    node.state = "stopping";
    this.current = null;
    void node.services.runtime.stop().then(() => {
      if (node.state === "stopping") {
        node.state = "dead";
        node.clock.kill();
        this.trace(`n${node.id} stopped`);
      }
      this.scheduleBoot(NODE_RESTART_DELAY_MS_MIN);
    });
    return true;
  }

  /** Moves the current node's wall clock: a standing offset (skew) or a step (jump). */
  moveClock(kind: "clock_skew" | "clock_jump"): boolean {
    const node = this.current;
    if (node === null || node.state !== "up") return false;
    const { rng } = this.deps;
    const sign = rng.next() < 0.5 ? -1 : 1;
    if (kind === "clock_skew") node.clock.wallOffsetMs = sign * (1 + rng.int(CLOCK_SKEW_MS_MAX));
    else node.clock.wallOffsetMs += sign * (60_000 + rng.int(CLOCK_JUMP_MS_MAX));
    this.deps.counters.count(kind);
    this.trace(`fault ${kind} n${node.id} wall offset ${node.clock.wallOffsetMs}ms`);
    return true;
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
