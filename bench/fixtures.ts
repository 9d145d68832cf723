// Agents written straight into storage for benchmarks (two blocks each, like a typical agent).
import { SystemRng } from "../src/core/rng.ts";
import type { AgentRecord, BlockRecord, Mutation, Storage } from "../src/storage/types.ts";

const AGENTS_PER_COMMIT = 1_000;

export async function seedAgents(storage: Storage, count: number): Promise<string[]> {
  const rng = new SystemRng();
  const ids: string[] = [];
  for (let start = 0; start < count; start += AGENTS_PER_COMMIT) {
    const mutations: Mutation[] = [];
    for (let i = start; i < Math.min(count, start + AGENTS_PER_COMMIT); i++) {
      const id = `agent-${rng.uuid()}`;
      ids.push(id);
      const agent: Omit<AgentRecord, "block_ids" | "tool_ids"> = {
        id,
        name: `bench-${i}`,
        agent_type: "memgpt_v2_agent",
        system: "You are a helpful agent.",
        description: null,
        metadata: {},
        tags: [],
        llm_config: { model: "gpt-4o-mini", model_endpoint_type: "openai", context_window: 128000 },
        embedding_config: null,
        tool_rules: [],
        message_ids: [],
        extra: {},
        created_at_ms: 0,
        updated_at_ms: 0,
      };
      mutations.push({ op: "put_agent", agent, create: true });
      for (const label of ["persona", "human"]) {
        const block: BlockRecord = {
          id: `block-${rng.uuid()}`,
          label,
          value: `${label} of agent ${i}`,
          limit: 100_000,
          description: null,
          read_only: false,
          metadata: {},
          is_template: false,
          template_name: null,
          hidden: null,
          tags: [],
          project_id: null,
          version: 1,
          created_at_ms: 0,
          updated_at_ms: 0,
        };
        mutations.push(
          { op: "put_block", block, create: true },
          { op: "attach_block", agent_id: id, block_id: block.id },
        );
      }
    }
    await storage.commit(mutations);
  }
  return ids;
}
