// Nothing heavy runs on the event loop: while a real server process derives schemas from hostile
// JavaScript sources (120 KB each, built to make a backtracking parser quadratic), parses a large
// Python tool with python3 and embeds 500 passages with the local model, GET /health is polled
// every 20 ms.
//
// Three bounds. The server's own event-loop delay (prom-client's monitorEventLoopDelay, the
// kelpie_process_nodejs_eventloop_lag_max_seconds gauge of /metrics) must stay under the issue's
// 100 ms: it measures the server alone. The median /health answer, timed from this process, must
// come within 100 ms too, and each one within 500 ms: on a two-core machine that also runs python3,
// the model's thread and this test, the time a request waits for a core is not the server's doing,
// and 100 ms for every answer there was flaky. Before the work moved off the event loop, all three
// were seconds (12 s with these requests).
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { http, type ServerProcess, startServer, tempDataDir } from "../support/server-process.ts";

/** One /health answer, measured from the client (see the header for why not 100). */
const HEALTH_ANSWER_MS_MAX = 500;
/** The median /health answer, measured from the client: the 100 ms holds for most of them. */
const HEALTH_MEDIAN_MS_MAX = 100;
/** The server's own event-loop delay while the heavy requests run: the bound. */
const EVENT_LOOP_DELAY_MS_MAX = 100;
const POLL_INTERVAL_MS = 20;
const HOSTILE_SOURCE_CHARS = 120_000;

const pythonAvailable = (() => {
  try {
    execFileSync("python3", ["-c", "pass"], { stdio: "ignore", timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
})();

let server: ServerProcess;
const data = tempDataDir();
beforeAll(async () => {
  server = await startServer({ dataDir: data.dir, env: { KELPIE_LOG_LEVEL: "error" } });
}, 60_000);
afterAll(async () => {
  await server?.kill();
  data.remove();
});

/** The largest event-loop delay the server saw since the previous scrape, in milliseconds. */
async function eventLoopDelayMsMax(): Promise<number> {
  const res = await fetch(`${server.url}/metrics`);
  const text = await res.text();
  const line = text.split("\n").find((l) => l.startsWith("kelpie_process_nodejs_eventloop_lag_max_seconds"));
  expect(line, "the server exports its event-loop delay").toBeDefined();
  return Number(line!.split(" ")[1]) * 1000;
}

describe("the event loop under heavy requests", () => {
  it("keeps the event loop within 100 ms, and /health within 500 ms, while hostile sources, Python and embeddings are processed", async () => {
    const archive = await http(server.url, "POST", "/v1/archives/", { name: "load" });
    expect(archive.status, JSON.stringify(archive.body)).toBe(200);
    await eventLoopDelayMsMax(); // resets the server's histogram: startup does not count

    const latenciesMs: number[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const started = performance.now();
        const res = await fetch(`${server.url}/health`);
        await res.text();
        latenciesMs.push(performance.now() - started);
        await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
      }
    })();

    const hostileDoc = "/**".repeat(HOSTILE_SOURCE_CHARS / 3);
    const hostileParams = "function a(".repeat(Math.ceil(HOSTILE_SOURCE_CHARS / 11));
    const hostileTemplate = "`${".repeat(HOSTILE_SOURCE_CHARS / 3);
    const pythonSource = Array.from(
      { length: 8_000 },
      (_, i) =>
        `def tool_${i}(a: int, b: str = "x") -> int:\n    """Tool ${i}.\n\n    Args:\n        a: a number\n    """\n    return a\n`,
    ).join("\n");
    const passages = Array.from({ length: 500 }, (_, i) => ({
      text: `Passage ${i}: the quick brown fox ${i % 7} jumps over the lazy dog near river ${i % 13}.`,
    }));

    const heavy = await Promise.all([
      http(server.url, "POST", "/v1/tools/", { source_code: hostileDoc, source_type: "javascript" }),
      http(server.url, "POST", "/v1/tools/", { source_code: hostileParams, source_type: "typescript" }),
      http(server.url, "POST", "/v1/tools/", { source_code: hostileTemplate, source_type: "javascript" }),
      http(server.url, "POST", "/v1/tools/run", {
        source_code: hostileDoc,
        source_type: "javascript",
        args: {},
      }),
      pythonAvailable
        ? http(server.url, "POST", "/v1/tools/", { source_code: pythonSource, source_type: "python" })
        : Promise.resolve({ status: 200, body: "python3 absent" }),
      http(server.url, "POST", `/v1/archives/${archive.body.id}/passages/batch`, { passages }),
    ]);
    polling = false;
    await poller;
    const loopDelayMsMax = await eventLoopDelayMsMax();
    console.log(
      `polls ${latenciesMs.length}, median ${[...latenciesMs].sort((a, b) => a - b)[latenciesMs.length >> 1]!.toFixed(0)} ms, slowest ${Math.max(...latenciesMs).toFixed(0)} ms, loop delay max ${loopDelayMsMax.toFixed(0)} ms`,
    );

    // The hostile sources are refused as having no usable function, quickly and with a 4xx.
    for (const res of heavy.slice(0, 4)) expect(res.status, JSON.stringify(res.body)).toBe(422);
    expect(heavy[4]!.status, JSON.stringify(heavy[4]!.body)).toBe(200);
    expect(heavy[5]!.status, JSON.stringify(heavy[5]!.body).slice(0, 500)).toBe(200);
    expect(heavy[5]!.body).toHaveLength(passages.length);

    const slowest = Math.max(...latenciesMs);
    const median = [...latenciesMs].sort((a, b) => a - b)[latenciesMs.length >> 1]!;
    expect(latenciesMs.length, "the poller ran throughout").toBeGreaterThan(5);
    expect(loopDelayMsMax, `event-loop delay max ${loopDelayMsMax.toFixed(0)} ms`).toBeLessThan(
      EVENT_LOOP_DELAY_MS_MAX,
    );
    expect(slowest, `slowest /health of ${latenciesMs.length}: ${slowest.toFixed(0)} ms`).toBeLessThan(
      HEALTH_ANSWER_MS_MAX,
    );
    expect(median, `median /health: ${median.toFixed(0)} ms`).toBeLessThan(HEALTH_MEDIAN_MS_MAX);
  }, 180_000);
});
