// /v1/models: the models and embedding models this server is configured for.
import type { FastifyPluginAsync } from "fastify";
import { listEmbeddingModels, listModels } from "../llm/registry.ts";
import type { Services } from "./app.ts";

export const modelsRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  app.get("/", async () => listModels(services.llm));
  app.get("/embedding", async () => listEmbeddingModels(services.llm));
};
