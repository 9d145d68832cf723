// The real Telemetry: events become Prometheus metrics, spans become OpenTelemetry spans.
import { type Span, SpanStatusCode, type Tracer } from "@opentelemetry/api";
import type { KelpieMetrics } from "./metrics.ts";
import type { InvocationEvent, LlmCallEvent, Telemetry, ToolRunEvent } from "./telemetry.ts";

const MS_PER_S = 1_000;

export class LiveTelemetry implements Telemetry {
  constructor(
    readonly metrics: KelpieMetrics,
    readonly tracer: Tracer | null,
  ) {}

  invocation(e: InvocationEvent): void {
    this.metrics.invocationsTotal.inc({ operation: e.operation, status: e.status });
    this.metrics.invocationDurationSeconds.observe({ operation: e.operation }, e.durationMs / MS_PER_S);
  }

  llmCall(e: LlmCallEvent): void {
    const labels = { provider: e.provider, model: e.model };
    this.metrics.llmCallsTotal.inc({ ...labels, status: e.ok ? "ok" : (e.errorCode ?? "error") });
    this.metrics.llmCallDurationSeconds.observe(labels, e.durationMs / MS_PER_S);
    if (e.inputTokens > 0) this.metrics.llmTokensTotal.inc({ ...labels, kind: "input" }, e.inputTokens);
    if (e.outputTokens > 0) this.metrics.llmTokensTotal.inc({ ...labels, kind: "output" }, e.outputTokens);
  }

  toolRun(e: ToolRunEvent): void {
    this.metrics.toolExecutionsTotal.inc({
      tool_type: e.toolType,
      sandbox: e.sandbox,
      outcome: e.ok ? "ok" : "error",
    });
    this.metrics.toolExecutionDurationSeconds.observe(
      { tool_type: e.toolType, sandbox: e.sandbox },
      e.durationMs / MS_PER_S,
    );
  }

  span<T>(
    name: string,
    attributes: Record<string, string | number | boolean>,
    fn: () => Promise<T>,
    options?: { leaf?: boolean },
  ): Promise<T> {
    if (this.tracer === null) return fn();
    const run = async (span: Span): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        span.recordException(err as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
        throw err;
      } finally {
        span.end();
      }
    };
    if (options?.leaf === true) return run(this.tracer.startSpan(name, { attributes }));
    return this.tracer.startActiveSpan(name, { attributes }, run);
  }
}
