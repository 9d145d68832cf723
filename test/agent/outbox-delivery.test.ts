// Local delivery of an async message: delivered only once the target committed a step with it.
// Found by the simulation (seed 7): a first step whose commit failed still counted in the usage,
// so the entry was deleted as delivered and the acknowledged message was lost.
import { describe, expect, it } from "vitest";
import type { MessageService } from "../../src/agent/message-service.ts";
import { localDelivery } from "../../src/agent/outbox.ts";
import type { TurnResult } from "../../src/agent/turn.ts";
import { KelpieError } from "../../src/core/errors.ts";
import type { OutboxRecord } from "../../src/storage/types.ts";

const entry: OutboxRecord = {
  id: "outbox-1",
  agent_id: "agent-a",
  target_agent_id: "agent-b",
  text: "hello",
  call_depth: 0,
  attempts: 0,
  last_error: null,
  next_attempt_at_ms: 0,
  created_at_ms: 0,
};

function deliveryAnswering(result: TurnResult) {
  const messages = { send: async () => result } as unknown as MessageService;
  return localDelivery(() => messages);
}

const usage = (steps: number) => ({
  prompt_tokens: 0,
  completion_tokens: 0,
  total_tokens: 0,
  step_count: steps,
});

describe("local outbox delivery", () => {
  it("fails (to be tried again) when the target's first step was taken but its commit failed", async () => {
    const error = new KelpieError("STORAGE_UNAVAILABLE", "simulated write failure in commit");
    const deliver = deliveryAnswering({
      runId: "run-1",
      messages: [],
      stopReason: "error",
      usage: usage(1),
      error,
    });
    await expect(deliver(entry)).rejects.toThrow("simulated write failure");
  });

  it("succeeds once a step committed, whatever became of the rest of the turn", async () => {
    const error = new KelpieError("LLM_ERROR", "the model provider answered 503");
    const committed = [{ id: "message-1", message_type: "assistant_message", date: "" }];
    const deliver = deliveryAnswering({
      runId: "run-1",
      messages: committed,
      stopReason: "error",
      usage: usage(2),
      error,
    });
    await expect(deliver(entry)).resolves.toBeUndefined();
  });
});
