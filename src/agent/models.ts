// Turns what a client sent (a model handle such as "openai/gpt-4o-mini", and/or a full Letta
// llm_config) into the llm_config stored on the agent. Same for embeddings.
import { invalidField } from "../core/errors.ts";
import type { ModelResolver } from "./agents.ts";
import { EMBEDDING_HANDLE_DEFAULT, MODEL_HANDLE_DEFAULT } from "./defaults.ts";

const CONTEXT_WINDOW_DEFAULT_TOKENS = 128_000;
const EMBEDDING_DIM_DEFAULT = 1536;
const EMBEDDING_CHUNK_SIZE_DEFAULT = 300;

const PUBLIC_ENDPOINTS: Record<string, string> = {
  openai: "https://api.openai.com/v1",
  anthropic: "https://api.anthropic.com/v1",
};

function splitHandle(handle: string, field: string): [string, string] {
  const slash = handle.indexOf("/");
  if (slash <= 0 || slash === handle.length - 1) {
    throw invalidField(["body", field], `must be a handle like 'provider/model', got '${handle}'`);
  }
  return [handle.slice(0, slash), handle.slice(slash + 1)];
}

export class HandleModelResolver implements ModelResolver {
  llmConfig(
    handle: string | undefined,
    config: Record<string, unknown> | undefined,
  ): Record<string, unknown> {
    if (handle === undefined && config !== undefined && typeof config.model === "string") {
      const type = typeof config.model_endpoint_type === "string" ? config.model_endpoint_type : "openai";
      return {
        ...this.llmConfig(`${type}/${config.model}`, undefined),
        ...config,
        handle: config.handle ?? `${type}/${config.model}`,
      };
    }
    const [provider, model] = splitHandle(handle ?? MODEL_HANDLE_DEFAULT, "model");
    return {
      model,
      display_name: model,
      model_endpoint_type: provider,
      model_endpoint: PUBLIC_ENDPOINTS[provider] ?? null,
      provider_name: provider,
      provider_category: "base",
      model_wrapper: null,
      context_window: CONTEXT_WINDOW_DEFAULT_TOKENS,
      put_inner_thoughts_in_kwargs: false,
      handle: `${provider}/${model}`,
      temperature: 0.7,
      max_tokens: provider === "anthropic" ? 8192 : null,
      enable_reasoner: false,
      reasoning_effort: null,
      max_reasoning_tokens: 0,
      parallel_tool_calls: false,
      ...(config ?? {}),
    };
  }

  embeddingConfig(
    handle: string | undefined,
    config: Record<string, unknown> | undefined,
  ): Record<string, unknown> {
    if (handle === undefined && config !== undefined) {
      if (typeof config.embedding_model !== "string") {
        throw invalidField(["body", "embedding_config", "embedding_model"], "field required", "missing");
      }
      return { embedding_chunk_size: EMBEDDING_CHUNK_SIZE_DEFAULT, batch_size: 32, ...config };
    }
    const [provider, model] = splitHandle(handle ?? EMBEDDING_HANDLE_DEFAULT, "embedding");
    return {
      embedding_endpoint_type: provider,
      embedding_endpoint: PUBLIC_ENDPOINTS[provider] ?? null,
      embedding_model: model,
      embedding_dim: EMBEDDING_DIM_DEFAULT,
      embedding_chunk_size: EMBEDDING_CHUNK_SIZE_DEFAULT,
      handle: `${provider}/${model}`,
      batch_size: 32,
      azure_endpoint: null,
      azure_version: null,
      azure_deployment: null,
      ...(config ?? {}),
    };
  }
}
