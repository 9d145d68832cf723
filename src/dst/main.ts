// The seed runner (`npm run dst`, which is `kelpie dst`):
//   npm run dst -- --seeds N [--seed-start S]   run seeds S..S+N-1 (default 1..N)
//   DST_SEED=n npm run dst                       replay one seed; prints its trace when it fails
//   npm run dst -- --list-mutations              the planted bugs, one per line
//   npm run dst -- --mutation NAME --seeds N     run with one bug planted; stops at the first seed
//                                                that catches it (exit 1, with its replay command)
// The last line of every run is one JSON object: seeds, failed, faults injected by type, what the
// cluster did (leases taken and taken over, forwards, fenced commits and why they were rejected),
// the trace hash (of the one seed, or of every seed's hash in order), simulated and wall milliseconds.
import { createHash } from "node:crypto";
import { FAULT_TYPES } from "./faults.ts";
import { isPlantedBug, PLANTED_BUGS, type PlantedBug } from "./mutations.ts";
import { type ClusterFigures, noteUnhandledRejection, type RunResult, runSeed } from "./simulation.ts";

export const SEEDS_DEFAULT = 20;
export const SEEDS_MAX = 1_000_000;
/** Violations printed per failing seed (the replay prints them all). */
const VIOLATIONS_PRINTED_MAX = 5;

interface Args {
  seeds: number;
  seedStart: number;
  replaySeed: number | null;
  bug: PlantedBug | null;
  listMutations: boolean;
  printTrace: boolean;
}

function parseArgs(argv: string[], env: NodeJS.ProcessEnv): Args {
  const args: Args = {
    seeds: SEEDS_DEFAULT,
    seedStart: 1,
    replaySeed: null,
    bug: null,
    listMutations: false,
    printTrace: false,
  };
  const intArg = (name: string, value: string | undefined): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < 0 || n > 0xffffffff)
      throw new Error(`${name} needs a whole number, got '${value}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--seeds") args.seeds = intArg(arg, argv[++i]);
    else if (arg === "--seed-start") args.seedStart = intArg(arg, argv[++i]);
    else if (arg === "--seed") args.replaySeed = intArg(arg, argv[++i]);
    else if (arg === "--list-mutations") args.listMutations = true;
    else if (arg === "--trace") args.printTrace = true;
    else if (arg === "--mutation") {
      const name = argv[++i] ?? "";
      if (!isPlantedBug(name)) throw new Error(`unknown mutation '${name}' (see --list-mutations)`);
      args.bug = name;
    } else throw new Error(`unknown argument '${arg}'`);
  }
  if (env.DST_SEED !== undefined && env.DST_SEED !== "") args.replaySeed = intArg("DST_SEED", env.DST_SEED);
  if (args.seeds < 1 || args.seeds > SEEDS_MAX) throw new Error(`--seeds must be from 1 to ${SEEDS_MAX}`);
  return args;
}

function replayCommand(seed: number, bug: PlantedBug | null): string {
  return `DST_SEED=${seed} npm run dst${bug === null ? "" : ` -- --mutation ${bug}`}`;
}

function report(result: RunResult, bug: PlantedBug | null, all: boolean): void {
  console.log(`seed ${result.seed} FAILED (${result.violations.length} violations)`);
  const shown = all ? result.violations : result.violations.slice(0, VIOLATIONS_PRINTED_MAX);
  for (const text of shown) console.log(`  - ${text}`);
  if (shown.length < result.violations.length)
    console.log(`  ... ${result.violations.length - shown.length} more`);
  console.log(`replay: ${replayCommand(result.seed, bug)}`);
}

export async function dstCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(argv, env);
  } catch (err) {
    console.error(`dst: ${(err as Error).message}`);
    return 2;
  }
  if (args.listMutations) {
    for (const name of PLANTED_BUGS) console.log(name);
    return 0;
  }
  process.on("unhandledRejection", noteUnhandledRejection);
  const seeds =
    args.replaySeed !== null
      ? [args.replaySeed]
      : Array.from({ length: args.seeds }, (_, i) => (args.seedStart + i) >>> 0);
  const single = seeds.length === 1;
  const faults: Record<string, number> = Object.fromEntries(FAULT_TYPES.map((t) => [t, 0]));
  const cluster: ClusterFigures = {
    leasesAcquired: 0,
    leasesTakenOver: 0,
    forwards: 0,
    fencedCommits: 0,
    fencedCommitsRejected: 0,
    lapsedCommitsRejected: 0,
  };
  const hashes = createHash("sha256");
  let failed = 0;
  let simulatedMs = 0;
  let runs = 0;
  let lastHash = "";
  const t0 = performance.now();
  for (const seed of seeds) {
    const result = await runSeed({ seed, bug: args.bug, keepTrace: single });
    runs++;
    simulatedMs += result.simulatedMs;
    lastHash = result.traceHash;
    hashes.update(`${seed}:${result.traceHash}\n`);
    for (const [type, n] of Object.entries(result.faults)) faults[type] = (faults[type] ?? 0) + n;
    for (const key of Object.keys(cluster) as (keyof ClusterFigures)[]) cluster[key] += result.cluster[key];
    if (single && (args.printTrace || !result.ok)) console.log(result.trace.text());
    if (!result.ok) {
      failed++;
      report(result, args.bug, single);
      // With a planted bug, the first seed that catches it is the answer.
      if (args.bug !== null) break;
    }
  }
  const wallMs = Math.round(performance.now() - t0);
  if (args.bug !== null) {
    console.log(
      failed > 0
        ? `planted bug ${args.bug} caught after ${runs} seed(s)`
        : `planted bug ${args.bug} NOT caught in ${runs} seed(s)`,
    );
  }
  console.log(
    JSON.stringify({
      seeds: runs,
      failed,
      faults,
      cluster: {
        leases_acquired: cluster.leasesAcquired,
        leases_taken_over: cluster.leasesTakenOver,
        forwards: cluster.forwards,
        fenced_commits: cluster.fencedCommits,
        fenced_commits_rejected: cluster.fencedCommitsRejected,
        lapsed_lease_commits_rejected: cluster.lapsedCommitsRejected,
      },
      trace_hash: single ? lastHash : hashes.digest("hex"),
      simulated_ms: simulatedMs,
      wall_ms: wallMs,
      ...(args.bug === null ? {} : { mutation: args.bug }),
    }),
  );
  return failed > 0 ? 1 : 0;
}
