// Deterministic simulation throughput: seeds of the full simulation (real runtime, agent loop,
// memory and storage code under simulated time, network and faults) run back to back in one
// process. `sim_speedup` is simulated time over wall time; `seeds_per_min` is what a CI budget
// buys. The primitive beside it: how many empty events the scheduler alone runs per second (each
// event lets the promise chains it started settle, as a simulated event must).

import { SimScheduler } from "../src/dst/scheduler.ts";
import { runSeed } from "../src/dst/simulation.ts";
import { round3 } from "./stats.ts";

const SEEDS_COUNT = 40;
const SEED_FIRST = 1_000;
const BARE_EVENTS_COUNT = 200_000;

export async function run(): Promise<Record<string, unknown>> {
  // Warm up module loading and the JIT on one seed outside the measurement.
  await runSeed({ seed: SEED_FIRST - 1 });
  let simulatedMs = 0;
  let events = 0;
  let failed = 0;
  const t0 = performance.now();
  for (let i = 0; i < SEEDS_COUNT; i++) {
    const result = await runSeed({ seed: SEED_FIRST + i });
    simulatedMs += result.simulatedMs;
    events += result.eventsCount;
    if (!result.ok) failed++;
  }
  const wallMs = performance.now() - t0;

  const bare = new SimScheduler();
  let left = BARE_EVENTS_COUNT;
  const tick = () => {
    if (--left > 0) bare.schedule(1, tick);
  };
  bare.schedule(1, tick);
  const b0 = performance.now();
  await bare.run();
  const bareMs = performance.now() - b0;

  return {
    seeds: SEEDS_COUNT,
    failed,
    wall_ms: Math.round(wallMs),
    simulated_ms: simulatedMs,
    sim_speedup: round3(simulatedMs / wallMs),
    seeds_per_min: round3((SEEDS_COUNT / wallMs) * 60_000),
    wall_ms_per_seed: round3(wallMs / SEEDS_COUNT),
    events_per_s: Math.round((events / wallMs) * 1000),
    scheduler_events_per_s_bare: Math.round((BARE_EVENTS_COUNT / bareMs) * 1000),
  };
}
