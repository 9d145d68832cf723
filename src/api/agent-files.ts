// /v1/agents/import and /v1/agents/{agent_id}/export: Letta agent files (.af) in and out.
// The upload is multipart (field `file`), as Letta's; options come as form fields or, as Letta's
// older route took them, in the query string (form fields win).
import multipart from "@fastify/multipart";
import type { FastifyPluginAsync, FastifyRequest } from "fastify";
import { AgentFiles, type ImportOptions } from "../agent/agent-file.ts";
import { REQUEST_BODY_BYTES_MAX } from "../core/constants.ts";
import { invalidField, isKelpieError, KelpieError } from "../core/errors.ts";
import { assertStorable, parseJsonInput } from "../core/json-input.ts";
import type { Services } from "./app.ts";

/** Multipart bypasses Fastify's bodyLimit, so the upload gets its own bounds. */
export const AGENT_FILE_BYTES_MAX = REQUEST_BODY_BYTES_MAX;
const IMPORT_FORM_FIELDS_MAX = 32;
const IMPORT_FORM_FIELD_BYTES_MAX = 1024 * 1024;

const TRUE_WORDS = new Set(["true", "1", "yes", "on"]);
const FALSE_WORDS = new Set(["false", "0", "no", "off"]);

type Fields = Record<string, string | undefined>;

function boolField(fields: Fields, name: string, fallback: boolean): boolean {
  const raw = fields[name];
  if (raw === undefined || raw === "") return fallback;
  const word = raw.toLowerCase();
  if (TRUE_WORDS.has(word)) return true;
  if (FALSE_WORDS.has(word)) return false;
  throw invalidField(["body", name], `must be a boolean (true or false), got '${raw}'`, "bool_parsing");
}

function textField(fields: Fields, ...names: string[]): string | null {
  for (const name of names) {
    const raw = fields[name];
    if (raw !== undefined && raw !== "" && raw !== "null") return raw;
  }
  return null;
}

/** A JSON object of strings given as text (env_vars_json, secrets) → a list of variables. */
function envField(fields: Fields, name: string): { key: string; value: string }[] {
  const raw = textField(fields, name);
  if (raw === null) return [];
  let parsed: unknown;
  try {
    parsed = parseJsonInput(raw, ["body", name]);
  } catch (err) {
    if (isKelpieError(err)) throw err;
    throw invalidField(["body", name], `is not JSON: ${(err as Error).message}`, "json_invalid");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw invalidField(["body", name], 'must be a JSON object of strings, like {"API_KEY": "..."}');
  }
  return Object.entries(parsed).map(([key, value]) => {
    if (typeof value !== "string") throw invalidField(["body", name, key], "must be a string");
    return { key, value };
  });
}

async function fileBytes(part: { toBuffer(): Promise<Buffer> }): Promise<Buffer> {
  try {
    return await part.toBuffer();
  } catch (err) {
    if ((err as { code?: unknown }).code === "FST_REQ_FILE_TOO_LARGE") {
      throw new KelpieError(
        "PAYLOAD_TOO_LARGE",
        `body.file: the agent file is larger than ${AGENT_FILE_BYTES_MAX} bytes, the most an import accepts`,
      );
    }
    throw err;
  }
}

/** Reads the multipart upload: the file's bytes and the text fields. */
async function readUpload(req: FastifyRequest): Promise<{ bytes: Buffer; fields: Fields }> {
  if (!req.isMultipart()) {
    throw invalidField(
      ["body", "file"],
      "send the agent file as multipart/form-data in the field 'file'",
      "missing",
    );
  }
  let bytes: Buffer | undefined;
  const fields: Fields = {};
  for await (const part of req.parts()) {
    if (part.fieldname === "file") {
      // `curl -F file=<x.af` sends the file as a text field; both are the file.
      bytes = part.type === "file" ? await fileBytes(part) : Buffer.from(String(part.value), "utf8");
    } else if (part.type === "file") {
      throw invalidField(
        ["body", part.fieldname],
        "unexpected file; the agent file goes in the field 'file'",
      );
    } else {
      fields[part.fieldname] = String(part.value);
    }
  }
  if (bytes === undefined) throw invalidField(["body", "file"], "field required", "missing");
  assertStorable(fields, ["body"]);
  return { bytes, fields };
}

const exportQuerySchema = {
  type: "object",
  properties: {
    max_steps: { type: "integer" },
    use_legacy_format: { type: "boolean", default: false },
    conversation_id: { anyOf: [{ type: "string" }, { type: "null" }] },
    scrub_messages: { type: "boolean", default: false },
  },
} as const;

interface ExportQuery {
  use_legacy_format: boolean;
  conversation_id?: string | null;
  scrub_messages: boolean;
}

interface ExportBody {
  skills?: unknown[];
  conversation_id?: string | null;
  scrub_messages?: boolean;
}

export const agentFilesRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  // Registered here, so only these routes parse multipart bodies.
  await app.register(multipart, {
    limits: {
      fileSize: AGENT_FILE_BYTES_MAX,
      files: 1,
      fields: IMPORT_FORM_FIELDS_MAX,
      fieldSize: IMPORT_FORM_FIELD_BYTES_MAX,
      parts: IMPORT_FORM_FIELDS_MAX + 1,
    },
  });
  const files = new AgentFiles({
    env: services.env,
    agents: services.agents,
    customTools: services.customTools,
    mcp: services.mcp,
    archival: services.archival,
    version: services.version,
  });

  app.post<{ Querystring: Fields }>("/import", async (req) => {
    const { bytes, fields: form } = await readUpload(req);
    const fields: Fields = { ...req.query, ...form };
    const header = req.headers["x-override-embedding-model"];
    const options: ImportOptions = {
      appendCopySuffix: boolField(fields, "append_copy_suffix", true),
      overrideExistingTools: boolField(fields, "override_existing_tools", true),
      stripMessages: boolField(fields, "strip_messages", false),
      name: textField(fields, "name", "override_name"),
      model: textField(fields, "model", "override_model_handle"),
      embedding:
        textField(fields, "embedding", "override_embedding_handle") ??
        (typeof header === "string" ? header : null),
      projectId: textField(fields, "project_id"),
      envVars: [...envField(fields, "env_vars_json"), ...envField(fields, "secrets")],
    };
    const result = await files.import(bytes, options);
    return { agent_ids: result.agentIds, warnings: result.warnings };
  });

  const exportFile = async (
    agentId: string,
    q: { useLegacyFormat: boolean; conversationId: string | null | undefined; scrubMessages: boolean },
  ) => {
    if (q.useLegacyFormat) {
      throw invalidField(
        ["query", "use_legacy_format"],
        "the legacy v1 format is not exported; the current format is",
      );
    }
    if (q.conversationId != null) {
      throw invalidField(["query", "conversation_id"], "conversations are not supported by Kelpie");
    }
    // Letta indents its export; so do we.
    return JSON.stringify(await files.export(agentId, { scrubMessages: q.scrubMessages }), null, 2);
  };

  app.get<{ Params: { agent_id: string }; Querystring: ExportQuery }>(
    "/:agent_id/export",
    { schema: { querystring: exportQuerySchema } },
    async (req, reply) => {
      const text = await exportFile(req.params.agent_id, {
        useLegacyFormat: req.query.use_legacy_format,
        conversationId: req.query.conversation_id,
        scrubMessages: req.query.scrub_messages,
      });
      return reply.type("application/json").send(text);
    },
  );

  app.post<{ Params: { agent_id: string }; Body: ExportBody | null | undefined }>(
    "/:agent_id/export",
    {
      schema: {
        body: {
          anyOf: [
            {
              type: "object",
              properties: {
                skills: { type: "array" },
                conversation_id: { anyOf: [{ type: "string" }, { type: "null" }] },
                scrub_messages: { type: "boolean" },
              },
            },
            { type: "null" },
          ],
        },
      },
    },
    async (req, reply) => {
      const body = req.body ?? {};
      if ((body.skills ?? []).length > 0) {
        throw invalidField(["body", "skills"], "skills are not supported by Kelpie");
      }
      const text = await exportFile(req.params.agent_id, {
        useLegacyFormat: false,
        conversationId: body.conversation_id,
        scrubMessages: body.scrub_messages ?? false,
      });
      return reply.type("application/json").send(text);
    },
  );
};
