// Start + run of a trivial tool at each sandbox level (isolate, namespace; process when bubblewrap
// is compared against a bare python3 spawn), and tool calls per second with 8 in flight. The
// namespace level is timed for Python tools and, pooled, for a JavaScript tool under node.
//
// Python runs take a pre-started sandbox from the warm pool, which refills in the background as the
// run starts (so the refill competes with the run for CPU, as it does in the server). The pooled
// figures space runs by a request gap, the way a real stream of tool calls arrives; the
// back-to-back figures leave no gap (the pool cannot keep up: most runs wait on a sandbox still
// starting); the cold figures disable the pool, so every run starts its own sandbox.
import { spawn } from "node:child_process";
import { runIsolate } from "../src/tools/sandbox/isolate.ts";
import type { SandboxRequest } from "../src/tools/sandbox/limits.ts";
import { closeSandboxPool, runSandboxed, type SandboxRunOptions } from "../src/tools/sandbox/namespace.ts";
import { nowMs, percentileMs, round3 } from "./stats.ts";

const RUNS_COUNT = 100;
const IN_FLIGHT = 8;
/** Time between one tool run's end and the next one's start: an agent's tool calls are at least a
 * model round trip apart, and 50 ms is shorter than any real one. Not part of the timed run. */
const REQUEST_GAP_MS = 50;
const POOL_DISABLED: SandboxRunOptions = { poolSize: 0 };

const py: SandboxRequest = {
  language: "python",
  source: "def add(a: int, b: int) -> int:\n    return a + b\n",
  functionName: "add",
  args: { a: 1, b: 2 },
  parameterNames: ["a", "b"],
  env: {},
};
const js: SandboxRequest = { ...py, language: "javascript", source: "function add(a, b) { return a + b; }" };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function time(fn: () => Promise<unknown>, gapMs = 0): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < RUNS_COUNT; i++) {
    const t0 = nowMs();
    await fn();
    samples.push(nowMs() - t0);
    if (gapMs > 0) await sleep(gapMs);
  }
  return samples;
}

/** Times runs of a tool at a level, from an empty pool warmed by one untimed run. */
async function timeSandboxed(
  level: "namespace" | "process",
  gapMs: number,
  options: SandboxRunOptions = {},
  request: SandboxRequest = py,
): Promise<number[]> {
  await closeSandboxPool();
  const warm = await runSandboxed(request, level, options);
  if (warm.value !== "3") throw new Error(`${request.language} ${level} sandbox failed: ${warm.value}`);
  await sleep(REQUEST_GAP_MS);
  return time(async () => {
    const result = await runSandboxed(request, level, options);
    if (result.value !== "3") throw new Error(`${request.language} ${level} sandbox failed: ${result.value}`);
  }, gapMs);
}

function barePython(): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn("/usr/bin/python3", ["-I", "-c", "print(1+2)"], { stdio: "ignore" });
    child.on("close", () => resolve());
  });
}

export async function run(): Promise<Record<string, unknown>> {
  const isolate = await time(() => runIsolate(js));
  const namespace = await timeSandboxed("namespace", REQUEST_GAP_MS);
  const backToBack = await timeSandboxed("namespace", 0);
  const cold = await timeSandboxed("namespace", 0, POOL_DISABLED);
  const processLevel = await timeSandboxed("process", REQUEST_GAP_MS);
  const nodeNamespace = await timeSandboxed("namespace", REQUEST_GAP_MS, {}, js);
  await closeSandboxPool();
  const bare = await time(barePython);
  let done = 0;
  const t0 = nowMs();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (done < RUNS_COUNT) {
        done++;
        await runSandboxed(py, "namespace");
      }
    }),
  );
  const perS = RUNS_COUNT / ((nowMs() - t0) / 1000);
  await closeSandboxPool();
  const limit = percentileMs(bare, 50);
  console.log(
    `${RUNS_COUNT} runs per level; bare python3 spawn is the primitive; pooled Python runs ${REQUEST_GAP_MS} ms apart`,
  );
  return {
    isolate_p50_ms: percentileMs(isolate, 50),
    isolate_p99_ms: percentileMs(isolate, 99),
    namespace_p50_ms: percentileMs(namespace, 50),
    namespace_p99_ms: percentileMs(namespace, 99),
    namespace_back_to_back_p50_ms: percentileMs(backToBack, 50),
    namespace_back_to_back_p99_ms: percentileMs(backToBack, 99),
    namespace_cold_p50_ms: percentileMs(cold, 50),
    namespace_cold_p99_ms: percentileMs(cold, 99),
    process_p50_ms: percentileMs(processLevel, 50),
    process_p99_ms: percentileMs(processLevel, 99),
    node_namespace_p50_ms: percentileMs(nodeNamespace, 50),
    node_namespace_p99_ms: percentileMs(nodeNamespace, 99),
    limit_ms: limit,
    ratio: round3(percentileMs(namespace, 50) / limit),
    cold_ratio: round3(percentileMs(cold, 50) / limit),
    namespace_calls_per_s_8_in_flight: Math.round(perS),
  };
}
