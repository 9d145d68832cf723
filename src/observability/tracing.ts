// OpenTelemetry tracing, on when OTEL_EXPORTER_OTLP_ENDPOINT is set: spans are batched and sent
// over OTLP/HTTP to <endpoint>/v1/traces. Context flows through AsyncLocalStorage, so the spans of
// one request (HTTP → actor invoke → agent step → LLM call, tool, storage commit) form one tree.
import { type Tracer, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

export const OTEL_BSP_SCHEDULE_DELAY_MS_DEFAULT = 5_000;

export interface Tracing {
  tracer: Tracer;
  shutdown(): Promise<void>;
}

export function tracingFromEnv(env: NodeJS.ProcessEnv, version: string): Tracing | null {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (endpoint === undefined || endpoint === "") return null;
  const url = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? `${endpoint.replace(/\/+$/, "")}/v1/traces`;
  const delayMs = Number(env.OTEL_BSP_SCHEDULE_DELAY ?? OTEL_BSP_SCHEDULE_DELAY_MS_DEFAULT);
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      "service.name": env.OTEL_SERVICE_NAME ?? "kelpie",
      "service.version": version,
    }),
    spanProcessors: [
      new BatchSpanProcessor(new OTLPTraceExporter({ url }), {
        scheduledDelayMillis:
          Number.isFinite(delayMs) && delayMs > 0 ? delayMs : OTEL_BSP_SCHEDULE_DELAY_MS_DEFAULT,
      }),
    ],
  });
  provider.register();
  return { tracer: trace.getTracer("kelpie", version), shutdown: () => provider.shutdown() };
}
