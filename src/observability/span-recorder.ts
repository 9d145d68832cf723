// Kelpie's spans, recorded cheaply. The OpenTelemetry SDK's Tracer is general (pluggable samplers,
// span limits, attribute sanitizing, per-span validation) and, measured inside a running step,
// cost about 30 µs per span: six spans per step made tracing alone a 6% overhead. Kelpie makes a
// fixed set of spans with attributes it controls, so this records them as plain objects that are
// also the SDK's ReadableSpan: the SDK's BatchSpanProcessor batches them and the official OTLP
// exporter encodes and sends them. Context still flows through the OpenTelemetry API (its
// AsyncLocalStorage context manager and W3C trace-context propagator), so these spans join and
// continue traces like any other.
import { randomFillSync } from "node:crypto";
import {
  type Attributes,
  type AttributeValue,
  type Context,
  type HrTime,
  type Span,
  type SpanContext,
  SpanKind,
  type SpanStatus,
  SpanStatusCode,
  TraceFlags,
  trace,
} from "@opentelemetry/api";
import type { Resource } from "@opentelemetry/resources";
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace-base";

const ID_POOL_BYTES = 4_096;
const SPAN_ID_BYTES = 8;
const TRACE_ID_BYTES = 16;
const MS_PER_S = 1_000;
const NS_PER_MS = 1_000_000;
const NS_PER_S = 1_000_000_000;
const INSTRUMENTATION_SCOPE_NAME = "kelpie";

/** Random bytes drawn a pool at a time (one syscall per 4 KiB of ids), as hex ids. */
class IdSource {
  private readonly pool = Buffer.alloc(ID_POOL_BYTES);
  private offset = ID_POOL_BYTES;

  private hex(bytes: number): string {
    if (this.offset + bytes > ID_POOL_BYTES) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    const start = this.offset;
    this.offset += bytes;
    // An all-zero id is invalid in W3C trace context.
    for (let i = start; i < start + bytes; i++)
      if (this.pool[i] !== 0) return this.pool.toString("hex", start, start + bytes);
    this.pool[start + bytes - 1] = 1;
    return this.pool.toString("hex", start, start + bytes);
  }

  traceId(): string {
    return this.hex(TRACE_ID_BYTES);
  }

  spanId(): string {
    return this.hex(SPAN_ID_BYTES);
  }
}

/** Whether a new root span is sampled (children follow their parent). */
export type RootSampler = (traceId: string) => boolean;

/**
 * The sampler the OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG variables name. Children always
 * follow their parent's decision (the parent-based samplers; the plain ones are read the same way,
 * so a trace is never cut in half). Unknown names fall back to the default, always on.
 */
export function rootSamplerFromEnv(env: NodeJS.ProcessEnv): RootSampler {
  const name = (env.OTEL_TRACES_SAMPLER ?? "parentbased_always_on").replace(/^parentbased_/, "");
  if (name === "always_off") return () => false;
  if (name === "traceidratio") {
    const ratio = Number(env.OTEL_TRACES_SAMPLER_ARG ?? "1");
    const bound = Number.isFinite(ratio) ? Math.max(0, Math.min(1, ratio)) : 1;
    // The trace id's first 32 bits, as a fraction: the same trace gets the same answer anywhere.
    return (traceId) => Number.parseInt(traceId.slice(0, 8), 16) / 2 ** 32 < bound;
  }
  return () => true;
}

/** Milliseconds (since the epoch, or a duration) as OpenTelemetry's [seconds, nanoseconds]. */
function hrTimeOf(ms: number): HrTime {
  const seconds = Math.floor(ms / MS_PER_S);
  const nanos = Math.round((ms - seconds * MS_PER_S) * NS_PER_MS);
  // Rounding can reach a whole second.
  return nanos >= NS_PER_S ? [seconds + 1, nanos - NS_PER_S] : [seconds, nanos];
}

const UNSET_STATUS: SpanStatus = { code: SpanStatusCode.UNSET };

/** One span: an OpenTelemetry API Span while it runs, a ReadableSpan once it has ended. */
export class RecordedSpan implements Span, ReadableSpan {
  readonly attributes: Attributes;
  readonly links = [];
  readonly events: ReadableSpan["events"] = [];
  readonly droppedAttributesCount = 0;
  readonly droppedEventsCount = 0;
  readonly droppedLinksCount = 0;
  status: SpanStatus = UNSET_STATUS;
  ended = false;
  private readonly startMs: number;
  private endMs = 0;

  constructor(
    private readonly recorder: SpanRecorder,
    public name: string,
    readonly kind: SpanKind,
    private readonly context: SpanContext,
    readonly parentSpanContext: SpanContext | undefined,
    attributes: Attributes,
  ) {
    // A copy: callers may pass one attribute object to several spans.
    this.attributes = { ...attributes };
    this.startMs = recorder.nowMs();
  }

  get resource(): Resource {
    return this.recorder.resource;
  }

  get instrumentationScope(): ReadableSpan["instrumentationScope"] {
    return this.recorder.scope;
  }

  get startTime(): HrTime {
    return hrTimeOf(this.startMs);
  }

  get endTime(): HrTime {
    return hrTimeOf(this.endMs);
  }

  get duration(): HrTime {
    return hrTimeOf(this.endMs - this.startMs);
  }

  spanContext(): SpanContext {
    return this.context;
  }

  isRecording(): boolean {
    return !this.ended && (this.context.traceFlags & TraceFlags.SAMPLED) !== 0;
  }

  setAttribute(key: string, value: AttributeValue): this {
    if (this.isRecording()) this.attributes[key] = value;
    return this;
  }

  setAttributes(attributes: Attributes): this {
    for (const key of Object.keys(attributes)) {
      const value = attributes[key];
      if (value !== undefined) this.setAttribute(key, value);
    }
    return this;
  }

  setStatus(status: SpanStatus): this {
    if (this.isRecording()) this.status = status;
    return this;
  }

  updateName(name: string): this {
    if (this.isRecording()) this.name = name;
    return this;
  }

  addEvent(name: string, attributesOrTime?: unknown): this {
    if (!this.isRecording()) return this;
    const attributes =
      attributesOrTime !== null && typeof attributesOrTime === "object" && !Array.isArray(attributesOrTime)
        ? (attributesOrTime as Attributes)
        : {};
    this.events.push({ name, attributes, time: hrTimeOf(this.recorder.nowMs()), droppedAttributesCount: 0 });
    return this;
  }

  addLink(): this {
    return this;
  }

  addLinks(): this {
    return this;
  }

  recordException(exception: unknown): void {
    const err = exception as { name?: unknown; message?: unknown; stack?: unknown };
    this.addEvent("exception", {
      "exception.type": String(err?.name ?? "Error"),
      "exception.message": String(err?.message ?? exception),
      ...(typeof err?.stack === "string" ? { "exception.stacktrace": err.stack } : {}),
    });
  }

  end(): void {
    if (this.ended) return;
    this.endMs = this.recorder.nowMs();
    const recorded = (this.context.traceFlags & TraceFlags.SAMPLED) !== 0;
    this.ended = true;
    if (recorded) this.recorder.processor.onEnd(this);
  }
}

/** Starts spans as children of a context's span (or as roots), and hands ended ones on. */
export class SpanRecorder {
  readonly scope: ReadableSpan["instrumentationScope"];
  private readonly ids = new IdSource();
  private readonly timeOriginMs = performance.timeOrigin;

  constructor(
    readonly processor: SpanProcessor,
    readonly resource: Resource,
    private readonly sampleRoot: RootSampler,
    version: string,
  ) {
    this.scope = { name: INSTRUMENTATION_SCOPE_NAME, version };
  }

  nowMs(): number {
    return this.timeOriginMs + performance.now();
  }

  startSpan(
    name: string,
    attributes: Attributes,
    parent: Context,
    kind: SpanKind = SpanKind.INTERNAL,
  ): RecordedSpan {
    const found = trace.getSpanContext(parent);
    const parentContext = found !== undefined && trace.isSpanContextValid(found) ? found : undefined;
    const traceId = parentContext?.traceId ?? this.ids.traceId();
    const sampled =
      parentContext === undefined
        ? this.sampleRoot(traceId)
        : (parentContext.traceFlags & TraceFlags.SAMPLED) !== 0;
    const context: SpanContext = {
      traceId,
      spanId: this.ids.spanId(),
      traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
      ...(parentContext?.traceState ? { traceState: parentContext.traceState } : {}),
    };
    return new RecordedSpan(this, name, kind, context, parentContext, attributes);
  }

  forceFlush(): Promise<void> {
    return this.processor.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.processor.shutdown();
  }
}
