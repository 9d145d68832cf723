// Text → vectors. Two real embedders behind one interface: a local Universal Sentence Encoder
// (512-d, shipped inside an npm package, works offline with no key — the default) and any
// OpenAI-compatible /v1/embeddings endpoint (OpenAI, Ollama, vLLM, LM Studio, ...).
//
// Keys: the server's OPENAI_API_KEY goes only to the configured OpenAI base URL (a config naming
// OpenAI's public endpoint means that one), KELPIE_OPENAI_COMPATIBLE_API_KEY only to its configured
// base URL. An endpoint a request or an agent file names is called without any key of ours, and
// through the egress policy (Letta's embedding_config has no field for a client's own key).
import { Worker } from "node:worker_threads";
import OpenAI from "openai";
import { assert } from "../core/assert.ts";
import { PASSAGES_PER_BATCH_MAX } from "../core/constants.ts";
import { KelpieError } from "../core/errors.ts";
import {
  API_KEY_PLACEHOLDER,
  type LlmProvidersConfig,
  normalizeUrl,
  OPENAI_PUBLIC_BASE_URL,
} from "../llm/config.ts";
import { egressRefusalIn } from "../net/egress.ts";
import type { EmbedReply, EmbedRequest } from "./local-embedder-thread.ts";

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

/** Texts waiting for or in the local model's thread; a request that would pass it is refused (503). */
export const LOCAL_EMBED_TEXTS_PENDING_MAX = 8 * PASSAGES_PER_BATCH_MAX;
assert(
  LOCAL_EMBED_TEXTS_PENDING_MAX >= PASSAGES_PER_BATCH_MAX,
  "the largest archival insert must fit the local embedder's line",
);
/** One batch of LOCAL_EMBED_BATCH_MAX texts in the model's thread (the first also loads the model);
 * past it the thread is ended and restarted, and every request in it fails. */
export const LOCAL_EMBED_BATCH_TIMEOUT_MS = 120_000;

interface Pending {
  resolve(vectors: Float32Array[]): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/**
 * The Universal Sentence Encoder (TensorFlow.js, CPU), run in its own worker thread
 * (local-embedder-thread.ts) so that the event loop keeps serving while it computes; the model is
 * loaded there once, on first use. A request's texts go over in batches of LOCAL_EMBED_BATCH_MAX,
 * one batch per request at a time, so concurrent requests take turns in the thread.
 */
class LocalEmbedder implements Embedder {
  readonly handle = LOCAL_EMBEDDING_HANDLE;
  private worker: Worker | null = null;
  private readonly inFlight = new Map<number, Pending>();
  private idNext = 1;
  private textsPending = 0;

  async embed(texts: string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return [];
    if (this.textsPending + texts.length > LOCAL_EMBED_TEXTS_PENDING_MAX) {
      throw new KelpieError(
        "OVERLOADED",
        `the local embedding model has ${this.textsPending} texts in line and this request adds ${texts.length}, over LOCAL_EMBED_TEXTS_PENDING_MAX (${LOCAL_EMBED_TEXTS_PENDING_MAX}); try again shortly`,
      );
    }
    this.textsPending += texts.length;
    try {
      const out: Float32Array[] = [];
      for (let i = 0; i < texts.length; i += LOCAL_EMBED_BATCH_MAX) {
        const batch = texts.slice(i, i + LOCAL_EMBED_BATCH_MAX);
        const vectors = await this.call(batch);
        assert(vectors.length === batch.length, "the embedding thread answered with the wrong count");
        out.push(...vectors);
      }
      return out;
    } finally {
      this.textsPending -= texts.length;
    }
  }

  /** Ends the model's thread (a later embed starts another). */
  async close(): Promise<void> {
    const worker = this.worker;
    if (worker === null) return;
    this.fail(new KelpieError("SHUTTING_DOWN", "the local embedding model was stopped"));
    await worker.terminate();
  }

  private call(texts: string[]): Promise<Float32Array[]> {
    const worker = this.start();
    const id = this.idNext++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(
          new KelpieError(
            "LLM_ERROR",
            `the local embedding model did not answer within ${LOCAL_EMBED_BATCH_TIMEOUT_MS} ms`,
          ),
        );
      }, LOCAL_EMBED_BATCH_TIMEOUT_MS);
      this.inFlight.set(id, { resolve, reject, timer });
      worker.ref(); // the process waits for an answer it was asked for
      worker.postMessage({ id, texts } satisfies EmbedRequest);
    });
  }

  private start(): Worker {
    if (this.worker !== null) return this.worker;
    const worker = new Worker(new URL("./local-embedder-worker.mjs", import.meta.url));
    worker.on("message", (reply: EmbedReply) => {
      const pending = this.inFlight.get(reply.id);
      if (pending === undefined) return; // failed already (a timeout ended the thread's requests)
      this.inFlight.delete(reply.id);
      clearTimeout(pending.timer);
      if (this.inFlight.size === 0) worker.unref(); // an idle model does not keep the process alive
      if ("error" in reply) {
        pending.reject(new KelpieError("LLM_ERROR", `the local embedding model failed: ${reply.error}`));
      } else {
        pending.resolve(reply.vectors);
      }
    });
    worker.on("error", (err) => {
      this.fail(new KelpieError("LLM_ERROR", `the local embedding model's thread failed: ${err.message}`));
    });
    worker.on("exit", () => {
      if (this.worker === worker) this.worker = null;
    });
    this.worker = worker;
    return worker;
  }

  /** Every request in the thread fails with `err`; the thread is ended (the next call starts one). */
  private fail(err: KelpieError): void {
    const worker = this.worker;
    this.worker = null;
    for (const pending of this.inFlight.values()) {
      clearTimeout(pending.timer);
      pending.reject(err);
    }
    this.inFlight.clear();
    if (worker !== null) void worker.terminate();
  }
}

class OpenAiEmbedder implements Embedder {
  private readonly client: OpenAI;

  constructor(
    readonly handle: string,
    private readonly model: string,
    baseURL: string,
    apiKey: string,
    transport: typeof fetch,
  ) {
    this.client = new OpenAI({
      baseURL,
      apiKey,
      timeout: REMOTE_EMBED_TIMEOUT_MS,
      maxRetries: 2,
      fetch: transport,
    });
  }

  async embed(texts: string[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (let i = 0; i < texts.length; i += REMOTE_EMBED_BATCH_MAX) {
      const batch = texts.slice(i, i + REMOTE_EMBED_BATCH_MAX);
      let response: OpenAI.Embeddings.CreateEmbeddingResponse;
      try {
        response = await this.client.embeddings.create({ model: this.model, input: batch });
      } catch (err) {
        const refusal = egressRefusalIn(err);
        if (refusal !== undefined) throw refusal;
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

  /** `transport` is the egress-policy fetch (src/net/egress-fetch.ts). */
  constructor(
    private readonly llm: LlmProvidersConfig,
    private readonly transport: typeof fetch,
  ) {}

  /** Ends the local model's thread, failing what it was computing. */
  close(): Promise<void> {
    return this.local.close();
  }

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
      embedder = new OpenAiEmbedder(handle, model, endpoint.baseURL, endpoint.apiKey, this.transport);
      this.remote.set(key, embedder);
    }
    return embedder;
  }

  private endpoint(config: Record<string, unknown>): { baseURL: string; apiKey: string } | null {
    const type = config.embedding_endpoint_type;
    const given =
      typeof config.embedding_endpoint === "string" && config.embedding_endpoint.trim() !== ""
        ? normalizeUrl(config.embedding_endpoint)
        : null;
    if (type === "openai") {
      // OpenAI's public endpoint (what Letta clients send) or ours means the configured one, with its key.
      if (given === null || given === OPENAI_PUBLIC_BASE_URL || given === this.llm.openai.baseUrl) {
        const apiKey = this.llm.openai.apiKey;
        return apiKey === undefined ? null : { baseURL: this.llm.openai.baseUrl, apiKey };
      }
      return { baseURL: given, apiKey: API_KEY_PLACEHOLDER };
    }
    if (type === "ollama") {
      const base = given ?? this.llm.ollama.baseUrl;
      return base === undefined
        ? null
        : { baseURL: base.endsWith("/v1") ? base : `${base}/v1`, apiKey: "ollama" };
    }
    const configured = this.llm.openaiCompatible;
    const base = given ?? configured.baseUrl;
    if (base === undefined) return null;
    const ours = base === configured.baseUrl && configured.apiKey !== undefined;
    return { baseURL: base, apiKey: ours ? (configured.apiKey as string) : API_KEY_PLACEHOLDER };
  }
}
