// Rows for tests that write storage directly, without the agent service.
import type { AgentRecord } from "../../src/storage/types.ts";

export type StoredAgent = Omit<AgentRecord, "block_ids" | "tool_ids">;

/** A minimal agent row: no model, no messages, everything empty. */
export function storedAgent(id: string, name: string = id): StoredAgent {
  return {
    id,
    name,
    agent_type: "memgpt_v2_agent",
    system: "",
    description: null,
    metadata: {},
    tags: [],
    llm_config: null,
    embedding_config: null,
    tool_rules: [],
    message_ids: [],
    extra: {},
    created_at_ms: 0,
    updated_at_ms: 0,
  };
}
