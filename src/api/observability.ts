// HTTP-level observability: a span per request (the root of the request's trace) and a latency
// histogram by route; and GET /metrics in Prometheus text format.
import { context, propagation, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { FastifyInstance, FastifyPluginAsync } from "fastify";
import type { Clock } from "../core/clock.ts";
import type { KelpieMetrics } from "../observability/metrics.ts";
import type { SpanRecorder } from "../observability/span-recorder.ts";
import type { Services } from "./app.ts";
import { type PageQueryString, pageOf, pageQuerySchema } from "./schemas.ts";

export function installHttpObservability(
  app: FastifyInstance,
  observability: { metrics: KelpieMetrics; tracer: SpanRecorder | null },
  clock: Clock,
): void {
  const { metrics, tracer } = observability;
  app.addHook("onRequest", (req, reply, done) => {
    const startMs = clock.monotonicMs();
    const span =
      tracer === null
        ? undefined
        : tracer.startSpan(
            `${req.method} ${req.routeOptions.url ?? req.url}`,
            { "http.request.method": req.method, "url.path": req.url.split("?")[0] ?? "" },
            // A request forwarded by another node (or sent by a traced client) continues its trace.
            req.headers.traceparent === undefined
              ? context.active()
              : propagation.extract(context.active(), req.headers),
            SpanKind.SERVER,
          );
    // The raw response closes for every request, streamed (SSE) or not.
    reply.raw.once("close", () => {
      const route = req.routeOptions.url ?? "unmatched";
      const status = reply.raw.statusCode;
      metrics.httpRequestDurationSeconds.observe(
        metrics.httpRequestDurationSeconds.cell(`${req.method} ${status} ${route}`, () => ({
          method: req.method,
          route,
          status_code: String(status),
        })),
        (clock.monotonicMs() - startMs) / 1_000,
      );
      if (span) {
        span.setAttribute("http.response.status_code", status);
        span.setAttribute("http.route", route);
        if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
      }
    });
    if (span === undefined) return done();
    // Run the rest of the request inside the span's context, so child spans attach to it.
    context.with(trace.setSpan(context.active(), span), done);
  });
}

export const metricsRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  // Kelpie's extension: the durable audit log (tool executions, key creation), newest first.
  app.get<{ Querystring: PageQueryString }>(
    "/v1/audit",
    { schema: { querystring: { type: "object", properties: pageQuerySchema("desc", 100) } } },
    async (req) => services.env.storage.listAudit(pageOf(req.query)),
  );

  app.get("/metrics", async (_req, reply) => {
    const metrics = services.observability?.metrics;
    if (metrics === undefined)
      return reply.status(404).send({ detail: "metrics are off on this server", code: "NOT_FOUND" });
    return reply.header("content-type", metrics.contentType).send(await metrics.text());
  });
};
