// /v1/runs: what a message request did (status, stop reason, usage) and the messages it produced.
import type { FastifyPluginAsync } from "fastify";
import { toLettaMessages } from "../agent/letta-messages.ts";
import { notFound } from "../core/errors.ts";
import type { Services } from "./app.ts";
import { presentRun } from "./present.ts";
import {
  type CursorQueryString,
  cursorQuerySchema,
  type PageQueryString,
  pageOf,
  pageOfList,
  pageQuerySchema,
} from "./schemas.ts";

type RunParams = { run_id: string };

export const runsRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { storage } = services.env;
  const getRun = async (runId: string) => {
    const run = await storage.getRun(runId);
    if (run === null) throw notFound("run", runId);
    return run;
  };

  app.get<{ Querystring: PageQueryString & { agent_id?: string; agent_ids?: string } }>(
    "/",
    {
      schema: {
        querystring: {
          type: "object",
          properties: {
            ...pageQuerySchema("desc"),
            agent_id: { type: "string" },
            agent_ids: { type: "string" },
          },
        },
      },
    },
    async (req) => (await storage.listRuns(req.query.agent_id, pageOf(req.query))).map(presentRun),
  );

  app.get<{ Params: RunParams }>("/:run_id", async (req) => presentRun(await getRun(req.params.run_id)));

  app.get<{ Params: RunParams; Querystring: PageQueryString }>(
    "/:run_id/messages",
    { schema: { querystring: { type: "object", properties: pageQuerySchema("asc", 100) } } },
    async (req) => {
      await getRun(req.params.run_id);
      const records = await storage.listRunMessages(req.params.run_id, pageOf(req.query));
      return records.flatMap((m) => toLettaMessages(m));
    },
  );

  app.get<{ Params: RunParams; Querystring: CursorQueryString }>(
    "/:run_id/steps",
    { schema: { querystring: cursorQuerySchema } },
    async (req) => {
      await getRun(req.params.run_id);
      return pageOfList(await storage.listSteps(req.params.run_id), req.query).map((s) => ({
        id: s.id,
        run_id: s.run_id,
        agent_id: s.agent_id,
        provider_name: s.provider,
        model: s.model,
        stop_reason: s.stop_reason,
        prompt_tokens: s.usage.prompt_tokens,
        completion_tokens: s.usage.completion_tokens,
        total_tokens: s.usage.total_tokens,
        created_at: new Date(s.created_at_ms).toISOString(),
      }));
    },
  );

  app.get<{ Params: RunParams }>("/:run_id/usage", async (req) => {
    const run = await getRun(req.params.run_id);
    return { ...run.usage };
  });
};
