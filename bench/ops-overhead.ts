// What metrics, tracing and API-key checks cost per agent step: the step-overhead measurement run
// bare and then with Prometheus metrics, OpenTelemetry spans exported to a local OTLP sink, and
// an API key on every request. Reports both p50s and the overhead in percent (target ≤ 10%).
import { Worker } from "node:worker_threads";
import { tracingFromEnv } from "../src/observability/tracing.ts";
import { benchDir, percentileMs, round3 } from "./stats.ts";
import { STEPS_COUNT, startStepper, WARMUP_COUNT } from "./step-overhead.ts";

export async function run(): Promise<Record<string, unknown>> {
  // The OTLP receiver runs on its own thread, as a collector runs in its own process: what its
  // parsing costs is not Kelpie's overhead.
  const sink = new Worker(
    `const { createServer } = require("node:http");
     const { parentPort } = require("node:worker_threads");
     const server = createServer((req, res) => { req.resume(); req.on("end", () => res.end("{}")); });
     server.listen(0, "127.0.0.1", () => parentPort.postMessage(server.address().port));`,
    { eval: true },
  );
  const port = await new Promise<number>((resolve) => sink.once("message", resolve));
  const dir = benchDir();
  const bareStepper = await startStepper(dir);
  const tracing = tracingFromEnv(
    { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_BSP_SCHEDULE_DELAY: "200" },
    "bench",
  );
  const fullStepper = await startStepper(
    dir,
    {
      observability: { tracing },
      security: { apiKeys: ["bench-key"], corsOrigins: [], metricsPublic: false },
    },
    { authorization: "Bearer bench-key" },
  );
  // Alternate one bare step and one full step, so drift in the machine's load hits both alike.
  const bare: number[] = [];
  const full: number[] = [];
  for (let i = 0; i < WARMUP_COUNT + STEPS_COUNT; i++) {
    const b = await bareStepper.step();
    const f = await fullStepper.step();
    if (i >= WARMUP_COUNT) {
      bare.push(b);
      full.push(f);
    }
  }
  await bareStepper.close();
  await fullStepper.close();
  await sink.terminate();
  const bareP50 = percentileMs(bare, 50);
  const fullP50 = percentileMs(full, 50);
  console.log(`${bare.length} steps bare, ${full.length} with metrics + tracing + auth, interleaved`);
  return {
    bare_p50_ms: bareP50,
    p50_ms: fullP50,
    p99_ms: percentileMs(full, 99),
    limit_ms: bareP50,
    ratio: round3(fullP50 / bareP50),
    overhead_pct: round3(((fullP50 - bareP50) / bareP50) * 100),
  };
}
