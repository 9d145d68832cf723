// Letta names a model by a handle, "provider/model-name", and an endpoint by model_endpoint_type.
// This maps both onto the wires Kelpie speaks.
import { invalidField } from "../core/errors.ts";

/** How Kelpie reaches an endpoint type: its own wire and the configuration it draws on. */
export type EndpointKind = "openai" | "anthropic" | "ollama" | "openai-compatible";

const KIND_BY_ENDPOINT_TYPE: Record<string, EndpointKind> = {
  openai: "openai",
  anthropic: "anthropic",
  ollama: "ollama",
  vllm: "openai-compatible",
  lmstudio: "openai-compatible",
  "lmstudio-chatcompletions": "openai-compatible",
  llamacpp: "openai-compatible",
};

export const SUPPORTED_ENDPOINT_TYPES = Object.keys(KIND_BY_ENDPOINT_TYPE);

// Handle prefixes spelled differently from the model_endpoint_type they stand for
// (Letta's provider type for LM Studio is "lmstudio_openai").
const ENDPOINT_TYPE_BY_HANDLE_PROVIDER: Record<string, string> = { lmstudio_openai: "lmstudio" };

export function endpointKindOf(endpointType: string): EndpointKind | undefined {
  return Object.hasOwn(KIND_BY_ENDPOINT_TYPE, endpointType) ? KIND_BY_ENDPOINT_TYPE[endpointType] : undefined;
}

export function endpointTypeOfHandleProvider(provider: string): string {
  return ENDPOINT_TYPE_BY_HANDLE_PROVIDER[provider] ?? provider;
}

/** "openai/gpt-4o-mini" → { provider: "openai", model: "gpt-4o-mini" }; the model may hold slashes. */
export function parseHandle(handle: string): { provider: string; model: string } {
  const slash = handle.indexOf("/");
  if (slash <= 0 || slash === handle.length - 1) {
    throw invalidField(["body", "model"], `must be a handle like 'provider/model', got '${handle}'`);
  }
  return { provider: handle.slice(0, slash), model: handle.slice(slash + 1) };
}
