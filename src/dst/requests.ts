// The API-level operations the workload sends, as the HTTP requests a Letta client makes for them,
// and what their answers mean to the client. A node serves them with its real Fastify app
// (inject(): the same routes, hooks, idempotency and cluster routing as a listening server), so
// the simulation runs the HTTP layer, runtime, agent loop, memory and storage code as users reach
// them. A reply carries what the client needs to check the operation later.

import type { LettaMessage } from "../agent/letta-messages.ts";
import { ERRORS } from "../core/errors.ts";
import { multipartBody, smallAgentFile } from "./agent-file.ts";
import { LOG_BLOCK_LABEL, PLAN_STEPS, type PlanStep, planMessage, SCRATCH_BLOCK_LABEL } from "./sim-llm.ts";
import { sandboxToolRecord } from "./sim-sandbox.ts";

export const LOG_BLOCK_LIMIT_CHARS = 1_200;
export const SCRATCH_BLOCK_LIMIT_CHARS = 48;
export const SCRATCH_BLOCK_INITIAL_VALUE = "init";
/** A turn's steps: its plan (at most four) plus retries of botched calls. */
export const SEND_MAX_STEPS = 12;
export const ARCHIVAL_SEARCH_TOP_K = 10;

export type Request =
  | { kind: "create_agent"; name: string }
  | { kind: "delete_agent"; agentId: string }
  | { kind: "send"; agentId: string; opId: number; token: string; plan: PlanStep[]; peer?: string }
  | { kind: "block_write"; agentId: string; value: string }
  | { kind: "block_read"; agentId: string; label: string }
  | { kind: "working_put"; agentId: string; key: string; value: string }
  | { kind: "working_get"; agentId: string; key: string }
  | { kind: "archival_insert"; agentId: string; token: string }
  | { kind: "archival_search"; agentId: string; token: string }
  | { kind: "working_fill"; agentId: string; key: string; value: string }
  | { kind: "import_agent"; name: string; idempotencyKey: string; token: string }
  | { kind: "archive_create"; name: string }
  | { kind: "archive_insert"; archiveId: string; token: string }
  | { kind: "archive_attach"; agentId: string; archiveId: string }
  | { kind: "archive_list"; archiveId: string }
  | { kind: "conv_create"; agentId: string; summary: string }
  | { kind: "conv_patch"; conversationId: string; summary: string }
  | { kind: "conv_get"; conversationId: string }
  | { kind: "conv_send"; conversationId: string; opId: number; token: string; plan: PlanStep[] };

export type ReplyValue =
  | { kind: "create_agent"; agentId: string }
  | { kind: "delete_agent" }
  | {
      kind: "send";
      stopReason: string;
      messageIds: string[];
      /** Status of each planned tool's return, by step ("success" or "error"). */
      steps: Partial<Record<PlanStep, string>>;
    }
  | { kind: "block_write"; value: string; limit: number }
  | { kind: "block_read"; value: string; limit: number }
  | { kind: "working_put" }
  | { kind: "working_get"; value: string | null }
  | { kind: "archival_insert"; passageIds: string[] }
  | { kind: "archival_search"; texts: string[] }
  | { kind: "working_fill" }
  | { kind: "import_agent"; agentIds: string[] }
  | { kind: "archive_create"; archiveId: string }
  | { kind: "archive_insert"; passageId: string }
  | { kind: "archive_attach" }
  | { kind: "archive_list"; texts: string[] }
  | { kind: "conv_create"; conversationId: string }
  | {
      kind: "conv_patch" | "conv_get";
      summary: string | null;
      /** The conversation's in-context message ids as the answer gave them. */
      contextIds: string[];
    }
  | { kind: "conv_send"; messageIds: string[]; stopReason: string };

export type Reply =
  | { ok: true; value: ReplyValue }
  | { ok: false; code: string; retryable: boolean; message: string };

type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

/** One HTTP request as a client sends it. */
export interface HttpCall {
  method: Method;
  /** Path and query. */
  path: string;
  body?: unknown;
  /** A body sent as is (a multipart upload), with its content type. */
  raw?: { contentType: string; bytes: Buffer };
  headers?: Record<string, string>;
}

const UPLOAD_BOUNDARY = "dst-upload-boundary";
const conversationPath = (id: string) => `/v1/conversations/${encodeURIComponent(id)}`;
const archivePath = (id: string) => `/v1/archives/${encodeURIComponent(id)}`;

const agentPath = (agentId: string) => `/v1/agents/${encodeURIComponent(agentId)}`;

/** The HTTP request a Letta client sends for an operation. */
export function httpOf(req: Request): HttpCall {
  switch (req.kind) {
    case "create_agent":
      return {
        method: "POST",
        path: "/v1/agents",
        body: {
          name: req.name,
          agent_type: "memgpt_agent",
          model: "openai/gpt-4o-mini",
          memory_blocks: [
            { label: LOG_BLOCK_LABEL, value: "", limit: LOG_BLOCK_LIMIT_CHARS },
            {
              label: SCRATCH_BLOCK_LABEL,
              value: SCRATCH_BLOCK_INITIAL_VALUE,
              limit: SCRATCH_BLOCK_LIMIT_CHARS,
            },
          ],
          tool_ids: [sandboxToolRecord(0).id],
          tools: ["memory"],
          include_multi_agent_tools: true,
        },
      };
    case "delete_agent":
      return { method: "DELETE", path: agentPath(req.agentId) };
    case "send":
      return {
        method: "POST",
        path: `${agentPath(req.agentId)}/messages`,
        body: {
          messages: [
            { role: "user", content: planMessage(req.opId, req.token, req.plan, req.peer), otid: req.token },
          ],
          max_steps: SEND_MAX_STEPS,
        },
      };
    case "block_write":
      return {
        method: "PATCH",
        path: `${agentPath(req.agentId)}/core-memory/blocks/${SCRATCH_BLOCK_LABEL}`,
        body: { value: req.value },
      };
    case "block_read":
      return { method: "GET", path: `${agentPath(req.agentId)}/core-memory/blocks/${req.label}` };
    case "working_put":
      return {
        method: "PUT",
        path: `${agentPath(req.agentId)}/working-memory/${req.key}`,
        body: { value: req.value },
      };
    case "working_get":
      return { method: "GET", path: `${agentPath(req.agentId)}/working-memory/${req.key}` };
    case "archival_insert":
      return {
        method: "POST",
        path: `${agentPath(req.agentId)}/archival-memory`,
        body: { text: `passage ${req.token}`, tags: [req.token] },
      };
    case "archival_search":
      return {
        method: "GET",
        path: `${agentPath(req.agentId)}/archival-memory/search?query=${encodeURIComponent(req.token)}&top_k=${ARCHIVAL_SEARCH_TOP_K}`,
      };
    case "working_fill":
      return {
        method: "PUT",
        path: `${agentPath(req.agentId)}/working-memory/${req.key}`,
        body: { value: req.value },
      };
    case "import_agent":
      return {
        method: "POST",
        path: "/v1/agents/import",
        raw: {
          contentType: `multipart/form-data; boundary=${UPLOAD_BOUNDARY}`,
          bytes: multipartBody(
            smallAgentFile(),
            { name: req.name, model: "openai/gpt-4o-mini", append_copy_suffix: "false" },
            UPLOAD_BOUNDARY,
          ),
        },
        headers: { "idempotency-key": req.idempotencyKey },
      };
    case "archive_create":
      return { method: "POST", path: "/v1/archives", body: { name: req.name } };
    case "archive_insert":
      return {
        method: "POST",
        path: `${archivePath(req.archiveId)}/passages`,
        body: { text: `passage ${req.token}`, tags: [req.token] },
      };
    case "archive_attach":
      return {
        method: "PATCH",
        path: `${agentPath(req.agentId)}/archives/attach/${encodeURIComponent(req.archiveId)}`,
      };
    case "archive_list":
      return { method: "GET", path: `${archivePath(req.archiveId)}/passages?limit=1000` };
    case "conv_create":
      return {
        method: "POST",
        path: `/v1/conversations?agent_id=${encodeURIComponent(req.agentId)}`,
        body: { summary: req.summary },
      };
    case "conv_patch":
      return { method: "PATCH", path: conversationPath(req.conversationId), body: { summary: req.summary } };
    case "conv_get":
      return { method: "GET", path: conversationPath(req.conversationId) };
    case "conv_send":
      return {
        method: "POST",
        path: `${conversationPath(req.conversationId)}/messages`,
        body: {
          messages: [{ role: "user", content: planMessage(req.opId, req.token, req.plan), otid: req.token }],
          max_steps: SEND_MAX_STEPS,
          streaming: false,
        },
      };
  }
}

/** The step a call of this op was (call ids are `call_<op>_<step>_<n>`), or null for another op's. */
function stepOf(toolCallId: string, opId: number): PlanStep | null {
  const [, op, step] = toolCallId.split("_");
  if (op !== String(opId)) return null;
  return (PLAN_STEPS as readonly string[]).includes(step ?? "") ? (step as PlanStep) : null;
}

function sendValue(opId: number, body: Json): ReplyValue {
  const messages = (body.messages ?? []) as LettaMessage[];
  const steps: Partial<Record<PlanStep, string>> = {};
  for (const m of messages) {
    if (m.message_type !== "tool_return_message") continue;
    const step = stepOf(String(m.tool_call_id ?? ""), opId);
    // A step may be retried after a botched call: any success counts.
    if (step !== null && steps[step] !== "success") steps[step] = String(m.status);
  }
  const stopReason = String((body.stop_reason as Json | undefined)?.stop_reason ?? "");
  return { kind: "send", stopReason, messageIds: [...new Set(messages.map((m) => m.id))], steps };
}

// biome-ignore lint/suspicious/noExplicitAny: an answer's JSON, read field by field as a client does.
type Json = Record<string, any>;

/** What an answer means to the client that sent `req`. */
export function replyOf(req: Request, status: number, text: string): Reply {
  let body: Json;
  try {
    body = JSON.parse(text) as Json;
  } catch {
    return { ok: false, code: `UNEXPECTED_HTTP_${status}`, retryable: false, message: text.slice(0, 200) };
  }
  if (status < 200 || status >= 300) {
    // A key not there reads as null; an agent not there (deleted) is an error, not a read of the map.
    if (req.kind === "working_get" && status === 404 && body.code !== "AGENT_NOT_FOUND")
      return { ok: true, value: { kind: "working_get", value: null } };
    const code = typeof body.code === "string" ? body.code : `HTTP_${status}`;
    const known = (ERRORS as Record<string, { retryable: boolean } | undefined>)[code];
    const retryable = typeof body.retryable === "boolean" ? body.retryable : (known?.retryable ?? false);
    return { ok: false, code, retryable, message: JSON.stringify(body.detail ?? body) };
  }
  return { ok: true, value: answerValue(req, body) };
}

function answerValue(req: Request, body: Json): ReplyValue {
  switch (req.kind) {
    case "create_agent":
      return { kind: "create_agent", agentId: String(body.id) };
    case "delete_agent":
      return { kind: "delete_agent" };
    case "send":
      return sendValue(req.opId, body);
    case "block_write":
    case "block_read":
      return { kind: req.kind, value: String(body.value), limit: Number(body.limit) };
    case "working_put":
      return { kind: "working_put" };
    case "working_get":
      return { kind: "working_get", value: typeof body.value === "string" ? body.value : null };
    case "archival_insert":
      return { kind: "archival_insert", passageIds: (body as Json[]).map((p) => String(p.id)) };
    case "archival_search":
      return { kind: "archival_search", texts: (body.results as Json[]).map((h) => String(h.content)) };
    case "working_fill":
      return { kind: "working_fill" };
    case "import_agent":
      return { kind: "import_agent", agentIds: (body.agent_ids as unknown[]).map(String) };
    case "archive_create":
      return { kind: "archive_create", archiveId: String(body.id) };
    case "archive_insert":
      return { kind: "archive_insert", passageId: String(body.id) };
    case "archive_attach":
      return { kind: "archive_attach" };
    case "archive_list":
      return { kind: "archive_list", texts: (body as Json[]).map((p) => String(p.text)) };
    case "conv_create":
      return { kind: "conv_create", conversationId: String(body.id) };
    case "conv_patch":
    case "conv_get":
      return {
        kind: req.kind,
        summary: typeof body.summary === "string" ? body.summary : null,
        contextIds: ((body.in_context_message_ids ?? []) as unknown[]).map(String),
      };
    case "conv_send": {
      const sent = sendValue(req.opId, body);
      return sent.kind === "send"
        ? { kind: "conv_send", messageIds: sent.messageIds, stopReason: sent.stopReason }
        : sent;
    }
  }
}

/** A failure the node's HTTP layer never answered (the inject itself threw): a bug, named. */
export function thrownReply(err: unknown): Reply {
  const e = err instanceof Error ? err : new Error(String(err));
  return { ok: false, code: `UNEXPECTED_${e.name}`, retryable: false, message: e.message };
}
