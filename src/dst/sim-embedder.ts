// A deterministic embedder for simulation: each word hashes to one of a few dimensions, so texts
// that share words point the same way. It needs no model file and gives the same vectors on every
// run (the real local model is large and slow to load, and simulation tests the server, not it).
import { type Embedder, Embedders } from "../memory/embedders.ts";
import { queryWords } from "../storage/types.ts";

export const SIM_EMBEDDING_DIM = 32;

function hashWord(word: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < word.length; i++) {
    h ^= word.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export const simEmbedder: Embedder = {
  handle: "dst/hash-embedder",
  async embed(texts: string[]): Promise<Float32Array[]> {
    return texts.map((text) => {
      const v = new Float32Array(SIM_EMBEDDING_DIM);
      for (const word of queryWords(text)) v[hashWord(word) % SIM_EMBEDDING_DIM]! += 1;
      return v;
    });
  },
};

/** Every archive, whatever model its config names, embeds with the simulated embedder. */
export class SimEmbedders extends Embedders {
  override available(_config: Record<string, unknown>): boolean {
    return true;
  }

  override forConfig(_config: Record<string, unknown>): Embedder {
    return simEmbedder;
  }
}
