// GET /health and GET /v1/health/: liveness with Letta's Health shape ({version, status}).
import type { FastifyPluginAsync, FastifyReply } from "fastify";
import type { Services } from "./app.ts";

export const healthRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const health = async (_req: unknown, reply: FastifyReply) => {
    const cluster = services.cluster;
    // A node that lost the database (or was superseded) says so, and load balancers route around it.
    if (cluster !== undefined && !cluster.serving()) reply.code(503);
    return {
      version: services.version,
      status: cluster === undefined || cluster.serving() ? "ok" : cluster.state,
      ...(cluster === undefined
        ? {}
        : {
            cluster: {
              node_id: cluster.config.nodeId,
              incarnation: cluster.state === "joining" ? null : cluster.identity.incarnation,
              state: cluster.state,
              advertise_url: cluster.config.advertiseUrl,
              lease_ttl_ms: cluster.config.leaseTtlMs,
            },
          }),
      storage: services.env.storage.engine,
      agents_active: services.runtime.stats().activeCount,
      sandbox: services.customTools.sandbox.status(),
    };
  };
  app.get("/health", health);
  app.get("/v1/health", health);
};
