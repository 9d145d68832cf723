// Records → Letta's wire shapes (AgentState, Block, Tool, MCP server). Internal fields (versions,
// *_ms) stay inside; every field Letta's schemas require is present; secrets are masked
// (core/secrets.ts).
import type { AgentView } from "../agent/agents.ts";
import { presentEnvVars } from "../agent/env-vars.ts";
import { isoDate } from "../agent/letta-messages.ts";
import { maskSecret, maskSecretValues } from "../core/secrets.ts";
import type { BlockRecord, McpServerRecord, RunRecord, ToolRecord } from "../storage/types.ts";

export function presentBlock(block: BlockRecord): Record<string, unknown> {
  return {
    id: block.id,
    label: block.label,
    value: block.value,
    limit: block.limit,
    description: block.description,
    read_only: block.read_only,
    metadata: block.metadata,
    is_template: block.is_template,
    template_name: block.template_name,
    hidden: block.hidden,
    tags: block.tags,
    project_id: block.project_id,
    template_id: null,
    base_template_id: null,
    deployment_id: null,
    entity_id: null,
    preserve_on_migration: false,
    created_by_id: null,
    last_updated_by_id: null,
    created_at: isoDate(block.created_at_ms),
    updated_at: isoDate(block.updated_at_ms),
  };
}

export function presentTool(tool: ToolRecord): Record<string, unknown> {
  return {
    id: tool.id,
    tool_type: tool.tool_type,
    description: tool.description,
    source_type: tool.source_type,
    name: tool.name,
    tags: tool.tags,
    source_code: tool.source_code,
    json_schema: tool.json_schema,
    args_json_schema: tool.args_json_schema,
    return_char_limit: tool.return_char_limit,
    pip_requirements: tool.pip_requirements,
    npm_requirements: tool.npm_requirements,
    default_requires_approval: tool.default_requires_approval,
    enable_parallel_execution: tool.enable_parallel_execution,
    created_by_id: null,
    last_updated_by_id: null,
    metadata_: tool.metadata,
    project_id: null,
    created_at: isoDate(tool.created_at_ms),
    updated_at: isoDate(tool.updated_at_ms),
  };
}

function handleOf(config: Record<string, unknown> | null, typeKey: string, modelKey: string): string | null {
  if (config === null) return null;
  if (typeof config.handle === "string") return config.handle;
  return typeof config[typeKey] === "string" && typeof config[modelKey] === "string"
    ? `${config[typeKey]}/${config[modelKey]}`
    : null;
}

export function presentAgent({ agent, blocks, tools }: AgentView): Record<string, unknown> {
  const presentedBlocks = blocks.map(presentBlock);
  return {
    id: agent.id,
    name: agent.name,
    description: agent.description,
    system: agent.system,
    agent_type: agent.agent_type,
    llm_config: agent.llm_config,
    embedding_config: agent.embedding_config,
    model: handleOf(agent.llm_config, "model_endpoint_type", "model"),
    embedding: handleOf(agent.embedding_config, "embedding_endpoint_type", "embedding_model"),
    model_settings: null,
    compaction_settings: null,
    response_format: null,
    tags: agent.tags,
    metadata: agent.metadata,
    tool_rules: agent.tool_rules,
    message_ids: agent.message_ids,
    memory: {
      agent_type: agent.agent_type,
      git_enabled: false,
      blocks: presentedBlocks,
      file_blocks: [],
      prompt_template: "",
    },
    blocks: presentedBlocks,
    tools: tools.map(presentTool),
    sources: [],
    identity_ids: [],
    identities: [],
    project_id: null,
    template_id: null,
    base_template_id: null,
    deployment_id: null,
    entity_id: null,
    created_by_id: null,
    last_updated_by_id: null,
    pending_approval: null,
    message_buffer_autoclear: false,
    enable_sleeptime: null,
    multi_agent_group: null,
    managed_group: null,
    last_run_completion: null,
    last_run_duration_ms: null,
    last_stop_reason: null,
    timezone: "UTC",
    max_files_open: null,
    per_file_view_window_char_limit: null,
    hidden: null,
    ...agent.extra,
    // Secrets are write-only: names shown, values masked.
    tool_exec_environment_variables: presentEnvVars(agent.extra.tool_exec_environment_variables, agent.id),
    secrets: presentEnvVars(agent.extra.secrets, agent.id),
    created_at: isoDate(agent.created_at_ms),
    updated_at: isoDate(agent.updated_at_ms),
  };
}

export function presentRun(run: RunRecord): Record<string, unknown> {
  return {
    id: run.id,
    agent_id: run.agent_id,
    status: run.status,
    background: run.background,
    metadata: run.metadata,
    request_config: run.request_config,
    stop_reason: run.stop_reason,
    created_at: isoDate(run.created_at_ms),
    completed_at: run.completed_at_ms === null ? null : isoDate(run.completed_at_ms),
    conversation_id: null,
    base_template_id: null,
    callback_url: null,
    callback_sent_at: null,
    callback_status_code: null,
    callback_error: null,
    ttft_ns: null,
    total_duration_ns: null,
    usage: run.usage,
    error: run.error,
  };
}

/** An MCP server's config as a read shows it: the auth token, header values and env values masked. */
export function presentMcpConfig(config: Record<string, unknown>): Record<string, unknown> {
  const shown = { ...config };
  if ("auth_token" in shown) shown.auth_token = maskSecret(shown.auth_token);
  if ("custom_headers" in shown) shown.custom_headers = maskSecretValues(shown.custom_headers);
  if ("env" in shown) shown.env = maskSecretValues(shown.env);
  return shown;
}

/** Letta's MCPServer (the /v1/mcp-servers shape). */
export function presentMcpServer(server: McpServerRecord): Record<string, unknown> {
  return {
    id: server.id,
    server_name: server.server_name,
    mcp_server_type: server.mcp_server_type,
    ...presentMcpConfig(server.config),
  };
}
