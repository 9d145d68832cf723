// One seeded run: build the simulated world (scheduler, database, network, cluster), boot the
// cluster's nodes, make the first agents, start the clients and the fault plan, run until the
// clients are done, let the system settle, and check every invariant. Everything random comes from the seed, forked per
// concern; everything timed comes from the scheduler; so a seed replays exactly.
import { SeededRng } from "../core/rng.ts";
import { llmConfigFromEnv } from "../llm/registry.ts";
import { NODES_COUNT, SimCluster } from "./cluster.ts";
import { SimDisk } from "./disk.ts";
import { ActiveFaults, FaultCounters, type FaultType, makeFaultPlan, type PlannedFault } from "./faults.ts";
import { History } from "./history.ts";
import { checkBounded, checkDisk, checkHistories } from "./invariants.ts";
import { bugSwitches, type PlantedBug } from "./mutations.ts";
import { SimNetwork } from "./network.ts";
import type { CrashKind } from "./node-storage.ts";
import { SimScheduler } from "./scheduler.ts";
import { sandboxToolRecord } from "./sim-sandbox.ts";
import { Trace } from "./trace.ts";
import { Workload } from "./workload.ts";

export const CLIENTS_COUNT = 5;
export const OPS_PER_CLIENT = 24;
export const AGENTS_INITIAL_COUNT = 4;
/** Faults start within this much simulated time (the workload runs about this long). */
export const FAULT_HORIZON_MS = 25_000;
export const FAULTS_EXTRA_COUNT = 8;
/** After the clients finish: time for timeouts, retries and restarts to play out. */
export const SETTLE_MS = 30_000;
/** Making the first agents (no faults yet) takes far less than this. */
export const SETUP_MS_MAX = 60_000;
/** A run whose clients are not done by then is stuck. */
export const RUN_SIMULATED_MS_MAX = 30 * 60_000;

/** Promise rejections nobody handled during the current run: each is a bug in the code it came from. */
let unhandled: string[] = [];

/** The runner installs this as the process's unhandledRejection handler. */
export function noteUnhandledRejection(reason: unknown): void {
  unhandled.push(reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason));
}

/** Thrown to leave a run once it has failed. */
class StopEarly extends Error {}

export interface RunOptions {
  seed: number;
  bug?: PlantedBug | null;
  /** Keep the trace's lines (for printing a failing replay); the hash is computed either way. */
  keepTrace?: boolean;
}

export interface RunResult {
  seed: number;
  ok: boolean;
  violations: string[];
  traceHash: string;
  trace: Trace;
  faults: Record<string, number>;
  simulatedMs: number;
  eventsCount: number;
  opsCount: number;
  nodesBooted: number;
  /** What the cluster did: leases taken (and taken over), forwards, fenced commits. */
  cluster: ClusterFigures;
}

export interface ClusterFigures {
  leasesAcquired: number;
  leasesTakenOver: number;
  forwards: number;
  fencedCommits: number;
  fencedCommitsRejected: number;
  /** Rejected because the lease had lapsed (the token was still the newest). */
  lapsedCommitsRejected: number;
}

export async function runSeed(options: RunOptions): Promise<RunResult> {
  unhandled = [];
  const root = new SeededRng(options.seed);
  const bugs = bugSwitches(options.bug ?? null);
  const scheduler = new SimScheduler();
  const trace = new Trace(scheduler, options.keepTrace ?? false);
  const line = (text: string) => trace.add(text);
  const faults = new ActiveFaults();
  const counters = new FaultCounters();
  const history = new History();
  // The database's clock is the simulation's global time: no node's skew reaches it.
  const disk = new SimDisk({
    nowMs: () => scheduler.nowMs(),
    skipFencingCheck: bugs.skipFencingCheck,
    skipLeaseLapseCheck: bugs.skipLeaseLapseCheck,
    loseLastCommitOnCrash: bugs.loseLastCommitOnCrash,
  });
  const network = new SimNetwork({ scheduler, rng: root.fork("network"), faults, counters, trace: line });
  const cluster = new SimCluster({
    scheduler,
    disk,
    network,
    rng: root.fork("cluster"),
    faults,
    counters,
    trace: line,
    bugs,
    llm: llmConfigFromEnv({ OPENAI_API_KEY: "dst-simulated" }),
    violation: (text) => history.violation(text),
  });
  line(`seed ${options.seed}${options.bug ? ` bug ${options.bug}` : ""}`);

  const failed = () => history.violations.length > 0 || disk.violations.length > 0;
  let forwards = () => 0;
  try {
    // The world before the workload: the custom tool on disk, the nodes, the first agents.
    await disk.storage.commit([{ op: "put_tool", tool: sandboxToolRecord(0), create: true }]);
    await cluster.bootAll();
    const workload = new Workload({
      scheduler,
      cluster,
      network,
      history,
      rng: root.fork("workload"),
      bugs,
      trace: line,
    });
    forwards = () => cluster.links.forwardsCount;
    let setupDone = false;
    void (async () => {
      for (let i = 0; i < AGENTS_INITIAL_COUNT; i++) await workload.createAgent(0);
      setupDone = true;
    })();
    await scheduler.run({ untilMs: SETUP_MS_MAX, stop: () => setupDone });
    if (history.agents.length < AGENTS_INITIAL_COUNT)
      history.violation(
        `only ${history.agents.length} of the first ${AGENTS_INITIAL_COUNT} agents could be created`,
      );

    // Checks after every boot of a replacement node: what was acknowledged survived.
    let checkpoints = 0;
    const bootedSeen = new Set<number>(cluster.nodes.map((n) => n.id));
    const checkpoint = (where: string) => {
      const index = ++checkpoints;
      // An event of its own: nothing else runs while it reads the disk.
      scheduler.schedule(0, () => {
        void checkDisk(disk.raw, history, where, index).then(() => checkBounded(cluster, history, where));
      });
    };

    // The fault plan, injected on schedule while the clients run.
    cluster.faultsOn = true;
    const plan = makeFaultPlan(root.fork("faults"), {
      horizonMs: FAULT_HORIZON_MS,
      extraFaultsCount: FAULTS_EXTRA_COUNT,
    });
    line(`plan ${plan.map((f) => `${f.type}@${f.atMs}+${f.durationMs}`).join(" ")}`);
    for (const fault of plan) scheduler.schedule(fault.atMs, () => inject(fault));
    function inject(fault: PlannedFault): void {
      if (!cluster.faultsOn) return;
      const nowMs = scheduler.nowMs();
      const t: FaultType = fault.type;
      switch (t) {
        case "crash_before_write":
        case "crash_after_write":
        case "crash_during_txn":
          cluster.armCrash(t as CrashKind);
          return;
        case "network_partition":
          cluster.partitionFromClients(fault.durationMs);
          return;
        case "db_partition":
          cluster.partitionFromDatabase(fault.durationMs);
          return;
        case "node_partition":
          cluster.partitionFromNodes(fault.durationMs);
          return;
        case "clock_skew":
        case "clock_jump":
          cluster.moveClock(t);
          return;
        case "node_restart":
          cluster.restart();
          return;
        default:
          faults.open(t, nowMs + fault.durationMs);
          line(`window ${t} open for ${fault.durationMs}ms`);
      }
    }

    const clientsDone = { value: false };
    const clients = Promise.all(
      Array.from({ length: CLIENTS_COUNT }, (_, c) => workload.client(c, OPS_PER_CLIENT)),
    ).then(() => {
      clientsDone.value = true;
    });
    // Watch for new nodes: each boot after a crash, failover or restart is a durability checkpoint.
    const watch = () => {
      for (const node of cluster.nodes) {
        if (node.state === "up" && !bootedSeen.has(node.id)) {
          bootedSeen.add(node.id);
          checkpoint(`after boot of n${node.id}`);
        }
      }
    };
    await scheduler.run({
      untilMs: RUN_SIMULATED_MS_MAX,
      stop: () => {
        watch();
        // A violation already seen fails the seed: stop there (the trace ends at the failure).
        return clientsDone.value || failed();
      },
    });
    if (failed()) throw new StopEarly();
    if (!clientsDone.value) history.violation(`the clients were not done after ${RUN_SIMULATED_MS_MAX} ms`);
    await clients.catch((err: unknown) => history.violation(`a client failed: ${String(err)}`));

    // Settle: no new faults, windows closed, clocks synced, partitions heal on their own schedule;
    // a node comes up.
    cluster.faultsOn = false;
    for (const f of plan) faults.close(f.type);
    cluster.syncClocks();
    line("settle");
    await scheduler.run({
      untilMs: scheduler.nowMs() + SETTLE_MS,
      stop: () => {
        watch();
        return false;
      },
    });
    watch();
    const up = cluster.upNodes();
    if (up.length < NODES_COUNT)
      history.violation(`${up.length} of ${NODES_COUNT} nodes are up after the run settled`);
    for (const node of up) {
      if (!node.member.serving())
        history.violation(`node n${node.id} is ${node.member.state}, not serving, after the run settled`);
    }

    // Final checks.
    checkBounded(cluster, history, "at the end");
    for (const node of cluster.liveNodes()) {
      const stats = node.services.runtime.stats();
      if (stats.mailboxDepthTotal !== 0 || node.inFlight !== 0)
        history.violation(
          `at the end: node n${node.id} still holds ${stats.mailboxDepthTotal} ops (${node.inFlight} requests)`,
        );
    }
    await checkDisk(disk.raw, history, "at the end", ++checkpoints, true);
    checkHistories(history);
  } catch (err) {
    if (err instanceof StopEarly) line("stopped at the first violation");
    else {
      // A thrown error here is an assertion in the harness or the code under test: a failure.
      const e = err instanceof Error ? err : new Error(String(err));
      history.violation(`the simulation stopped: ${e.name}: ${e.message}`);
    }
  }
  for (const text of disk.violations) history.violation(text);
  for (const text of unhandled) history.violation(`unhandled promise rejection: ${text}`);
  cluster.shutdown();

  const violations = history.violations;
  let registerOpsCount = 0;
  for (const ops of history.registerOps.values()) registerOpsCount += ops.length;
  line(
    `end ${violations.length === 0 ? "ok" : `FAILED ${violations.length}`}: ` +
      `${history.ackedSends.length} sends and ${history.ackedPassages.length} inserts acknowledged, ` +
      `${registerOpsCount} block and ${history.kvOps.length} working-memory ops checked for linearizability, ` +
      `${disk.fencedCommitsCount} fenced commits (${disk.fencedCommitsRejectedCount} rejected, ` +
      `${disk.lapsedCommitsRejectedCount} for a lapsed lease), ${disk.leasesAcquiredCount} leases taken ` +
      `(${disk.leasesTakenOverCount} taken over), ${forwards()} forwards`,
  );
  for (const text of violations) line(`violation ${text}`);
  return {
    seed: options.seed,
    ok: violations.length === 0,
    violations,
    traceHash: trace.finish(),
    trace,
    faults: counters.toJSON(),
    simulatedMs: scheduler.nowMs(),
    eventsCount: scheduler.eventsCount,
    opsCount: CLIENTS_COUNT * OPS_PER_CLIENT,
    nodesBooted: cluster.nodes.length,
    cluster: {
      leasesAcquired: disk.leasesAcquiredCount,
      leasesTakenOver: disk.leasesTakenOverCount,
      forwards: forwards(),
      fencedCommits: disk.fencedCommitsCount,
      fencedCommitsRejected: disk.fencedCommitsRejectedCount,
      lapsedCommitsRejected: disk.lapsedCommitsRejectedCount,
    },
  };
}
