// Prometheus metrics (prom-client), with the names the Kelpie seed promised. Runtime and storage
// figures are read when scraped; events (invocations, LLM calls, tools, HTTP) are counted as they
// happen, through the Telemetry seam.
import client from "prom-client";
import { HotCounter, HotHistogram } from "./hot-metrics.ts";

export type MemoryTier = "core" | "working" | "archival";
export type TierBytesProvider = () => Promise<number>;

const DURATION_BUCKETS_S = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

export class KelpieMetrics {
  readonly registry = new client.Registry();
  // Observed on every step: the hot-path kind (see hot-metrics.ts).
  readonly invocationsTotal: HotCounter;
  readonly invocationDurationSeconds: HotHistogram;
  readonly httpRequestDurationSeconds: HotHistogram;
  readonly llmCallsTotal: HotCounter;
  readonly llmTokensTotal: HotCounter;
  readonly llmCallDurationSeconds: HotHistogram;
  readonly toolExecutionsTotal: HotCounter;
  readonly toolExecutionDurationSeconds: HotHistogram;
  readonly storageCommitDurationSeconds: HotHistogram;
  readonly storageCommitsTotal: HotCounter;
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
    this.invocationsTotal = new HotCounter(
      "kelpie_invocations_total",
      "Operations run in agents' mailboxes.",
      ["operation", "status"],
      registry,
    );
    this.invocationDurationSeconds = new HotHistogram(
      "kelpie_invocation_duration_seconds",
      "Time an operation ran in an agent's mailbox.",
      ["operation"],
      DURATION_BUCKETS_S,
      registry,
    );
    this.httpRequestDurationSeconds = new HotHistogram(
      "kelpie_http_request_duration_seconds",
      "HTTP requests by route and status.",
      ["method", "route", "status_code"],
      DURATION_BUCKETS_S,
      registry,
    );
    this.llmCallsTotal = new HotCounter(
      "kelpie_llm_calls_total",
      "Model calls by provider, model and outcome.",
      ["provider", "model", "status"],
      registry,
    );
    this.llmTokensTotal = new HotCounter(
      "kelpie_llm_tokens_total",
      "Tokens by provider, model and kind (input, output).",
      ["provider", "model", "kind"],
      registry,
    );
    this.llmCallDurationSeconds = new HotHistogram(
      "kelpie_llm_call_duration_seconds",
      "Model call time.",
      ["provider", "model"],
      DURATION_BUCKETS_S,
      registry,
    );
    this.toolExecutionsTotal = new HotCounter(
      "kelpie_tool_executions_total",
      "Tool executions by type, sandbox level and outcome.",
      ["tool_type", "sandbox", "outcome"],
      registry,
    );
    this.toolExecutionDurationSeconds = new HotHistogram(
      "kelpie_tool_execution_duration_seconds",
      "Tool execution time.",
      ["tool_type", "sandbox"],
      DURATION_BUCKETS_S,
      registry,
    );
    this.storageCommitDurationSeconds = new HotHistogram(
      "kelpie_storage_commit_duration_seconds",
      "Storage commit time (until durable).",
      ["engine"],
      DURATION_BUCKETS_S,
      registry,
    );
    this.storageCommitsTotal = new HotCounter(
      "kelpie_storage_commits_total",
      "Storage commits by outcome.",
      ["engine", "outcome"],
      registry,
    );
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

  /** Registers where the outbox dispatcher's counts come from (async messages between agents). */
  registerOutbox(
    stats: () => { deliveredTotal: number; retriedTotal: number; undeliverableTotal: number },
  ): void {
    new client.Gauge({
      name: "kelpie_outbox_deliveries_total",
      help: "Async messages between agents by this node's outbox dispatcher since start: delivered, failed and to be retried, or given up (audited as outbox.undeliverable).",
      labelNames: ["outcome"],
      registers: [this.registry],
      collect() {
        const s = stats();
        this.set({ outcome: "delivered" }, s.deliveredTotal);
        this.set({ outcome: "retried" }, s.retriedTotal);
        this.set({ outcome: "undeliverable" }, s.undeliverableTotal);
      },
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
