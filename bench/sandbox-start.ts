// Start + run of a trivial tool at each sandbox level (isolate, wasm, namespace, vm where runsc works;
// process when bubblewrap is compared against a bare python3 spawn), and tool calls per second with
// 8 in flight. The namespace level is timed for Python tools and, pooled, for a JavaScript tool
// under node.
//
// Python runs and isolates take a pre-started sandbox from the warm pool, which refills in the
// background as the run starts (so the refill competes with the run for CPU, as it does in the
// server). The pooled figures space runs by a request gap, the way a real stream of tool calls
// arrives; the back-to-back figures leave no gap (the pool cannot keep up: most runs wait on a
// sandbox still starting); the cold figures disable the pool, so every run starts its own sandbox.
// The vm level (gVisor) is timed like wasm: fewer runs, spaced so the pool refills (a sandbox boots
// in ~0.5 s).
import { spawn } from "node:child_process";
import ivm from "isolated-vm";
import { runIsolate } from "../src/tools/sandbox/isolate.ts";
import type { SandboxRequest } from "../src/tools/sandbox/limits.ts";
import {
  closeSandboxPool,
  type ProcessLevel,
  runSandboxed,
  type SandboxRunOptions,
  sandboxProblem,
} from "../src/tools/sandbox/namespace.ts";
import { closeWasmPool, runWasm } from "../src/tools/sandbox/wasm.ts";
import { nowMs, percentileMs, round3 } from "./stats.ts";

const RUNS_COUNT = 100;
const IN_FLIGHT = 8;
/** Time between one tool run's end and the next one's start: an agent's tool calls are at least a
 * model round trip apart, and 50 ms is shorter than any real one. Not part of the timed run. */
const REQUEST_GAP_MS = 50;
const POOL_DISABLED: SandboxRunOptions = { poolSize: 0 };
/** Wasm runs are fewer and further apart: booting an interpreter takes a few hundred ms of CPU, and
 * a pooled run should find the next one booted, as tool calls a model round trip apart do. */
const WASM_RUNS_COUNT = 20;
const WASM_GAP_MS = 1_500;
/** vm runs: a gVisor sandbox boots in ~0.5 s of CPU, so pooled runs are spaced for the refill. */
const VM_RUNS_COUNT = 20;
const VM_GAP_MS = 1_000;

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

async function time(fn: () => Promise<unknown>, gapMs = 0, count = RUNS_COUNT): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = nowMs();
    await fn();
    samples.push(nowMs() - t0);
    if (gapMs > 0) await sleep(gapMs);
  }
  return samples;
}

/** Times runs of a tool at a level, from an empty pool warmed by one untimed run. */
async function timeSandboxed(
  level: ProcessLevel,
  gapMs: number,
  options: SandboxRunOptions = {},
  request: SandboxRequest = py,
  count = RUNS_COUNT,
): Promise<number[]> {
  await closeSandboxPool();
  const warm = await runSandboxed(request, level, options);
  if (warm.value !== "3") throw new Error(`${request.language} ${level} sandbox failed: ${warm.value}`);
  await sleep(REQUEST_GAP_MS);
  return time(
    async () => {
      const result = await runSandboxed(request, level, options);
      if (result.value !== "3")
        throw new Error(`${request.language} ${level} sandbox failed: ${result.value}`);
    },
    gapMs,
    count,
  );
}

/** Times vm runs, pooled then cold; null (and why) where this machine cannot run the vm level. */
async function timeVm(): Promise<{ pooled: number[]; cold: number[] } | { problem: string }> {
  const problem = sandboxProblem("python", "vm");
  if (problem !== null) return { problem };
  const pooled = await timeSandboxed("vm", VM_GAP_MS, {}, py, VM_RUNS_COUNT);
  const cold = await timeSandboxed("vm", 0, POOL_DISABLED, py, VM_RUNS_COUNT);
  await closeSandboxPool();
  return { pooled, cold };
}

/** Times wasm runs: pooled (a gap long enough for the pool to refill), then cold (no pool). */
async function timeWasm(): Promise<{ pooled: number[]; cold: number[] }> {
  const check = async (poolSize?: number) => {
    const result = await runWasm(py, poolSize === undefined ? {} : { poolSize });
    if (result.value !== "3") throw new Error(`wasm sandbox failed: ${result.value}`);
  };
  await check(); // Takes the snapshot and starts the pool.
  await sleep(WASM_GAP_MS);
  const pooled = await time(() => check(), WASM_GAP_MS, WASM_RUNS_COUNT);
  await closeWasmPool();
  const cold = await time(() => check(0), 0, WASM_RUNS_COUNT);
  return { pooled, cold };
}

/** The isolate level's primitive: a new isolate and context, one evaluation, disposed. */
async function bareIsolate(): Promise<void> {
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  const context = await isolate.createContext();
  await context.eval("1 + 2");
  isolate.dispose();
}

function barePython(): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn("/usr/bin/python3", ["-I", "-c", "print(1+2)"], { stdio: "ignore" });
    child.on("close", () => resolve());
  });
}

export async function run(): Promise<Record<string, unknown>> {
  // Pooled isolate runs are spaced like the pooled Python runs (a model round trip apart), so the
  // pool has refilled; back to back, every run also pays for making the next isolates.
  await runIsolate(js); // Starts the pool.
  const isolate = await time(() => runIsolate(js), REQUEST_GAP_MS);
  const isolateBackToBack = await time(() => runIsolate(js));
  const isolateBare = await time(bareIsolate);
  const namespace = await timeSandboxed("namespace", REQUEST_GAP_MS);
  const backToBack = await timeSandboxed("namespace", 0);
  const cold = await timeSandboxed("namespace", 0, POOL_DISABLED);
  const processLevel = await timeSandboxed("process", REQUEST_GAP_MS);
  const nodeNamespace = await timeSandboxed("namespace", REQUEST_GAP_MS, {}, js);
  const wasm = await timeWasm();
  const vm = await timeVm();
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
    isolate_back_to_back_p50_ms: percentileMs(isolateBackToBack, 50),
    isolate_limit_ms: percentileMs(isolateBare, 50),
    isolate_ratio: round3(percentileMs(isolate, 50) / percentileMs(isolateBare, 50)),
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
    wasm_p50_ms: percentileMs(wasm.pooled, 50),
    wasm_p99_ms: percentileMs(wasm.pooled, 99),
    wasm_cold_p50_ms: percentileMs(wasm.cold, 50),
    wasm_ratio: round3(percentileMs(wasm.pooled, 50) / limit),
    wasm_cold_ratio: round3(percentileMs(wasm.cold, 50) / limit),
    ...("problem" in vm
      ? { vm_p50_ms: null, vm_unavailable: vm.problem }
      : {
          vm_p50_ms: percentileMs(vm.pooled, 50),
          vm_p99_ms: percentileMs(vm.pooled, 99),
          vm_cold_p50_ms: percentileMs(vm.cold, 50),
          vm_ratio: round3(percentileMs(vm.pooled, 50) / limit),
          vm_cold_ratio: round3(percentileMs(vm.cold, 50) / limit),
        }),
    limit_ms: limit,
    ratio: round3(percentileMs(namespace, 50) / limit),
    cold_ratio: round3(percentileMs(cold, 50) / limit),
    namespace_calls_per_s_8_in_flight: Math.round(perS),
  };
}
