// /v1/blocks: standalone (possibly shared) memory blocks.
import type { FastifyPluginAsync } from "fastify";
import type { BlockFields } from "../memory/blocks.ts";
import type { Services } from "./app.ts";
import { presentAgent, presentBlock } from "./present.ts";
import {
  blockFieldsSchema,
  type CursorQueryString,
  cursorQuerySchema,
  type PageQueryString,
  pageOf,
  pageOfList,
  pageQuerySchema,
} from "./schemas.ts";

interface BlockListQueryString extends PageQueryString {
  label?: string;
  templates_only?: boolean;
  name?: string;
  label_search?: string;
  value_search?: string;
  description_search?: string;
}

const idParams = {
  type: "object",
  properties: { block_id: { type: "string" } },
  required: ["block_id"],
} as const;

export const blocksRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { blocks, agents } = services;

  app.post<{ Body: BlockFields }>(
    "/",
    {
      schema: {
        body: { type: "object", properties: blockFieldsSchema, required: ["label", "value"] },
      },
    },
    async (req) => presentBlock(await blocks.create(req.body)),
  );

  app.get<{ Querystring: BlockListQueryString }>(
    "/",
    {
      schema: {
        querystring: {
          type: "object",
          properties: {
            ...pageQuerySchema("asc"),
            label: { type: "string" },
            templates_only: { type: "boolean", default: false },
            name: { type: "string" },
            label_search: { type: "string" },
            value_search: { type: "string" },
            description_search: { type: "string" },
          },
        },
      },
    },
    async (req) => {
      const q = req.query;
      const list = await blocks.list({
        ...pageOf(q),
        label: q.label,
        templates_only: q.templates_only,
        name: q.name,
        label_search: q.label_search,
        value_search: q.value_search,
        description_search: q.description_search,
      });
      return list.map(presentBlock);
    },
  );

  app.get("/count", async () => blocks.count());

  app.get<{ Params: { block_id: string } }>("/:block_id", { schema: { params: idParams } }, async (req) =>
    presentBlock(await blocks.get(req.params.block_id)),
  );

  app.patch<{ Params: { block_id: string }; Body: BlockFields | undefined }>(
    "/:block_id",
    { schema: { params: idParams, body: { type: "object", properties: blockFieldsSchema } } },
    async (req) => presentBlock(await blocks.update(req.params.block_id, req.body ?? {})),
  );

  app.delete<{ Params: { block_id: string } }>(
    "/:block_id",
    { schema: { params: idParams } },
    async (req) => {
      await blocks.delete(req.params.block_id);
      return {};
    },
  );

  app.get<{ Params: { block_id: string }; Querystring: CursorQueryString }>(
    "/:block_id/agents",
    { schema: { params: idParams, querystring: cursorQuerySchema } },
    async (req) => {
      const ids = await blocks.agentIds(req.params.block_id);
      const page = pageOfList(
        ids.map((id) => ({ id })),
        req.query,
      );
      const views = await Promise.all(page.map(({ id }) => agents.get(id)));
      return views.map(presentAgent);
    },
  );
};
