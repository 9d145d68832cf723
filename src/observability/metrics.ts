// Prometheus metrics (prom-client), with the names the Kelpie seed promised. Runtime and storage
// figures are read when scraped; events (invocations, LLM calls, tools, HTTP) are counted as they
// happen, through the Telemetry seam.
import client from "prom-client";

export type MemoryTier = "core" | "working" | "archival";
export type TierBytesProvider = () => Promise<number>;

const DURATION_BUCKETS_S = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

export class KelpieMetrics {
  readonly registry = new client.Registry();
  readonly invocationsTotal: client.Counter<"operation" | "status">;
  readonly invocationDurationSeconds: client.Histogram<"operation">;
  readonly httpRequestDurationSeconds: client.Histogram<"method" | "route" | "status_code">;
  readonly llmCallsTotal: client.Counter<"provider" | "model" | "status">;
  readonly llmTokensTotal: client.Counter<"provider" | "model" | "kind">;
  readonly llmCallDurationSeconds: client.Histogram<"provider" | "model">;
  readonly toolExecutionsTotal: client.Counter<"tool_type" | "sandbox" | "outcome">;
  readonly toolExecutionDurationSeconds: client.Histogram<"tool_type" | "sandbox">;
  readonly storageCommitDurationSeconds: client.Histogram<"engine">;
  readonly storageCommitsTotal: client.Counter<"engine" | "outcome">;
  readonly fencingRejectionsTotal: client.Counter;
  readonly rateLimitedTotal: client.Counter;
  private readonly tiers = new Map<MemoryTier, TierBytesProvider>();

  constructor(
    runtimeStats: () => {
      activeCount: number;
      mailboxDepthTotal: number;
      activationsTotal: number;
      deactivationsTotal: number;
      mailboxFullTotal: number;
    },
  ) {
    const registry = this.registry;
    client.collectDefaultMetrics({ register: registry, prefix: "kelpie_process_" });
    new client.Gauge({
      name: "kelpie_agents_active_count",
      help: "Agents with a live activation on this node.",
      registers: [registry],
      collect() {
        this.set(runtimeStats().activeCount);
      },
    });
    new client.Gauge({
      name: "kelpie_mailbox_depth",
      help: "Operations queued or running across all agents' mailboxes.",
      registers: [registry],
      collect() {
        this.set(runtimeStats().mailboxDepthTotal);
      },
    });
    new client.Gauge({
      name: "kelpie_activations_total",
      help: "Activations since start.",
      registers: [registry],
      collect() {
        this.set(runtimeStats().activationsTotal);
      },
    });
    new client.Gauge({
      name: "kelpie_deactivations_total",
      help: "Deactivations since start.",
      registers: [registry],
      collect() {
        this.set(runtimeStats().deactivationsTotal);
      },
    });
    new client.Gauge({
      name: "kelpie_mailbox_full_total",
      help: "Operations refused because an agent's mailbox was full.",
      registers: [registry],
      collect() {
        this.set(runtimeStats().mailboxFullTotal);
      },
    });
    const tiers = this.tiers;
    new client.Gauge({
      name: "kelpie_memory_usage_bytes",
      help: "Memory held by agents, by tier (core blocks, working memory, archival passages).",
      labelNames: ["tier"],
      registers: [registry],
      async collect() {
        for (const tier of ["core", "working", "archival"] as const) {
          const provider = tiers.get(tier);
          this.set({ tier }, provider === undefined ? 0 : await provider());
        }
      },
    });
    this.invocationsTotal = new client.Counter({
      name: "kelpie_invocations_total",
      help: "Operations run in agents' mailboxes.",
      labelNames: ["operation", "status"],
      registers: [registry],
    });
    this.invocationDurationSeconds = new client.Histogram({
      name: "kelpie_invocation_duration_seconds",
      help: "Time an operation ran in an agent's mailbox.",
      labelNames: ["operation"],
      buckets: DURATION_BUCKETS_S,
      registers: [registry],
    });
    this.httpRequestDurationSeconds = new client.Histogram({
      name: "kelpie_http_request_duration_seconds",
      help: "HTTP requests by route and status.",
      labelNames: ["method", "route", "status_code"],
      buckets: DURATION_BUCKETS_S,
      registers: [registry],
    });
    this.llmCallsTotal = new client.Counter({
      name: "kelpie_llm_calls_total",
      help: "Model calls by provider, model and outcome.",
      labelNames: ["provider", "model", "status"],
      registers: [registry],
    });
    this.llmTokensTotal = new client.Counter({
      name: "kelpie_llm_tokens_total",
      help: "Tokens by provider, model and kind (input, output).",
      labelNames: ["provider", "model", "kind"],
      registers: [registry],
    });
    this.llmCallDurationSeconds = new client.Histogram({
      name: "kelpie_llm_call_duration_seconds",
      help: "Model call time.",
      labelNames: ["provider", "model"],
      buckets: DURATION_BUCKETS_S,
      registers: [registry],
    });
    this.toolExecutionsTotal = new client.Counter({
      name: "kelpie_tool_executions_total",
      help: "Tool executions by type, sandbox level and outcome.",
      labelNames: ["tool_type", "sandbox", "outcome"],
      registers: [registry],
    });
    this.toolExecutionDurationSeconds = new client.Histogram({
      name: "kelpie_tool_execution_duration_seconds",
      help: "Tool execution time.",
      labelNames: ["tool_type", "sandbox"],
      buckets: DURATION_BUCKETS_S,
      registers: [registry],
    });
    this.storageCommitDurationSeconds = new client.Histogram({
      name: "kelpie_storage_commit_duration_seconds",
      help: "Storage commit time (until durable).",
      labelNames: ["engine"],
      buckets: DURATION_BUCKETS_S,
      registers: [registry],
    });
    this.storageCommitsTotal = new client.Counter({
      name: "kelpie_storage_commits_total",
      help: "Storage commits by outcome.",
      labelNames: ["engine", "outcome"],
      registers: [registry],
    });
    this.fencingRejectionsTotal = new client.Counter({
      name: "kelpie_fencing_rejections_total",
      help: "Commits rejected because a newer fencing token exists.",
      registers: [registry],
    });
    this.rateLimitedTotal = new client.Counter({
      name: "kelpie_rate_limited_total",
      help: "Requests refused by the rate limiter.",
      registers: [registry],
    });
  }

  /** Registers where a memory tier's size comes from (core is registered at start). */
  registerTier(tier: MemoryTier, provider: TierBytesProvider): void {
    this.tiers.set(tier, provider);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
