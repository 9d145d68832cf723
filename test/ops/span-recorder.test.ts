// Kelpie's span recorder: spans nest by context, carry what the OTLP exporter reads, follow their
// parent's sampling decision, and record failures; the SDK's processor receives only sampled ones.
import { context, propagation, ROOT_CONTEXT, SpanStatusCode, TraceFlags, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { describe, expect, it } from "vitest";
import { type RootSampler, rootSamplerFromEnv, SpanRecorder } from "../../src/observability/span-recorder.ts";

function recorder(sampler: RootSampler = () => true) {
  const exporter = new InMemorySpanExporter();
  const spans = new SpanRecorder(
    new SimpleSpanProcessor(exporter),
    resourceFromAttributes({ "service.name": "kelpie-test" }),
    sampler,
    "1.2.3",
  );
  return { exporter, spans };
}

describe("span recorder", () => {
  it("nests children under the span in their context and hands ended spans to the processor", () => {
    const { exporter, spans } = recorder();
    const root = spans.startSpan("POST /x", { "http.request.method": "POST" }, ROOT_CONTEXT);
    const child = spans.startSpan("actor.invoke", { agent_id: "agent-1" }, trace.setSpan(ROOT_CONTEXT, root));
    child.setAttribute("step", 2);
    child.end();
    child.setAttribute("late", true); // after end: ignored
    root.end();
    const [c, r] = exporter.getFinishedSpans();
    expect(r?.name).toBe("POST /x");
    expect(c?.spanContext().traceId).toBe(r?.spanContext().traceId);
    expect(c?.parentSpanContext?.spanId).toBe(r?.spanContext().spanId);
    expect(r?.parentSpanContext).toBeUndefined();
    expect(c?.attributes).toEqual({ agent_id: "agent-1", step: 2 });
    expect(r?.spanContext().traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(r?.spanContext().spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(c?.spanContext().spanId).not.toBe(r?.spanContext().spanId);
    expect(r?.resource.attributes["service.name"]).toBe("kelpie-test");
    expect(r?.instrumentationScope).toEqual({ name: "kelpie", version: "1.2.3" });
    const [s, ns] = r!.startTime;
    expect(s * 1000 + ns / 1e6).toBeGreaterThan(Date.now() - 10_000);
    expect(ns).toBeLessThan(1e9);
    const [ds, dns] = r!.duration;
    expect(ds).toBe(0);
    expect(dns).toBeGreaterThanOrEqual(0);
    expect(r?.ended).toBe(true);
  });

  it("records an exception as an event and keeps the error status", () => {
    const { exporter, spans } = recorder();
    const span = spans.startSpan("tool.run", {}, ROOT_CONTEXT);
    span.recordException(new TypeError("boom"));
    span.setStatus({ code: SpanStatusCode.ERROR, message: "boom" });
    span.end();
    span.end(); // twice: still one span
    const [finished, ...rest] = exporter.getFinishedSpans();
    expect(rest).toHaveLength(0);
    expect(finished?.status).toEqual({ code: SpanStatusCode.ERROR, message: "boom" });
    expect(finished?.events[0]?.name).toBe("exception");
    expect(finished?.events[0]?.attributes).toMatchObject({
      "exception.type": "TypeError",
      "exception.message": "boom",
    });
  });

  it("follows the parent's sampling decision, and the root sampler for new traces", () => {
    const off = recorder(rootSamplerFromEnv({ OTEL_TRACES_SAMPLER: "always_off" }));
    const root = off.spans.startSpan("GET /x", {}, ROOT_CONTEXT);
    const child = off.spans.startSpan("actor.invoke", {}, trace.setSpan(ROOT_CONTEXT, root));
    expect(root.spanContext().traceFlags).toBe(TraceFlags.NONE);
    expect(root.isRecording()).toBe(false);
    child.end();
    root.end();
    expect(off.exporter.getFinishedSpans()).toHaveLength(0);

    // A sampled caller's trace is recorded even when new traces are not, and continues its ids.
    const w3c = new W3CTraceContextPropagator();
    const incoming = w3c.extract(
      ROOT_CONTEXT,
      { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
      { get: (carrier, key) => (carrier as Record<string, string>)[key], keys: (c) => Object.keys(c) },
    );
    const joined = off.spans.startSpan("GET /y", {}, incoming);
    joined.end();
    const [exported] = off.exporter.getFinishedSpans();
    expect(exported?.spanContext().traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(exported?.parentSpanContext?.spanId).toBe("00f067aa0ba902b7");

    const none = rootSamplerFromEnv({
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0",
    });
    const all = rootSamplerFromEnv({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1" });
    const half = rootSamplerFromEnv({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.5" });
    expect(none("ffffffff000000000000000000000001")).toBe(false);
    expect(all("ffffffff000000000000000000000001")).toBe(true);
    expect(half("10000000000000000000000000000001")).toBe(true);
    expect(half("f0000000000000000000000000000001")).toBe(false);
    expect(rootSamplerFromEnv({})("00000000000000000000000000000001")).toBe(true);
  });

  it("puts its spans in W3C traceparent headers through the global propagator", async () => {
    const { tracingFromEnv } = await import("../../src/observability/tracing.ts");
    const tracing = tracingFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" }, "t");
    const span = tracing!.tracer.startSpan("GET /z", {}, ROOT_CONTEXT);
    const headers: Record<string, string> = {};
    context.with(trace.setSpan(context.active(), span), () => propagation.inject(context.active(), headers));
    expect(headers.traceparent).toBe(`00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`);
    await tracing!.shutdown();
  });
});
