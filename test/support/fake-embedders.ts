// A deterministic embedder for tests of the vector machinery (the real local model is slow and its
// neighbours are not known in advance): text "p-<n> ..." embeds to a pseudo-random vector seeded by n.
import { llmConfigFromEnv } from "../../src/llm/registry.ts";
import { type Embedder, Embedders } from "../../src/memory/embedders.ts";
import { noNetworkFetch } from "../../src/net/egress-fetch.ts";

export const FAKE_EMBEDDING_DIM = 16;

/** The vector of passage "p-<n>". */
export function fakeVector(n: number): Float32Array {
  let a = n + 1;
  return Float32Array.from({ length: FAKE_EMBEDDING_DIM }, () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  });
}

/** Embedders whose every model is the fake one. */
export class FakeEmbedders extends Embedders {
  private readonly fake: Embedder = {
    handle: "test/fake",
    embed: async (texts) => texts.map((t) => fakeVector(Number(/p-(\d+)/.exec(t)?.[1] ?? 0))),
  };

  constructor() {
    super(llmConfigFromEnv({}), noNetworkFetch);
  }

  override available(): boolean {
    return true;
  }

  override forConfig(): Embedder {
    return this.fake;
  }
}
