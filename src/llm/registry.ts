// Which provider and model serve an agent: from a Letta handle ("openai/gpt-4o-mini") or a stored
// Letta llm_config. Resolution never needs a key; a provider without one resolves to a provider
// whose calls fail with LLM_NOT_CONFIGURED naming the variable to set, so the server boots bare.
//
// Endpoints: an llm_config.model_endpoint equal to the provider's public default (what Letta
// clients send) or to our configured base URL goes to the configured base URL, with its key. Any
// other explicit endpoint is used as given, and gets no configured key: a client must not be able
// to send our credentials to a server of its choosing.
import type { Clock } from "../core/clock.ts";
import { invalidField, KelpieError } from "../core/errors.ts";
import type { Rng } from "../core/rng.ts";
import { ANTHROPIC_MAX_TOKENS_DEFAULT, createAnthropicProvider } from "./anthropic.ts";
import { contextWindowTokensDefault, defaultLlmConfig } from "./catalogue.ts";
import {
  ANTHROPIC_PUBLIC_BASE_URLS,
  API_KEY_PLACEHOLDER,
  anthropicSdkBaseUrl,
  type LlmProvidersConfig,
  normalizeUrl,
  OPENAI_PUBLIC_BASE_URL,
  ollamaOpenAiBaseUrl,
} from "./config.ts";
import {
  endpointKindOf,
  endpointTypeOfHandleProvider,
  parseHandle,
  SUPPORTED_ENDPOINT_TYPES,
} from "./handles.ts";
import { createOpenAiProvider } from "./openai.ts";
import { LLM_CALL_TIMEOUT_MS, type RetryNotice, type RetryPolicy, retryingProvider } from "./retry.ts";
import { type ChatEvent, LLM_SPEC, type LlmProvider } from "./types.ts";

export {
  defaultLlmConfig,
  type LettaEmbeddingConfig,
  type LettaLlmConfig,
  type LettaModel,
  listEmbeddingModels,
  listModels,
} from "./catalogue.ts";
export { type LlmProvidersConfig, llmConfigFromEnv } from "./config.ts";
export { ANTHROPIC_MAX_TOKENS_DEFAULT };

export type ProviderName = "openai" | "anthropic" | "openai-compatible";

/** Which configured key a request may carry: only ever to the base URL it was configured for. */
type Credential = "openai" | "anthropic" | "openai-compatible" | "none";

export interface ResolvedModel {
  /** The adapter that speaks to it. */
  providerName: ProviderName;
  /** Letta's model_endpoint_type ("openai", "anthropic", "ollama", "vllm", …). */
  endpointType: string;
  model: string;
  handle: string;
  /** Where requests go; undefined when the endpoint is not configured. */
  baseUrl: string | undefined;
  credential: Credential;
  /** Why calls will fail with LLM_NOT_CONFIGURED; undefined when the provider is usable. */
  notConfigured: string | undefined;
  contextWindowTokens: number;
  maxTokens: number | undefined;
  temperature: number | undefined;
  parallelToolCalls: boolean | undefined;
  putInnerThoughtsInKwargs: boolean;
}

function stringField(config: Readonly<Record<string, unknown>>, name: string): string | undefined {
  const value = config[name];
  return typeof value === "string" && value.trim() !== "" ? value : undefined;
}

function numberField(config: Readonly<Record<string, unknown>>, name: string): number | undefined {
  const value = config[name];
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

function booleanField(config: Readonly<Record<string, unknown>>, name: string): boolean | undefined {
  const value = config[name];
  return typeof value === "boolean" ? value : undefined;
}

interface Route {
  providerName: ProviderName;
  baseUrl: string | undefined;
  credential: Credential;
  notConfigured: string | undefined;
}

function keyMissing(apiKey: string | undefined, provider: string, envVar: string): string | undefined {
  return apiKey === undefined ? `${provider} is not configured: set ${envVar}` : undefined;
}

function routeFor(endpointType: string, explicit: string | undefined, config: LlmProvidersConfig): Route {
  const kind = endpointKindOf(endpointType);
  switch (kind) {
    case "openai": {
      if (
        explicit === undefined ||
        explicit === OPENAI_PUBLIC_BASE_URL ||
        explicit === config.openai.baseUrl
      ) {
        const notConfigured = keyMissing(config.openai.apiKey, "OpenAI", "OPENAI_API_KEY");
        return {
          providerName: "openai",
          baseUrl: config.openai.baseUrl,
          credential: "openai",
          notConfigured,
        };
      }
      const credential = explicit === config.openaiCompatible.baseUrl ? "openai-compatible" : "none";
      return { providerName: "openai-compatible", baseUrl: explicit, credential, notConfigured: undefined };
    }
    case "anthropic": {
      const sdkUrl = explicit === undefined ? undefined : anthropicSdkBaseUrl(explicit);
      const isPublic = (ANTHROPIC_PUBLIC_BASE_URLS as readonly string[]).includes(explicit ?? "");
      if (sdkUrl === undefined || isPublic || sdkUrl === config.anthropic.baseUrl) {
        const notConfigured = keyMissing(config.anthropic.apiKey, "Anthropic", "ANTHROPIC_API_KEY");
        return {
          providerName: "anthropic",
          baseUrl: config.anthropic.baseUrl,
          credential: "anthropic",
          notConfigured,
        };
      }
      return { providerName: "anthropic", baseUrl: sdkUrl, credential: "none", notConfigured: undefined };
    }
    case "ollama": {
      const baseUrl = explicit === undefined ? config.ollama.baseUrl : ollamaOpenAiBaseUrl(explicit);
      const notConfigured =
        baseUrl === undefined ? "Ollama is not configured: set OLLAMA_BASE_URL" : undefined;
      return { providerName: "openai-compatible", baseUrl, credential: "none", notConfigured };
    }
    case "openai-compatible": {
      const baseUrl = explicit ?? config.openaiCompatible.baseUrl;
      const credential =
        baseUrl !== undefined && baseUrl === config.openaiCompatible.baseUrl ? "openai-compatible" : "none";
      const notConfigured =
        baseUrl === undefined
          ? `${endpointType} is not configured: set KELPIE_OPENAI_COMPATIBLE_BASE_URL (or the agent's model_endpoint)`
          : undefined;
      return { providerName: "openai-compatible", baseUrl, credential, notConfigured };
    }
    case undefined: {
      const supported = SUPPORTED_ENDPOINT_TYPES.join(", ");
      const notConfigured = `model_endpoint_type '${endpointType}' is not supported by Kelpie (supported: ${supported})`;
      return { providerName: "openai-compatible", baseUrl: undefined, credential: "none", notConfigured };
    }
  }
}

/**
 * Resolves a handle or a Letta llm_config. In an llm_config, `model` and `model_endpoint_type`
 * win over `handle`, which fills them in when missing. Throws VALIDATION only for a malformed handle.
 */
export function resolveModel(
  target: string | Readonly<Record<string, unknown>>,
  config: LlmProvidersConfig,
): ResolvedModel {
  const fields: Readonly<Record<string, unknown>> =
    typeof target === "string" ? defaultLlmConfig(target, config) : target;
  let endpointType = stringField(fields, "model_endpoint_type");
  let model = stringField(fields, "model");
  const handle = stringField(fields, "handle");
  if (endpointType === undefined || model === undefined) {
    if (handle === undefined) {
      const missing = model === undefined ? "model" : "model_endpoint_type";
      throw invalidField(["body", "llm_config", missing], "field required (or give a handle)", "missing");
    }
    const parsed = parseHandle(handle);
    endpointType ??= endpointTypeOfHandleProvider(parsed.provider);
    model ??= parsed.model;
  }
  const endpoint = stringField(fields, "model_endpoint");
  const route = routeFor(endpointType, endpoint === undefined ? undefined : normalizeUrl(endpoint), config);
  return {
    ...route,
    endpointType,
    model,
    handle: handle ?? `${endpointType}/${model}`,
    contextWindowTokens:
      numberField(fields, "context_window") ??
      contextWindowTokensDefault(endpointKindOf(endpointType), model),
    maxTokens: numberField(fields, "max_tokens"),
    temperature: numberField(fields, "temperature"),
    parallelToolCalls: booleanField(fields, "parallel_tool_calls"),
    putInnerThoughtsInKwargs: booleanField(fields, "put_inner_thoughts_in_kwargs") ?? false,
  };
}

export interface LlmProviderDeps {
  clock: Clock;
  /** Retry jitter; pass a fork for this concern (`env.rng.fork("llm")`). */
  rng: Rng;
  /** Transport for the SDKs (defaults to the global fetch). */
  fetch?: typeof fetch;
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  streamIdleTimeoutMs?: number;
  onRetry?: (notice: RetryNotice) => void;
}

/** A provider whose every call fails with LLM_NOT_CONFIGURED: what a keyless provider resolves to. */
export function unconfiguredProvider(name: string, message: string): LlmProvider {
  const fail = () => new KelpieError("LLM_NOT_CONFIGURED", message);
  return {
    spec: LLM_SPEC,
    name,
    complete: () => Promise.reject(fail()),
    // biome-ignore lint/correctness/useYield: this stream fails before its first event
    stream: async function* (): AsyncGenerator<ChatEvent> {
      throw fail();
    },
  };
}

function apiKeyFor(credential: Credential, config: LlmProvidersConfig): string | undefined {
  switch (credential) {
    case "openai":
      return config.openai.apiKey;
    case "anthropic":
      return config.anthropic.apiKey;
    case "openai-compatible":
      return config.openaiCompatible.apiKey;
    case "none":
      return undefined;
  }
}

/** The provider for a resolved model, with our retries on the injected clock. */
export function createLlmProvider(
  resolved: ResolvedModel,
  config: LlmProvidersConfig,
  deps: LlmProviderDeps,
): LlmProvider {
  if (resolved.notConfigured !== undefined || resolved.baseUrl === undefined) {
    return unconfiguredProvider(
      resolved.providerName,
      resolved.notConfigured ?? `${resolved.endpointType} has no endpoint`,
    );
  }
  const apiKey = apiKeyFor(resolved.credential, config);
  const timeoutMs = deps.timeoutMs ?? LLM_CALL_TIMEOUT_MS;
  const transport = deps.fetch === undefined ? {} : { fetch: deps.fetch };
  const inner =
    resolved.providerName === "anthropic"
      ? createAnthropicProvider({
          baseUrl: resolved.baseUrl,
          apiKey: apiKey ?? API_KEY_PLACEHOLDER,
          timeoutMs,
          ...transport,
        })
      : createOpenAiProvider({
          name: resolved.providerName,
          baseUrl: resolved.baseUrl,
          apiKey,
          timeoutMs,
          ...transport,
        });
  return retryingProvider(inner, {
    clock: deps.clock,
    rng: deps.rng,
    ...(deps.retry === undefined ? {} : { policy: deps.retry }),
    ...(deps.streamIdleTimeoutMs === undefined ? {} : { streamIdleTimeoutMs: deps.streamIdleTimeoutMs }),
    ...(deps.onRetry === undefined ? {} : { onRetry: deps.onRetry }),
  });
}

/** Resolve and build in one step: what the agent loop calls per turn. */
export function resolveLlm(
  target: string | Readonly<Record<string, unknown>>,
  config: LlmProvidersConfig,
  deps: LlmProviderDeps,
): { model: ResolvedModel; provider: LlmProvider } {
  const model = resolveModel(target, config);
  return { model, provider: createLlmProvider(model, config, deps) };
}
