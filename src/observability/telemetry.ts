// The seam between the code that does the work and the code that measures it. Runtime, agent
// loop and tools report what happened here; the observability module turns it into Prometheus
// metrics and OpenTelemetry spans. The default does nothing, so tests and the simulator pay nothing.

export interface LlmCallEvent {
  provider: string;
  model: string;
  durationMs: number;
  inputTokens: number;
  outputTokens: number;
  ok: boolean;
  errorCode?: string;
}

export interface ToolRunEvent {
  tool: string;
  toolType: string;
  /** isolate | namespace | process | builtin | mcp | ... */
  sandbox: string;
  durationMs: number;
  ok: boolean;
}

export interface InvocationEvent {
  operation: string;
  status: "ok" | "error";
  durationMs: number;
}

/** The span a `Telemetry.span` callback runs in: it can add attributes learned along the way. */
export interface SpanHandle {
  setAttribute(key: string, value: string | number | boolean): void;
}

export const NO_SPAN: SpanHandle = { setAttribute: () => {} };

export interface Telemetry {
  invocation(event: InvocationEvent): void;
  llmCall(event: LlmCallEvent): void;
  toolRun(event: ToolRunEvent): void;
  /**
   * Runs `fn` inside a span named `name` (a child of the current span, if any). A `leaf` span
   * opens no context of its own (nothing inside it makes spans), which is cheaper.
   */
  span<T>(
    name: string,
    attributes: Record<string, string | number | boolean>,
    fn: (span: SpanHandle) => Promise<T>,
    options?: { leaf?: boolean },
  ): Promise<T>;
}

export const NO_TELEMETRY: Telemetry = {
  invocation: () => {},
  llmCall: () => {},
  toolRun: () => {},
  span: (_name, _attributes, fn) => fn(NO_SPAN),
};
