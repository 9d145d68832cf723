// GET /health and GET /v1/health/: liveness with Letta's Health shape ({version, status}).
import type { FastifyPluginAsync } from "fastify";
import type { Services } from "./app.ts";

export const healthRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const health = async () => ({
    version: services.version,
    status: "ok",
    storage: services.env.storage.engine,
    agents_active: services.runtime.stats().activeCount,
    sandbox: services.customTools.sandbox.status(),
  });
  app.get("/health", health);
  app.get("/v1/health", health);
};
