// Turns what a client sent (a model handle such as "openai/gpt-4o-mini", and/or a full Letta
// llm_config) into the llm_config stored on the agent. Same for embeddings.
import { invalidField } from "../core/errors.ts";
import { parseHandle } from "../llm/handles.ts";
import { defaultLlmConfig, type LlmProvidersConfig, listEmbeddingModels } from "../llm/registry.ts";
import { isLocalEmbedding, localEmbeddingConfig } from "../memory/embedders.ts";
import type { ModelResolver } from "./agents.ts";
import { EMBEDDING_HANDLE_DEFAULT, MODEL_HANDLE_DEFAULT } from "./defaults.ts";

const EMBEDDING_DIM_DEFAULT = 1536;
const EMBEDDING_CHUNK_SIZE_DEFAULT = 300;
const EMBEDDING_BATCH_SIZE_DEFAULT = 32;

function handleOrError(handle: string, field: string): { provider: string; model: string } {
  try {
    return parseHandle(handle);
  } catch {
    throw invalidField(["body", field], `must be a handle like 'provider/model', got '${handle}'`);
  }
}

export class HandleModelResolver implements ModelResolver {
  constructor(private readonly llm: LlmProvidersConfig) {}

  llmConfig(
    handle: string | undefined,
    config: Record<string, unknown> | undefined,
  ): Record<string, unknown> {
    if (handle === undefined && config !== undefined && typeof config.model === "string") {
      const type = typeof config.model_endpoint_type === "string" ? config.model_endpoint_type : "openai";
      const base = this.defaults(`${type}/${config.model}`);
      return { ...base, ...config, handle: config.handle ?? base.handle };
    }
    return { ...this.defaults(handle ?? MODEL_HANDLE_DEFAULT), ...(config ?? {}) };
  }

  private defaults(handle: string): Record<string, unknown> {
    handleOrError(handle, "model");
    return defaultLlmConfig(handle, this.llm);
  }

  embeddingConfig(
    handle: string | undefined,
    config: Record<string, unknown> | undefined,
  ): Record<string, unknown> {
    if (handle === undefined && config !== undefined) {
      if (typeof config.embedding_model !== "string") {
        throw invalidField(["body", "embedding_config", "embedding_model"], "field required", "missing");
      }
      return {
        embedding_chunk_size: EMBEDDING_CHUNK_SIZE_DEFAULT,
        batch_size: EMBEDDING_BATCH_SIZE_DEFAULT,
        ...config,
      };
    }
    const wanted = handle ?? EMBEDDING_HANDLE_DEFAULT;
    if (isLocalEmbedding({ handle: wanted })) return { ...localEmbeddingConfig(), ...(config ?? {}) };
    const { provider, model } = handleOrError(wanted, "embedding");
    const known = listEmbeddingModels({
      ...this.llm,
      openai: { ...this.llm.openai, apiKey: "catalogue" },
    }).find((m) => m.handle === wanted);
    return {
      embedding_endpoint_type: provider,
      embedding_endpoint: known?.embedding_endpoint ?? null,
      embedding_model: model,
      embedding_dim: known?.embedding_dim ?? EMBEDDING_DIM_DEFAULT,
      embedding_chunk_size: EMBEDDING_CHUNK_SIZE_DEFAULT,
      handle: `${provider}/${model}`,
      batch_size: EMBEDDING_BATCH_SIZE_DEFAULT,
      azure_endpoint: null,
      azure_version: null,
      azure_deployment: null,
      ...(config ?? {}),
    };
  }
}
