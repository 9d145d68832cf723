// The API-level operations the workload sends, and how a node serves them: by calling the same
// services the HTTP routes call (agents, messages, blocks, archival, working memory), so the
// simulation runs the real runtime, agent loop, memory and storage code. A reply carries what the
// client needs to check the operation later.

import type { LettaMessage } from "../agent/letta-messages.ts";
import type { Services } from "../api/app.ts";
import { isKelpieError } from "../core/errors.ts";
import type { BugSwitches } from "./mutations.ts";
import { LOG_BLOCK_LABEL, type PlanStep, planMessage, SCRATCH_BLOCK_LABEL } from "./sim-llm.ts";
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
  | { kind: "send"; agentId: string; opId: number; token: string; plan: PlanStep[] }
  | { kind: "block_write"; agentId: string; value: string }
  | { kind: "block_read"; agentId: string; label: string }
  | { kind: "working_put"; agentId: string; key: string; value: string }
  | { kind: "working_get"; agentId: string; key: string }
  | { kind: "archival_insert"; agentId: string; token: string }
  | { kind: "archival_search"; agentId: string; token: string };

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
  | { kind: "archival_search"; texts: string[] };

export type Reply =
  | { ok: true; value: ReplyValue }
  | { ok: false; code: string; retryable: boolean; message: string };

/** What a failure becomes on the wire; a non-Kelpie error is a bug and keeps its name. */
export function errorReply(err: unknown): Reply {
  if (isKelpieError(err))
    return { ok: false, code: err.code, retryable: err.retryable, message: err.message };
  const e = err instanceof Error ? err : new Error(String(err));
  return { ok: false, code: `UNEXPECTED_${e.name}`, retryable: false, message: e.message };
}

/** The step a call of this op was (call ids are `call_<op>_<step>_<n>`), or null for another op's. */
function stepOf(toolCallId: string, opId: number): PlanStep | null {
  const [, op, step] = toolCallId.split("_");
  if (op !== String(opId)) return null;
  return step === "append" || step === "archival" || step === "sandbox" || step === "send" ? step : null;
}

function sendValue(opId: number, stopReason: string, messages: LettaMessage[]): ReplyValue {
  const steps: Partial<Record<PlanStep, string>> = {};
  for (const m of messages) {
    if (m.message_type !== "tool_return_message") continue;
    const step = stepOf(String(m.tool_call_id ?? ""), opId);
    // A step may be retried after a botched call: any success counts.
    if (step !== null && steps[step] !== "success") steps[step] = String(m.status);
  }
  return { kind: "send", stopReason, messageIds: [...new Set(messages.map((m) => m.id))], steps };
}

async function serveOnce(services: Services, req: Request, bugs: BugSwitches): Promise<ReplyValue> {
  switch (req.kind) {
    case "create_agent": {
      const view = await services.agents.create({
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
      });
      return { kind: "create_agent", agentId: view.agent.id };
    }
    case "delete_agent": {
      // As the DELETE route does: the agent, then the archives it made for itself.
      const owned = await services.archival.ownedArchiveIds(req.agentId);
      await services.agents.delete(req.agentId);
      await services.archival.dropOrphans(owned);
      return { kind: "delete_agent" };
    }
    case "send": {
      const result = await services.messages.send(
        req.agentId,
        {
          messages: [{ role: "user", content: planMessage(req.opId, req.token, req.plan), otid: req.token }],
          max_steps: SEND_MAX_STEPS,
        },
        { streamTokens: false },
      );
      if (result.error !== undefined) throw result.error;
      return sendValue(req.opId, result.stopReason, result.messages);
    }
    case "block_write": {
      let value = req.value;
      if (bugs.truncateBlockValue) {
        const block = await services.agents.blockByLabel(req.agentId, SCRATCH_BLOCK_LABEL);
        if (value.length > block.limit) value = value.slice(0, block.limit);
      }
      const block = await services.agents.updateBlockByLabel(req.agentId, SCRATCH_BLOCK_LABEL, { value });
      return { kind: "block_write", value: block.value, limit: block.limit };
    }
    case "block_read": {
      const block = await services.agents.blockByLabel(req.agentId, req.label);
      return { kind: "block_read", value: block.value, limit: block.limit };
    }
    case "working_put":
      await services.working.put(req.agentId, req.key, { value: req.value });
      return { kind: "working_put" };
    case "working_get": {
      try {
        const entry = await services.working.get(req.agentId, req.key);
        return { kind: "working_get", value: typeof entry.value === "string" ? entry.value : null };
      } catch (err) {
        if (isKelpieError(err) && err.code === "NOT_FOUND") return { kind: "working_get", value: null };
        throw err;
      }
    }
    case "archival_insert": {
      // As the POST archival-memory route does.
      const archive = await services.archival.agentArchive(req.agentId, true);
      const passages = await services.archival.insert(archive.id, [
        { text: `passage ${req.token}`, tags: [req.token] },
      ]);
      return { kind: "archival_insert", passageIds: passages.map((p) => p.id) };
    }
    case "archival_search": {
      const archiveIds = await services.archival.agentArchiveIds(req.agentId);
      const hits = await services.archival.search(archiveIds, {
        query: req.token,
        topK: ARCHIVAL_SEARCH_TOP_K,
      });
      return { kind: "archival_search", texts: hits.map((h) => h.passage.text) };
    }
  }
}

/** Serves one request on a node. */
export async function serve(services: Services, req: Request, bugs: BugSwitches): Promise<Reply> {
  try {
    return { ok: true, value: await serveOnce(services, req, bugs) };
  } catch (err) {
    const reply = errorReply(err);
    // Planted bug: a retryable failure of a non-idempotent request is retried here, on the server,
    // with no way to know whether the first attempt already took effect.
    if (
      bugs.doubleApplyOnRetry &&
      !reply.ok &&
      reply.retryable &&
      (req.kind === "send" || req.kind === "archival_insert")
    ) {
      try {
        return { ok: true, value: await serveOnce(services, req, bugs) };
      } catch (again) {
        return errorReply(again);
      }
    }
    return reply;
  }
}
