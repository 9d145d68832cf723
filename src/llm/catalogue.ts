// The models Kelpie offers, in Letta's shapes: a full `llm_config` for a handle (LLMConfig),
// `GET /v1/models/` entries (Model) and embedding configs (EmbeddingConfig). A small built-in
// catalogue per hosted provider; local servers' models are not listed (we do not query them).
import { localEmbeddingConfig } from "../memory/embedders.ts";
import { type LlmProvidersConfig, OPENAI_PUBLIC_BASE_URL } from "./config.ts";
import { type EndpointKind, endpointKindOf, endpointTypeOfHandleProvider, parseHandle } from "./handles.ts";

/** For hosted models missing from the catalogue. */
export const CONTEXT_WINDOW_TOKENS_HOSTED_DEFAULT = 128_000;
/** For local models (Ollama, vLLM, …): conservative, since many serve small windows; set context_window to widen. */
export const CONTEXT_WINDOW_TOKENS_LOCAL_DEFAULT = 32_768;
export const EMBEDDING_CHUNK_SIZE_DEFAULT = 300; // Letta's EmbeddingConfig default
export const EMBEDDING_BATCH_SIZE_DEFAULT = 32; // Letta's EmbeddingConfig default
/** What Letta writes as Anthropic's model_endpoint. */
export const ANTHROPIC_LETTA_ENDPOINT = "https://api.anthropic.com/v1";

interface CatalogueModel {
  name: string;
  contextWindowTokens: number;
  maxTokens: number | null;
}

const CATALOGUE: Partial<Record<EndpointKind, CatalogueModel[]>> = {
  openai: [
    { name: "gpt-4o-mini", contextWindowTokens: 128_000, maxTokens: null },
    { name: "gpt-4o", contextWindowTokens: 128_000, maxTokens: null },
    { name: "gpt-4.1", contextWindowTokens: 256_000, maxTokens: 8_192 },
    { name: "gpt-5", contextWindowTokens: 272_000, maxTokens: 16_384 },
    { name: "gpt-5-mini", contextWindowTokens: 272_000, maxTokens: 16_384 },
  ],
  // The SDK marks claude-sonnet-4-5 deprecated (it warns on stderr per call); it is what Letta
  // clients ask for by default, so it stays listed.
  anthropic: [
    { name: "claude-sonnet-4-5", contextWindowTokens: 200_000, maxTokens: 8_192 },
    { name: "claude-sonnet-4-6", contextWindowTokens: 200_000, maxTokens: 8_192 },
    { name: "claude-haiku-4-5", contextWindowTokens: 200_000, maxTokens: 8_192 },
  ],
};

const EMBEDDING_CATALOGUE = [
  { name: "text-embedding-3-small", dim: 1536 },
  { name: "text-embedding-3-large", dim: 3072 },
  { name: "text-embedding-ada-002", dim: 1536 },
];

/** Letta's LLMConfig, every field (snake_case, as on the wire). */
export type LettaLlmConfig = {
  model: string;
  display_name: string | null;
  model_endpoint_type: string;
  model_endpoint: string | null;
  provider_name: string | null;
  provider_category: "base" | "byok" | null;
  model_wrapper: string | null;
  context_window: number;
  put_inner_thoughts_in_kwargs: boolean | null;
  handle: string | null;
  temperature: number;
  max_tokens: number | null;
  enable_reasoner: boolean;
  reasoning_effort: string | null;
  max_reasoning_tokens: number;
  effort: string | null;
  frequency_penalty: number | null;
  compatibility_type: string | null;
  verbosity: string | null;
  tier: string | null;
  parallel_tool_calls: boolean | null;
  response_format: unknown;
  strict: boolean;
  return_logprobs: boolean;
  top_logprobs: number | null;
  return_token_ids: boolean;
  tool_call_parser: string | null;
};

/** Letta's Model, as `GET /v1/models/` lists it. */
export type LettaModel = LettaLlmConfig & {
  name: string;
  provider_type: string;
  model_type: "llm";
  max_context_window: number;
};

/** Letta's EmbeddingConfig. */
export type LettaEmbeddingConfig = {
  embedding_endpoint_type: string;
  embedding_endpoint: string | null;
  embedding_model: string;
  embedding_dim: number;
  embedding_chunk_size: number | null;
  handle: string | null;
  batch_size: number;
  azure_endpoint: string | null;
  azure_version: string | null;
  azure_deployment: string | null;
};

export function catalogueModel(kind: EndpointKind | undefined, model: string): CatalogueModel | undefined {
  return kind === undefined ? undefined : CATALOGUE[kind]?.find((m) => m.name === model);
}

export function contextWindowTokensDefault(kind: EndpointKind | undefined, model: string): number {
  const known = catalogueModel(kind, model);
  if (known !== undefined) return known.contextWindowTokens;
  return kind === "ollama" || kind === "openai-compatible"
    ? CONTEXT_WINDOW_TOKENS_LOCAL_DEFAULT
    : CONTEXT_WINDOW_TOKENS_HOSTED_DEFAULT;
}

/** The model_endpoint Letta clients see: public endpoints for hosted providers, else ours. */
function endpointFor(kind: EndpointKind | undefined, config: LlmProvidersConfig | undefined): string | null {
  switch (kind) {
    case "openai":
      return OPENAI_PUBLIC_BASE_URL;
    case "anthropic":
      return ANTHROPIC_LETTA_ENDPOINT;
    case "ollama":
      return config?.ollama.baseUrl ?? null;
    case "openai-compatible":
      return config?.openaiCompatible.baseUrl ?? null;
    case undefined:
      return null;
  }
}

/**
 * A complete Letta `llm_config` for a handle, with LLMConfig's schema defaults. Two deliberate
 * departures: `enable_reasoner` is false (Kelpie does not request extended thinking) and
 * `put_inner_thoughts_in_kwargs` is false (as Letta itself sets it for current models).
 */
export function defaultLlmConfig(handle: string, config?: LlmProvidersConfig): LettaLlmConfig {
  const { provider, model } = parseHandle(handle);
  const endpointType = endpointTypeOfHandleProvider(provider);
  const kind = endpointKindOf(endpointType);
  return {
    model,
    display_name: model,
    model_endpoint_type: endpointType,
    model_endpoint: endpointFor(kind, config),
    provider_name: provider,
    provider_category: "base",
    model_wrapper: null,
    context_window: contextWindowTokensDefault(kind, model),
    put_inner_thoughts_in_kwargs: false,
    handle: `${provider}/${model}`,
    temperature: 1,
    max_tokens: catalogueModel(kind, model)?.maxTokens ?? null,
    enable_reasoner: false,
    reasoning_effort: null,
    max_reasoning_tokens: 0,
    effort: null,
    frequency_penalty: null,
    compatibility_type: null,
    verbosity: null,
    tier: null,
    parallel_tool_calls: false,
    response_format: null,
    strict: false,
    return_logprobs: false,
    top_logprobs: null,
    return_token_ids: false,
    tool_call_parser: null,
  };
}

/** Models of the hosted providers that have a key configured, in `GET /v1/models/` shape. */
export function listModels(config: LlmProvidersConfig): LettaModel[] {
  const configured: ("openai" | "anthropic")[] = [];
  if (config.openai.apiKey !== undefined) configured.push("openai");
  if (config.anthropic.apiKey !== undefined) configured.push("anthropic");
  return configured.flatMap((provider) =>
    (CATALOGUE[provider] ?? []).map((m): LettaModel => {
      const llmConfig = defaultLlmConfig(`${provider}/${m.name}`, config);
      return {
        ...llmConfig,
        name: m.name,
        provider_type: provider,
        model_type: "llm",
        max_context_window: m.contextWindowTokens,
      };
    }),
  );
}

/** The local model (always there), then OpenAI's embedding models when OpenAI has a key. */
export function listEmbeddingModels(config: LlmProvidersConfig): LettaEmbeddingConfig[] {
  const local = localEmbeddingConfig() as LettaEmbeddingConfig;
  if (config.openai.apiKey === undefined) return [local];
  return [
    local,
    ...EMBEDDING_CATALOGUE.map((m) => ({
      embedding_endpoint_type: "openai",
      embedding_endpoint: OPENAI_PUBLIC_BASE_URL,
      embedding_model: m.name,
      embedding_dim: m.dim,
      embedding_chunk_size: EMBEDDING_CHUNK_SIZE_DEFAULT,
      handle: `openai/${m.name}`,
      batch_size: EMBEDDING_BATCH_SIZE_DEFAULT,
      azure_endpoint: null,
      azure_version: null,
      azure_deployment: null,
    })),
  ];
}
