// GET /v1/agents/{id}/context: what the agent's next prompt holds and how many tokens each part
// takes, in Letta's ContextWindowOverview shape.
import type { Env } from "../core/env.ts";
import { type LlmProvidersConfig, resolveModel } from "../llm/registry.ts";
import { countPromptTokens, countTextTokens, encodingForModel } from "../llm/tokens.ts";
import { usesHeartbeats, withHeartbeat } from "../tools/builtins.ts";
import type { AgentService } from "./agents.ts";
import { toChatMessages } from "./history.ts";
import { toLettaMessages } from "./letta-messages.ts";
import { compileMemoryBlocks, compileSystemMessage } from "./prompt.ts";

export class ContextService {
  constructor(
    private readonly env: Env,
    private readonly agents: AgentService,
    private readonly llm: LlmProvidersConfig,
  ) {}

  async overview(agentId: string): Promise<Record<string, unknown>> {
    const { agent, blocks, tools } = await this.agents.view(agentId);
    const model = resolveModel(agent.llm_config ?? "openai/gpt-4o-mini", this.llm);
    const encoding = encodingForModel(model.providerName, model.model);
    const inContext = await this.env.storage.getMessages(agent.message_ids);
    const recallCount = await this.env.storage.countMessages(agentId);
    const system = compileSystemMessage(agent.system, blocks, {
      nowMs: this.env.clock.nowMs(),
      blocksUpdatedAtMs: Math.max(0, ...blocks.map((b) => b.updated_at_ms)),
      recallMessagesCount: recallCount,
      archivalPassagesCount: 0,
    });
    const coreMemory = compileMemoryBlocks(blocks);
    const functions = tools.map((t) => {
      const schema = t.json_schema as unknown as Parameters<typeof withHeartbeat>[0];
      return usesHeartbeats(agent.agent_type) && schema?.parameters ? withHeartbeat(schema) : schema;
    });
    const counted = countPromptTokens({
      providerName: model.providerName,
      model: model.model,
      system,
      messages: toChatMessages(inContext),
      tools: functions.map((f) => ({ name: f.name, description: f.description, parameters: f.parameters })),
    });
    return {
      context_window_size_max: model.contextWindowTokens,
      context_window_size_current: counted.totalTokens,
      num_messages: inContext.length,
      num_archival_memory: 0,
      num_recall_memory: recallCount,
      num_tokens_external_memory_summary: 0,
      external_memory_summary: "",
      num_tokens_system: countTextTokens(agent.system, encoding),
      system_prompt: agent.system,
      num_tokens_core_memory: countTextTokens(coreMemory, encoding),
      core_memory: coreMemory,
      num_tokens_summary_memory: 0,
      summary_memory: null,
      num_tokens_functions_definitions: counted.toolsTokens,
      functions_definitions: functions.map((f) => ({ type: "function", function: f })),
      num_tokens_messages: counted.messagesTokens,
      messages: inContext.flatMap((m) => toLettaMessages(m)),
      num_tokens_memory_filesystem: 0,
      memory_filesystem: null,
      num_tokens_tool_usage_rules: 0,
      tool_usage_rules: null,
      num_tokens_directories: 0,
      directories: null,
    };
  }
}
