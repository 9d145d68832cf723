// The real Telemetry: events become Prometheus metrics, spans become OpenTelemetry spans.
// This runs on every step: each metric series is found once per label set and reused, and a span
// wraps the callback's promise instead of adding an async frame around it.
import { context, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Labels } from "./hot-metrics.ts";
import type { KelpieMetrics } from "./metrics.ts";
import type { RecordedSpan, SpanRecorder } from "./span-recorder.ts";
import {
  type InvocationEvent,
  type LlmCallEvent,
  NO_SPAN,
  type SpanHandle,
  type Telemetry,
  type ToolRunEvent,
} from "./telemetry.ts";

const MS_PER_S = 1_000;
function failSpan(span: RecordedSpan, err: unknown): void {
  span.recordException(err as Error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
  span.end();
}

export class LiveTelemetry implements Telemetry {
  constructor(
    readonly metrics: KelpieMetrics,
    readonly tracer: SpanRecorder | null,
  ) {}

  invocation(e: InvocationEvent): void {
    const m = this.metrics;
    const op = e.operation;
    m.invocationsTotal.inc(
      m.invocationsTotal.cell(`${op}\u0000${e.status}`, () => ({ operation: op, status: e.status })),
    );
    m.invocationDurationSeconds.observe(
      m.invocationDurationSeconds.cell(op, () => ({ operation: op })),
      e.durationMs / MS_PER_S,
    );
  }

  llmCall(e: LlmCallEvent): void {
    const m = this.metrics;
    const key = `${e.provider}\u0000${e.model}`;
    const status = e.ok ? "ok" : (e.errorCode ?? "error");
    const labels = (extra: Labels) => () => ({ provider: e.provider, model: e.model, ...extra });
    m.llmCallsTotal.inc(m.llmCallsTotal.cell(`${key}\u0000${status}`, labels({ status })));
    m.llmCallDurationSeconds.observe(m.llmCallDurationSeconds.cell(key, labels({})), e.durationMs / MS_PER_S);
    if (e.inputTokens > 0)
      m.llmTokensTotal.inc(
        m.llmTokensTotal.cell(`${key}\u0000input`, labels({ kind: "input" })),
        e.inputTokens,
      );
    if (e.outputTokens > 0)
      m.llmTokensTotal.inc(
        m.llmTokensTotal.cell(`${key}\u0000output`, labels({ kind: "output" })),
        e.outputTokens,
      );
  }

  toolRun(e: ToolRunEvent): void {
    const m = this.metrics;
    const key = `${e.toolType}\u0000${e.sandbox}`;
    const outcome = e.ok ? "ok" : "error";
    m.toolExecutionsTotal.inc(
      m.toolExecutionsTotal.cell(`${key}\u0000${outcome}`, () => ({
        tool_type: e.toolType,
        sandbox: e.sandbox,
        outcome,
      })),
    );
    m.toolExecutionDurationSeconds.observe(
      m.toolExecutionDurationSeconds.cell(key, () => ({ tool_type: e.toolType, sandbox: e.sandbox })),
      e.durationMs / MS_PER_S,
    );
  }

  span<T>(
    name: string,
    attributes: Record<string, string | number | boolean>,
    fn: (span: SpanHandle) => Promise<T>,
    options?: { leaf?: boolean },
  ): Promise<T> {
    const tracer = this.tracer;
    if (tracer === null) return fn(NO_SPAN);
    const active = context.active();
    const span = tracer.startSpan(name, attributes, active);
    let result: Promise<T>;
    try {
      // A leaf opens no context of its own (nothing inside makes spans), which is cheaper.
      result =
        options?.leaf === true ? fn(span) : context.with(trace.setSpan(active, span), fn, undefined, span);
    } catch (err) {
      failSpan(span, err);
      throw err;
    }
    return result.then(
      (value) => {
        span.end();
        return value;
      },
      (err: unknown) => {
        failSpan(span, err);
        throw err;
      },
    );
  }
}
