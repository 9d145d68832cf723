// Start + run of a trivial tool at each sandbox level (isolate, namespace; process when bubblewrap
// is compared against a bare python3 spawn), and tool calls per second with 8 in flight.
import { spawn } from "node:child_process";
import { runIsolate } from "../src/tools/sandbox/isolate.ts";
import type { SandboxRequest } from "../src/tools/sandbox/limits.ts";
import { runPython } from "../src/tools/sandbox/namespace.ts";
import { nowMs, percentileMs, round3 } from "./stats.ts";

const RUNS_COUNT = 100;
const IN_FLIGHT = 8;

const py: SandboxRequest = {
  language: "python",
  source: "def add(a: int, b: int) -> int:\n    return a + b\n",
  functionName: "add",
  args: { a: 1, b: 2 },
  parameterNames: ["a", "b"],
  env: {},
};
const js: SandboxRequest = { ...py, language: "javascript", source: "function add(a, b) { return a + b; }" };

async function time(fn: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < RUNS_COUNT; i++) {
    const t0 = nowMs();
    await fn();
    samples.push(nowMs() - t0);
  }
  return samples;
}

function barePython(): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn("/usr/bin/python3", ["-I", "-c", "print(1+2)"], { stdio: "ignore" });
    child.on("close", () => resolve());
  });
}

export async function run(): Promise<Record<string, unknown>> {
  const isolate = await time(() => runIsolate(js));
  const namespace = await time(() => runPython(py, "namespace"));
  const processLevel = await time(() => runPython(py, "process"));
  const bare = await time(barePython);
  let done = 0;
  const t0 = nowMs();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (done < RUNS_COUNT) {
        done++;
        await runPython(py, "namespace");
      }
    }),
  );
  const perS = RUNS_COUNT / ((nowMs() - t0) / 1000);
  const limit = percentileMs(bare, 50);
  console.log(`${RUNS_COUNT} runs per level; bare python3 spawn is the primitive`);
  return {
    isolate_p50_ms: percentileMs(isolate, 50),
    isolate_p99_ms: percentileMs(isolate, 99),
    namespace_p50_ms: percentileMs(namespace, 50),
    namespace_p99_ms: percentileMs(namespace, 99),
    process_p50_ms: percentileMs(processLevel, 50),
    process_p99_ms: percentileMs(processLevel, 99),
    limit_ms: limit,
    ratio: round3(percentileMs(namespace, 50) / limit),
    namespace_calls_per_s_8_in_flight: Math.round(perS),
  };
}
