// The hot-path counters and histograms must render exactly as prom-client's own would: same
// series, same label order, same cumulative buckets, same sums and counts.
import client from "prom-client";
import { describe, expect, it } from "vitest";
import { HotCounter, HotHistogram } from "../../src/observability/hot-metrics.ts";

const BUCKETS = [0.001, 0.01, 0.1, 1];
const OBSERVATIONS: [string, string, number][] = [
  ["POST", "200", 0.0004],
  ["POST", "200", 0.001],
  ["POST", "200", 0.05],
  ["GET", "404", 3],
  ["POST", "200", 0.7],
  ["GET", "404", 0.001],
];

describe("hot-path metrics", () => {
  it("render the same text as prom-client's Counter and Histogram", async () => {
    const reference = new client.Registry();
    const refHistogram = new client.Histogram({
      name: "kelpie_x_seconds",
      help: "x",
      labelNames: ["method", "status_code"],
      buckets: BUCKETS,
      registers: [reference],
    });
    const refCounter = new client.Counter({
      name: "kelpie_x_total",
      help: "y",
      labelNames: ["method", "status_code"],
      registers: [reference],
    });
    const hot = new client.Registry();
    const histogram = new HotHistogram("kelpie_x_seconds", "x", ["method", "status_code"], BUCKETS, hot);
    const counter = new HotCounter("kelpie_x_total", "y", ["method", "status_code"], hot);
    for (const [method, status, seconds] of OBSERVATIONS) {
      refHistogram.observe({ method, status_code: status }, seconds);
      refCounter.inc({ method, status_code: status }, 2);
      // Labels given in another order still print in the declared order.
      const labels = () => ({ status_code: status, method });
      histogram.observe(histogram.cell(`${method} ${status}`, labels), seconds);
      counter.inc(counter.cell(`${method} ${status}`, labels), 2);
    }
    const text = await hot.metrics();
    expect(text).toBe(await reference.metrics());
    expect(text).toContain('kelpie_x_seconds_bucket{le="0.001",method="POST",status_code="200"} 2');
    expect(text).toContain('kelpie_x_seconds_count{method="GET",status_code="404"} 2');
  });

  it("refuses a label set that is not the metric's, a negative increment and a non-number", () => {
    const registry = new client.Registry();
    const counter = new HotCounter("kelpie_y_total", "y", ["a"], registry);
    expect(() => counter.cell("k", () => ({ b: "1" }))).toThrow(/labels of kelpie_y_total/);
    const cell = counter.cell("ok", () => ({ a: "1" }));
    expect(() => counter.inc(cell, -1)).toThrow(/can only grow/);
    const histogram = new HotHistogram("kelpie_y_seconds", "y", [], [1], registry);
    expect(() =>
      histogram.observe(
        histogram.cell("", () => ({})),
        Number.NaN,
      ),
    ).toThrow(/not a number/);
  });
});
