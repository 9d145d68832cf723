// Wires a real Env (system clock, OS randomness, the configured storage) into the runtime, the
// services and the HTTP app.
import type { FastifyInstance } from "fastify";
import { AgentService } from "./agent/agents.ts";
import { ContextService } from "./agent/context.ts";
import { MessageService } from "./agent/message-service.ts";
import { HandleModelResolver } from "./agent/models.ts";
import { localDelivery, OutboxDispatcher } from "./agent/outbox.ts";
import { RunRecovery } from "./agent/run-recovery.ts";
import { ToolRunners } from "./agent/tool-calls.ts";
import { TurnRunner } from "./agent/turn.ts";
import { buildApp, type Services } from "./api/app.ts";
import { remoteOutboxDelivery, routedDelivery } from "./api/cluster-outbox.ts";
import type { NodeTransport } from "./api/forward.ts";
import type { SecurityConfig } from "./api/security.ts";
import { type ClusterConfig, ClusterMember } from "./cluster/member.ts";
import { AgentRouter } from "./cluster/routing.ts";
import type { ServerConfig } from "./config.ts";
import { type Clock, SystemClock } from "./core/clock.ts";
import { TURNS_QUEUED_PER_AGENT_MAX } from "./core/constants.ts";
import type { Env } from "./core/env.ts";
import { KelpieError } from "./core/errors.ts";
import { type Rng, SystemRng } from "./core/rng.ts";
import { configuredBaseUrls } from "./llm/config.ts";
import { type LlmProvidersConfig, llmConfigFromEnv } from "./llm/registry.ts";
import type { RetryPolicy } from "./llm/retry.ts";
import type { LlmProvider } from "./llm/types.ts";
import { ArchivalService } from "./memory/archival.ts";
import { BlockService } from "./memory/block-service.ts";
import { Embedders } from "./memory/embedders.ts";
import { WorkingMemoryService } from "./memory/working-memory.ts";
import type { EgressOptions } from "./net/egress.ts";
import { Egress } from "./net/egress-fetch.ts";
import { instrumentStorage } from "./observability/instrumented-storage.ts";
import { LiveTelemetry } from "./observability/live-telemetry.ts";
import { KelpieMetrics } from "./observability/metrics.ts";
import { NO_TELEMETRY, type Telemetry } from "./observability/telemetry.ts";
import type { Tracing } from "./observability/tracing.ts";
import { LocalPlacement } from "./runtime/placement.ts";
import { Runtime } from "./runtime/runtime.ts";
import { TurnGate } from "./runtime/turn-gate.ts";
import { openStorage } from "./storage/open.ts";
import type { Storage } from "./storage/types.ts";
import { CustomTools } from "./tools/custom/service.ts";
import { McpConnections } from "./tools/mcp/connections.ts";
import { McpService } from "./tools/mcp/service.ts";
import type { McpStdioPolicy } from "./tools/mcp/stdio-sandbox.ts";
import { MemoryTierTools } from "./tools/memory-tier-tools.ts";
import { MultiAgentTools } from "./tools/multi-agent.ts";
import type { SandboxDefaults } from "./tools/sandbox/limits.ts";
import { Sandbox } from "./tools/sandbox/sandbox.ts";
import { ToolService } from "./tools/tool-service.ts";
import { WebTools } from "./tools/web-tools.ts";

export const KELPIE_VERSION = "0.1.0";
/** While draining, how often sockets that fell idle are closed. */
const IDLE_CONNECTION_SWEEP_MS = 50;

export interface Kelpie {
  app: FastifyInstance;
  services: Services;
  close(): Promise<void>;
}

/** Builds every service over an Env; the caller decides whether to listen. */
export interface KelpieOptions {
  logger?: boolean | Record<string, unknown>;
  idleTimeoutMs?: number;
  /** Turns that may wait behind an agent's running turn (default TURNS_QUEUED_PER_AGENT_MAX). */
  turnsQueuedPerAgentMax?: number;
  /** The gate that keeps turns serial per agent; default one made here (the simulator passes its own). */
  turnGate?: TurnGate;
  /** Providers and keys; defaults to what the process environment configures. */
  llm?: LlmProvidersConfig;
  telemetry?: Telemetry;
  /** LLM retry policy override (tests use short backoffs). */
  llmRetry?: Partial<RetryPolicy>;
  /** One provider for every agent, bypassing the registry (benchmarks, simulation). */
  llmProviderOverride?: LlmProvider;
  /** Prometheus metrics (and OpenTelemetry tracing when a tracing handle is given). */
  observability?: { tracing: Tracing | null };
  /** API keys, rate limits, CORS. */
  security?: SecurityConfig;
  requestTimeoutMs?: number;
  /** Allow the plain-process sandbox level (KELPIE_SANDBOX_ALLOW_PROCESS=1). */
  sandboxAllowProcess?: boolean;
  /** Sandbox level per language for tools that ask for none (KELPIE_SANDBOX_JS, KELPIE_SANDBOX_PYTHON). */
  sandboxDefaults?: SandboxDefaults;
  /** Outbound calls a client or model can steer: what is allowed despite the policy (KELPIE_EGRESS_ALLOW). */
  egress?: Pick<EgressOptions, "allow" | "resolve">;
  /** Exa's key for the web_search tool. */
  exaApiKey?: string | undefined;
  /** Text embedders; defaults to the configured providers' (simulation gives a deterministic one). */
  embedders?: Embedders;
  /** Where archives' HNSW graphs are saved across restarts (a data directory); none: rebuilt each start. */
  archivalIndexDir?: string | undefined;
  /** Join a cluster over the storage's shared database (PostgreSQL): leases, forwarding, failover. */
  cluster?: ClusterConfig;
  /** How this node reaches the others in a cluster; default HTTP (the simulator passes its network). */
  nodeTransport?: NodeTransport;
  /** Which stdio MCP servers clients may register and this server starts, sandboxed; default none. */
  mcpStdio?: McpStdioPolicy;
}

export async function createKelpie(baseEnv: Env, options: KelpieOptions = {}): Promise<Kelpie> {
  const llm = options.llm ?? llmConfigFromEnv(process.env);
  // Web pages, MCP URLs, model and embedding endpoints all go out through this one policy.
  const egress = new Egress({ ...options.egress, trusted: configuredBaseUrls(llm) });
  // Metrics read the runtime's figures when scraped; the runtime is made just below.
  let runtimeRef: Runtime | undefined;
  const metrics = options.observability
    ? new KelpieMetrics(
        () =>
          runtimeRef?.stats() ?? {
            activeCount: 0,
            mailboxDepthTotal: 0,
            activationsTotal: 0,
            deactivationsTotal: 0,
            mailboxFullTotal: 0,
          },
      )
    : undefined;
  const tracer = options.observability?.tracing?.tracer ?? null;
  const telemetry = options.telemetry ?? (metrics ? new LiveTelemetry(metrics, tracer) : NO_TELEMETRY);
  const env: Env = metrics
    ? { ...baseEnv, storage: instrumentStorage(baseEnv.storage, metrics, telemetry, baseEnv.clock) }
    : baseEnv;
  metrics?.registerTier("core", () => env.storage.coreMemoryChars());
  metrics?.registerTier("working", () => env.storage.tiers.workingBytes());
  metrics?.registerTier("archival", () => env.storage.tiers.archivalChars());
  // Logs of the cluster member go to the app's logger, made further down.
  let appRef: FastifyInstance | undefined;
  let member: ClusterMember | undefined;
  if (options.cluster !== undefined) {
    const store = env.storage.cluster;
    if (store === undefined) {
      throw new KelpieError(
        "BAD_REQUEST",
        `storage engine ${env.storage.engine} cannot host a cluster (use postgres)`,
      );
    }
    member = new ClusterMember(store, env.clock, options.cluster, {
      info: (fields, message) => appRef?.log.info(fields, message),
      warn: (fields, message) => appRef?.log.warn(fields, message),
      error: (fields, message) => appRef?.log.error(fields, message),
    });
  }
  const runtime = new Runtime({
    clock: env.clock,
    storage: env.storage,
    placement: member ?? new LocalPlacement(env.storage),
    telemetry,
    ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
  });
  runtimeRef = runtime;
  member?.attach(runtime);
  const toolRunners = new ToolRunners();
  const embedders = options.embedders ?? new Embedders(llm, egress.fetch);
  const tools = new ToolService(env);
  await tools.ensureBuiltins();
  const agents = new AgentService(env, runtime, new HandleModelResolver(llm));
  // Delivers async messages between agents through the message service made below (it starts
  // last): here, or in a cluster at the node holding the target.
  const deliverHere = localDelivery(() => services.messages);
  const outbox = new OutboxDispatcher(
    env,
    runtime,
    member === undefined
      ? deliverHere
      : routedDelivery(
          new AgentRouter(member, runtime, env.clock),
          deliverHere,
          remoteOutboxDelivery(member, env.clock, options.nodeTransport),
        ),
  );
  metrics?.registerOutbox(() => outbox.stats());
  const turns = new TurnRunner({
    env,
    outbox,
    agents,
    llm,
    toolRunners,
    telemetry,
    llmFetch: egress.fetch,
    ...(options.llmRetry === undefined ? {} : { llmRetry: options.llmRetry }),
    ...(options.llmProviderOverride === undefined ? {} : { providerOverride: options.llmProviderOverride }),
  });
  const services: Services = {
    env,
    runtime,
    agents,
    messages: new MessageService(
      env,
      runtime,
      turns,
      options.turnGate ??
        new TurnGate(env.clock, options.turnsQueuedPerAgentMax ?? TURNS_QUEUED_PER_AGENT_MAX),
    ),
    context: new ContextService(env, agents, llm),
    mcp: new McpService(env, new McpConnections(env.clock, egress.fetch, options.mcpStdio)),
    customTools: new CustomTools(
      env,
      new Sandbox(options.sandboxAllowProcess ?? false, options.sandboxDefaults),
    ),
    blocks: new BlockService(env),
    archival: new ArchivalService(env, embedders, { indexDir: options.archivalIndexDir, runtime }),
    working: new WorkingMemoryService(env, runtime),
    tools,
    toolRunners,
    telemetry,
    llm,
    version: KELPIE_VERSION,
    ...(metrics ? { observability: { metrics, tracer } } : {}),
    ...(member ? { cluster: member } : {}),
  };
  const recovery = new RunRecovery(env, runtime, (runId) => services.messages.isLive(runId));
  runtime.onActivate(async (ctx) => {
    await recovery.atActivation(ctx);
    // What a dead activation of this sender left undelivered goes out from here now.
    outbox.kick(ctx.agentId);
  });
  new MultiAgentTools(services.messages, env.storage).register(toolRunners);
  new MemoryTierTools(services.archival, services.working, embedders).register(toolRunners);
  new WebTools(options.exaApiKey, egress.fetch).register(toolRunners);
  toolRunners.registerType("external_mcp", services.mcp);
  toolRunners.registerType("custom", services.customTools);
  const app = buildApp(services, {
    logger: options.logger ?? false,
    ...(options.security ? { security: options.security } : {}),
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
    ...(options.nodeTransport === undefined ? {} : { nodeTransport: options.nodeTransport }),
  });
  appRef = app;
  await member?.join();
  runtime.start();
  await recovery.atStart();
  await outbox.start();
  return {
    app,
    services,
    async close() {
      // Keep-alive sockets (other nodes' forwarding pools, clients) that fall idle once their
      // request is answered would hold the close open until they time out: close them as they do.
      const sweep = setInterval(() => app.server.closeIdleConnections(), IDLE_CONNECTION_SWEEP_MS);
      try {
        await app.close();
      } finally {
        clearInterval(sweep);
      }
      // Undelivered outbox entries stay stored: whoever holds their senders next delivers them.
      outbox.stop();
      // Drains in-flight turns and gives each lease back; then the node leaves (any lease left lapses).
      await runtime.stop();
      await member?.leave();
      await services.archival.close();
      await embedders.close();
      await services.customTools.sandbox.close();
      await services.mcp.connections.closeAll();
      await egress.close();
      await options.observability?.tracing?.shutdown();
      await env.storage.close();
    },
  };
}

export async function productionEnv(
  config: ServerConfig,
): Promise<Env & { clock: Clock; rng: Rng; storage: Storage }> {
  const storage = await openStorage({
    engine: config.storage,
    dataDir: config.dataDir,
    databaseUrl: config.databaseUrl,
  });
  return { clock: new SystemClock(), rng: new SystemRng(), storage };
}
