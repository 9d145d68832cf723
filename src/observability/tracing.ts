// OpenTelemetry tracing, on when OTEL_EXPORTER_OTLP_ENDPOINT is set: spans are batched and sent
// over OTLP/HTTP to <endpoint>/v1/traces. Context flows through AsyncLocalStorage (the OpenTelemetry
// API's context manager), so the spans of one request (HTTP → actor invoke → agent step → LLM
// call, tool, storage commit) form one tree; W3C traceparent headers join and continue traces.
// Spans are recorded by span-recorder.ts (see there why not by the SDK's Tracer).
import { context, propagation } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { rootSamplerFromEnv, SpanRecorder } from "./span-recorder.ts";

export const OTEL_BSP_SCHEDULE_DELAY_MS_DEFAULT = 5_000;

export interface Tracing {
  tracer: SpanRecorder;
  shutdown(): Promise<void>;
}

let contextInstalled = false;

/** The global context manager and propagator, installed once per process. */
function installContext(): void {
  if (contextInstalled) return;
  contextInstalled = true;
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
}

export function tracingFromEnv(env: NodeJS.ProcessEnv, version: string): Tracing | null {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (endpoint === undefined || endpoint === "") return null;
  const url = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? `${endpoint.replace(/\/+$/, "")}/v1/traces`;
  const delayMs = Number(env.OTEL_BSP_SCHEDULE_DELAY ?? OTEL_BSP_SCHEDULE_DELAY_MS_DEFAULT);
  installContext();
  const recorder = new SpanRecorder(
    new BatchSpanProcessor(new OTLPTraceExporter({ url }), {
      scheduledDelayMillis:
        Number.isFinite(delayMs) && delayMs > 0 ? delayMs : OTEL_BSP_SCHEDULE_DELAY_MS_DEFAULT,
    }),
    resourceFromAttributes({
      "service.name": env.OTEL_SERVICE_NAME ?? "kelpie",
      "service.version": version,
    }),
    rootSamplerFromEnv(env),
    version,
  );
  return { tracer: recorder, shutdown: () => recorder.shutdown() };
}
