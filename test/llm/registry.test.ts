// How an agent's model is resolved: handles and Letta llm_configs, endpoints Letta clients send
// (public defaults go to our configured base URL, with our key; other endpoints as given, without
// it), providers without keys that fail clearly when called, and the Letta-shaped catalogue.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config.ts";
import { SystemClock } from "../../src/core/clock.ts";
import { KelpieError } from "../../src/core/errors.ts";
import { SeededRng } from "../../src/core/rng.ts";
import {
  createLlmProvider,
  defaultLlmConfig,
  listEmbeddingModels,
  listModels,
  llmConfigFromEnv,
  resolveLlm,
  resolveModel,
} from "../../src/llm/registry.ts";
import { type FakeLlm, startFakeLlm } from "../support/fake-llm/server.ts";
import { chat, eventsOf, FAST_RETRY, fakeConfig, neverAborted, rejectionOf } from "./support.ts";

const deps = () => ({ clock: new SystemClock(), rng: new SeededRng(3), retry: FAST_RETRY });
const bare = llmConfigFromEnv({});

interface SchemaObject {
  properties: Record<string, unknown>;
  required?: string[];
}
// Letta's published API spec lives in shared/, beside the repository.
const SPEC_URL = new URL("../../../shared/letta/openapi.json", import.meta.url);
const spec = JSON.parse(readFileSync(SPEC_URL, "utf8")) as {
  components: { schemas: Record<string, SchemaObject> };
};

/** Every field we emit is one Letta's schema names, and every required one is there. */
function expectLettaShape(value: Record<string, unknown>, schemaName: string) {
  const schema = spec.components.schemas[schemaName]!;
  for (const key of Object.keys(value))
    expect(Object.keys(schema.properties), `${schemaName}.${key}`).toContain(key);
  for (const key of schema.required ?? [])
    expect(value[key], `${schemaName}.${key} is required`).not.toBeUndefined();
}

let fake: FakeLlm;
beforeAll(async () => {
  fake = await startFakeLlm();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => fake.reset());

describe("llmConfigFromEnv", () => {
  it("boots with no keys at all, on the public endpoints", () => {
    expect(bare).toEqual({
      openai: { apiKey: undefined, baseUrl: "https://api.openai.com/v1" },
      anthropic: { apiKey: undefined, baseUrl: "https://api.anthropic.com" },
      ollama: { baseUrl: undefined },
      openaiCompatible: { apiKey: undefined, baseUrl: undefined },
    });
  });

  it("normalizes base URLs and treats empty variables as unset", () => {
    const config = llmConfigFromEnv({
      OPENAI_API_KEY: "",
      OPENAI_BASE_URL: "http://proxy:8080/v1/",
      ANTHROPIC_BASE_URL: "http://proxy:8080/v1",
      OLLAMA_BASE_URL: "http://localhost:11434",
    });
    expect(config.openai).toEqual({ apiKey: undefined, baseUrl: "http://proxy:8080/v1" });
    expect(config.anthropic.baseUrl).toBe("http://proxy:8080");
    expect(config.ollama.baseUrl).toBe("http://localhost:11434/v1");
  });

  it("rejects a base URL that is not http(s), naming the variable", () => {
    expect(() => llmConfigFromEnv({ OPENAI_BASE_URL: "localhost:8080" })).toThrow(ConfigError);
    expect(() => llmConfigFromEnv({ ANTHROPIC_BASE_URL: "not a url" })).toThrow(/ANTHROPIC_BASE_URL/);
  });
});

describe("resolveModel", () => {
  it("parses handles into provider, endpoint type and model", () => {
    expect(resolveModel("openai/gpt-4o-mini", bare)).toMatchObject({
      providerName: "openai",
      endpointType: "openai",
      model: "gpt-4o-mini",
      handle: "openai/gpt-4o-mini",
      contextWindowTokens: 128_000,
    });
    expect(resolveModel("anthropic/claude-sonnet-4-5", bare)).toMatchObject({
      providerName: "anthropic",
      model: "claude-sonnet-4-5",
      contextWindowTokens: 200_000,
      maxTokens: 8_192,
    });
    expect(resolveModel("ollama/llama3", bare)).toMatchObject({
      providerName: "openai-compatible",
      model: "llama3",
    });
    expect(resolveModel("openrouter/meta-llama/llama-3-70b", bare)).toMatchObject({
      endpointType: "openrouter",
      model: "meta-llama/llama-3-70b",
    });
    expect(resolveModel("lmstudio_openai/qwen", bare)).toMatchObject({ endpointType: "lmstudio" });
  });

  it("rejects a malformed handle as a validation error", () => {
    for (const handle of ["gpt-4o-mini", "/gpt-4o", "openai/"]) {
      const err = (() => {
        try {
          resolveModel(handle, bare);
        } catch (e) {
          return e as KelpieError;
        }
      })();
      expect(err?.code).toBe("VALIDATION");
    }
  });

  it("rejects an llm_config with neither a model nor a handle, naming the field", () => {
    expect(() => resolveModel({ model_endpoint_type: "openai" }, bare)).toThrow(
      /llm_config\.model: field required/,
    );
  });

  it("routes an llm_config with the public OpenAI endpoint to the configured base URL", () => {
    const config = fakeConfig(fake);
    const resolved = resolveModel(
      {
        model: "gpt-4o",
        model_endpoint_type: "openai",
        model_endpoint: "https://api.openai.com/v1/",
        context_window: 64_000,
      },
      config,
    );
    expect(resolved).toMatchObject({
      providerName: "openai",
      baseUrl: `${fake.url}/v1`,
      credential: "openai",
      contextWindowTokens: 64_000,
      notConfigured: undefined,
    });
  });

  it("routes both spellings of Anthropic's public endpoint to the configured base URL", () => {
    const config = fakeConfig(fake);
    for (const endpoint of ["https://api.anthropic.com/v1", "https://api.anthropic.com"]) {
      const resolved = resolveModel(
        {
          model: "claude-haiku-4-5",
          model_endpoint_type: "anthropic",
          model_endpoint: endpoint,
          context_window: 1,
        },
        config,
      );
      expect(resolved).toMatchObject({ baseUrl: fake.url, credential: "anthropic" });
    }
  });

  it("uses any other explicit endpoint as given, without our key", () => {
    const config = fakeConfig(fake);
    const openai = resolveModel(
      {
        model: "m",
        model_endpoint_type: "openai",
        model_endpoint: "http://elsewhere:9000/v1",
        context_window: 1,
      },
      config,
    );
    expect(openai).toMatchObject({
      providerName: "openai-compatible",
      baseUrl: "http://elsewhere:9000/v1",
      credential: "none",
    });
    const anthropic = resolveModel(
      {
        model: "m",
        model_endpoint_type: "anthropic",
        model_endpoint: "http://elsewhere:9000/v1",
        context_window: 1,
      },
      config,
    );
    expect(anthropic).toMatchObject({
      providerName: "anthropic",
      baseUrl: "http://elsewhere:9000",
      credential: "none",
    });
  });

  it("lets llm_config fields win over its handle, and fills gaps from the handle", () => {
    const resolved = resolveModel(
      {
        handle: "openai/gpt-4o-mini",
        model: "gpt-4o",
        temperature: 0.5,
        max_tokens: 1_000,
        parallel_tool_calls: true,
      },
      bare,
    );
    expect(resolved).toMatchObject({
      endpointType: "openai",
      model: "gpt-4o",
      handle: "openai/gpt-4o-mini",
      temperature: 0.5,
      maxTokens: 1_000,
      parallelToolCalls: true,
    });
  });

  it("talks to the configured base URL for a Letta llm_config, end to end", async () => {
    const config = fakeConfig(fake);
    const { provider } = resolveLlm(defaultLlmConfig("openai/gpt-4o-mini"), config, deps());
    const result = await provider.complete(chat("gpt-4o-mini", "routed"), neverAborted());
    expect(result.text).toBe("echo: routed");
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]?.headers.authorization).toBe("Bearer sk-test");
  });
});

describe("providers without configuration", () => {
  const cases = [
    { target: "openai/gpt-4o-mini", envVar: "OPENAI_API_KEY" },
    { target: "anthropic/claude-sonnet-4-5", envVar: "ANTHROPIC_API_KEY" },
    { target: "ollama/llama3", envVar: "OLLAMA_BASE_URL" },
    { target: "vllm/qwen", envVar: "KELPIE_OPENAI_COMPATIBLE_BASE_URL" },
  ];

  it.each(cases)("$target resolves, and its calls fail with LLM_NOT_CONFIGURED naming $envVar", async (c) => {
    const resolved = resolveModel(c.target, bare);
    expect(resolved.notConfigured).toContain(c.envVar);
    const provider = createLlmProvider(resolved, bare, deps());
    const err = await rejectionOf(provider.complete(chat(resolved.model, "x"), neverAborted()));
    expect(err).toBeInstanceOf(KelpieError);
    expect(err.code).toBe("LLM_NOT_CONFIGURED");
    expect(err.status).toBe(400);
    expect(err.message).toContain(c.envVar);
    const streamErr = await rejectionOf(eventsOf(provider.stream(chat(resolved.model, "x"), neverAborted())));
    expect(streamErr.code).toBe("LLM_NOT_CONFIGURED");
  });

  it("names the supported endpoint types for one Kelpie does not speak", async () => {
    const { provider, model } = resolveLlm("google_ai/gemini-2.5-pro", bare, deps());
    expect(model.notConfigured).toMatch(/google_ai.*not supported.*openai, anthropic, ollama/);
    await expect(provider.complete(chat("gemini", "x"), neverAborted())).rejects.toMatchObject({
      code: "LLM_NOT_CONFIGURED",
    });
  });
});

describe("Letta-shaped catalogue", () => {
  it("builds a full llm_config for a handle, with the schema's fields", () => {
    const config = defaultLlmConfig("openai/gpt-4o-mini");
    expectLettaShape(config, "LLMConfig");
    expect(config).toMatchObject({
      model: "gpt-4o-mini",
      model_endpoint_type: "openai",
      model_endpoint: "https://api.openai.com/v1",
      provider_name: "openai",
      context_window: 128_000,
      handle: "openai/gpt-4o-mini",
      put_inner_thoughts_in_kwargs: false,
    });
    expect(defaultLlmConfig("anthropic/claude-sonnet-4-5")).toMatchObject({
      model_endpoint: "https://api.anthropic.com/v1",
      max_tokens: 8_192,
    });
    expect(
      defaultLlmConfig("ollama/llama3", llmConfigFromEnv({ OLLAMA_BASE_URL: "http://h:11434" })),
    ).toMatchObject({
      model_endpoint_type: "ollama",
      model_endpoint: "http://h:11434/v1",
      context_window: 32_768,
    });
  });

  it("lists models only for providers with keys, in GET /v1/models/ shape", () => {
    expect(listModels(bare)).toEqual([]);
    const models = listModels(llmConfigFromEnv({ OPENAI_API_KEY: "k", ANTHROPIC_API_KEY: "k" }));
    const handles = models.map((m) => m.handle);
    expect(handles).toEqual(expect.arrayContaining(["openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5"]));
    for (const m of models) {
      expectLettaShape(m, "Model");
      expect(m.max_context_window).toBe(m.context_window);
      expect(m.name).toBe(m.model);
    }
    expect(
      listModels(llmConfigFromEnv({ ANTHROPIC_API_KEY: "k" })).every((m) => m.provider_type === "anthropic"),
    ).toBe(true);
  });

  it("lists embedding models as EmbeddingConfig", () => {
    // The local model needs no key, so it is always there; OpenAI's models only with a key.
    expect(listEmbeddingModels(bare).map((e) => e.handle)).toEqual(["kelpie/universal-sentence-encoder"]);
    const embeddings = listEmbeddingModels(llmConfigFromEnv({ OPENAI_API_KEY: "k" }));
    expect(embeddings.find((e) => e.handle === "openai/text-embedding-3-small")).toMatchObject({
      embedding_endpoint_type: "openai",
      embedding_model: "text-embedding-3-small",
      embedding_dim: 1536,
      embedding_chunk_size: 300,
    });
    for (const e of embeddings) expectLettaShape(e, "EmbeddingConfig");
  });
});
