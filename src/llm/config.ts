// Which LLM providers this server can reach, read once from the environment. A provider without a
// key is still listed here (with no key): the server boots without any, and calls to that provider
// fail with LLM_NOT_CONFIGURED naming the variable to set.
import { ConfigError } from "../config.ts";

/** Sent as the key to servers that need none (the SDKs insist on one). */
export const API_KEY_PLACEHOLDER = "kelpie-no-api-key";

export const OPENAI_PUBLIC_BASE_URL = "https://api.openai.com/v1";
/** Anthropic's public endpoint as Letta writes it (with /v1) and as the SDK takes it (without). */
export const ANTHROPIC_PUBLIC_BASE_URLS = [
  "https://api.anthropic.com/v1",
  "https://api.anthropic.com",
] as const;

export interface LlmProvidersConfig {
  openai: { apiKey: string | undefined; baseUrl: string };
  /** `baseUrl` as the Anthropic SDK takes it: without the trailing /v1. */
  anthropic: { apiKey: string | undefined; baseUrl: string };
  /** Ollama's OpenAI-compatible endpoint (…/v1); undefined when OLLAMA_BASE_URL is unset. */
  ollama: { baseUrl: string | undefined };
  /** vLLM, LM Studio, llama.cpp and the like; undefined when not configured. */
  openaiCompatible: { apiKey: string | undefined; baseUrl: string | undefined };
}

/** Trailing slashes removed, so that equal endpoints compare equal. */
export function normalizeUrl(url: string): string {
  return url.trim().replace(/\/+$/, "");
}

/** The Anthropic SDK appends /v1/messages itself, so a base URL given with /v1 loses it. */
export function anthropicSdkBaseUrl(url: string): string {
  return normalizeUrl(url).replace(/\/v1$/, "");
}

/** Ollama serves the OpenAI wire under /v1; Letta writes its endpoint without it. */
export function ollamaOpenAiBaseUrl(url: string): string {
  const base = normalizeUrl(url);
  return base.endsWith("/v1") ? base : `${base}/v1`;
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed === undefined || trimmed === "" ? undefined : trimmed;
}

function urlFromEnv(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = nonEmpty(env[name]);
  if (value === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${name} must be an http(s) URL, got '${value}'`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(`${name} must be an http(s) URL, got '${value}'`);
  }
  return normalizeUrl(value);
}

/** Every base URL the operator configured (or the public default): the egress policy trusts these. */
export function configuredBaseUrls(config: LlmProvidersConfig): string[] {
  return [
    config.openai.baseUrl,
    config.anthropic.baseUrl,
    config.ollama.baseUrl,
    config.openaiCompatible.baseUrl,
  ].filter((u): u is string => u !== undefined);
}

export function llmConfigFromEnv(env: NodeJS.ProcessEnv): LlmProvidersConfig {
  const ollamaBaseUrl = urlFromEnv(env, "OLLAMA_BASE_URL");
  return {
    openai: {
      apiKey: nonEmpty(env.OPENAI_API_KEY),
      baseUrl: urlFromEnv(env, "OPENAI_BASE_URL") ?? OPENAI_PUBLIC_BASE_URL,
    },
    anthropic: {
      apiKey: nonEmpty(env.ANTHROPIC_API_KEY),
      baseUrl: anthropicSdkBaseUrl(urlFromEnv(env, "ANTHROPIC_BASE_URL") ?? ANTHROPIC_PUBLIC_BASE_URLS[1]),
    },
    ollama: { baseUrl: ollamaBaseUrl === undefined ? undefined : ollamaOpenAiBaseUrl(ollamaBaseUrl) },
    openaiCompatible: {
      apiKey: nonEmpty(env.KELPIE_OPENAI_COMPATIBLE_API_KEY),
      baseUrl: urlFromEnv(env, "KELPIE_OPENAI_COMPATIBLE_BASE_URL"),
    },
  };
}
