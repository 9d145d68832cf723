// Builds the Fastify app; never listens (the CLI does), so tests can use inject() or a socket.

import { Ajv, type ValidateFunction } from "ajv";
import Fastify, { type FastifyInstance } from "fastify";
import type { AgentService } from "../agent/agents.ts";
import type { ContextService } from "../agent/context.ts";
import type { MessageService } from "../agent/message-service.ts";
import type { ToolRunners } from "../agent/tool-calls.ts";
import type { ClusterMember } from "../cluster/member.ts";
import { REQUEST_BODY_BYTES_MAX } from "../core/constants.ts";
import type { Env } from "../core/env.ts";
import { assertStorable, parseJsonInput } from "../core/json-input.ts";
import type { LlmProvidersConfig } from "../llm/registry.ts";
import type { ArchivalService } from "../memory/archival.ts";
import type { BlockService } from "../memory/block-service.ts";
import type { WorkingMemoryService } from "../memory/working-memory.ts";
import type { KelpieMetrics } from "../observability/metrics.ts";
import type { SpanRecorder } from "../observability/span-recorder.ts";
import type { Telemetry } from "../observability/telemetry.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { CustomTools } from "../tools/custom/service.ts";
import type { McpService } from "../tools/mcp/service.ts";
import type { ToolService } from "../tools/tool-service.ts";
import { agentFilesRoutes } from "./agent-files.ts";
import { agentsRoutes } from "./agents.ts";
import { archivalAgentRoutes, archivesRoutes, passagesRoutes } from "./archival.ts";
import { blocksRoutes } from "./blocks.ts";
import { installOutboxDeliveryRoute, outboxDeliveryHere } from "./cluster-outbox.ts";
import { installClusterRouting } from "./cluster-routing.ts";
import { conversationsRoutes } from "./conversations.ts";
import { installErrorHandler } from "./errors.ts";
import type { NodeTransport } from "./forward.ts";
import { healthRoutes } from "./health.ts";
import { installIdempotency } from "./idempotency.ts";
import { mcpLegacyRoutes } from "./mcp-legacy.ts";
import { mcpServersRoutes } from "./mcp-servers.ts";
import { messagesRoutes } from "./messages.ts";
import { modelsRoutes } from "./models.ts";
import { installHttpObservability, metricsRoutes } from "./observability.ts";
import { runsRoutes } from "./runs.ts";
import { installSecurity, type SecurityConfig } from "./security.ts";
import { agentToolRunRoutes, toolsRoutes } from "./tools.ts";

export interface Services {
  env: Env;
  runtime: Runtime;
  agents: AgentService;
  blocks: BlockService;
  tools: ToolService;
  messages: MessageService;
  context: ContextService;
  mcp: McpService;
  customTools: CustomTools;
  archival: ArchivalService;
  working: WorkingMemoryService;
  /** Metrics and tracing, when the server runs with them. */
  observability?: { metrics: KelpieMetrics; tracer: SpanRecorder | null };
  /** Runners for tools the agent loop does not run itself (archival, sandboxed custom, MCP). */
  toolRunners: ToolRunners;
  telemetry: Telemetry;
  llm: LlmProvidersConfig;
  version: string;
  /** This node's membership and leases, when it runs in a cluster (PostgreSQL). */
  cluster?: ClusterMember;
}

export interface AppOptions {
  logger?: boolean | Record<string, unknown>;
  security?: SecurityConfig;
  requestTimeoutMs?: number;
  /** How this node reaches the others in a cluster; default HTTP (the simulator's network in DST). */
  nodeTransport?: NodeTransport;
}

declare module "fastify" {
  interface FastifyInstance {
    kelpieRoutes: { method: string; url: string }[];
  }
}

// Bodies are checked as sent; query strings and path params are text and get coerced.
const ajvBody = new Ajv({ coerceTypes: false, useDefaults: true, removeAdditional: false, allErrors: false });
const ajvQuery = new Ajv({
  coerceTypes: "array",
  useDefaults: true,
  removeAdditional: false,
  allErrors: false,
});
/**
 * Compiled validators by schema text, shared by every app this process builds. A validator is a
 * pure function of its schema; compiling the routes' schemas again was most of the time it took
 * to boot a node (the simulator boots dozens per seed, the tests one per case). Bounded by the
 * routes' distinct schemas.
 */
const validators = new Map<string, ValidateFunction>();

function validatorFor(schema: unknown, isBody: boolean): ValidateFunction {
  const key = `${isBody ? "body" : "text"}:${JSON.stringify(schema)}`;
  let validate = validators.get(key);
  if (validate === undefined) {
    validate = (isBody ? ajvBody : ajvQuery).compile(schema as object);
    validators.set(key, validate);
  }
  return validate;
}

export function buildApp(services: Services, options: AppOptions = {}): FastifyInstance {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: REQUEST_BODY_BYTES_MAX,
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true },
    requestTimeout: options.requestTimeoutMs ?? 0,
  });

  app.setValidatorCompiler(({ schema, httpPart }) => validatorFor(schema, httpPart === "body"));

  // Letta clients send `content-type: application/json` with an empty body on some PATCH/POST routes.
  // Bodies nested deeper than JSON_DEPTH_MAX, or holding strings no engine can store, are refused here.
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_req, body, done) => {
    const text = (body as string).trim();
    if (text.length === 0) return done(null, undefined);
    try {
      done(null, parseJsonInput(text, ["body"]));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  // Query strings and path parameters get the same string check as bodies.
  app.addHook("preValidation", (req, _reply, done) => {
    try {
      assertStorable(req.query, ["query"]);
      assertStorable(req.params, ["path"]);
      done();
    } catch (err) {
      done(err as Error);
    }
  });

  installErrorHandler(app);
  // Every route, as registered: the auth test walks them all.
  app.decorate("kelpieRoutes", [] as { method: string; url: string }[]);
  app.addHook("onRoute", (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) app.kelpieRoutes.push({ method, url: route.url });
  });
  if (options.security) {
    const metrics = services.observability?.metrics;
    installSecurity(app, options.security, {
      storage: services.env.storage,
      clock: services.env.clock,
      ...(metrics ? { onRateLimited: () => metrics.rateLimitedTotal.inc() } : {}),
    });
  }
  if (services.observability) installHttpObservability(app, services.observability, services.env.clock);
  installIdempotency(app, services.env.storage, services.env.clock);
  if (services.cluster) {
    const routing = installClusterRouting(
      app,
      services.cluster,
      services.runtime,
      services.env.storage,
      services.env.clock,
      options.nodeTransport,
    );
    installOutboxDeliveryRoute(
      app,
      routing.fromNode,
      outboxDeliveryHere(services.env.storage, () => services.messages),
    );
  }
  app.register(healthRoutes, { services });
  app.register(metricsRoutes, { services });
  app.register(agentsRoutes, { prefix: "/v1/agents", services });
  app.register(agentFilesRoutes, { prefix: "/v1/agents", services });
  app.register(messagesRoutes, { prefix: "/v1/agents", services });
  app.register(blocksRoutes, { prefix: "/v1/blocks", services });
  app.register(archivalAgentRoutes, { prefix: "/v1/agents", services });
  app.register(archivesRoutes, { prefix: "/v1/archives", services });
  app.register(passagesRoutes, { prefix: "/v1/passages", services });
  app.register(toolsRoutes, { prefix: "/v1/tools", services });
  app.register(agentToolRunRoutes, { prefix: "/v1/agents", services });
  app.register(runsRoutes, { prefix: "/v1/runs", services });
  app.register(conversationsRoutes, { prefix: "/v1/conversations", services });
  app.register(mcpServersRoutes, { prefix: "/v1/mcp-servers", services });
  app.register(mcpLegacyRoutes, { prefix: "/v1/tools/mcp", services });
  app.register(modelsRoutes, { prefix: "/v1/models", services });
  return app;
}
