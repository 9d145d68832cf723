// Boots the local embedding model's thread: TypeScript runs through tsx here too (a worker does not
// inherit the loader hooks of the thread that made it).
import { register } from "tsx/esm/api";

register();
const { serveLocalEmbedder } = await import("./local-embedder-thread.ts");
serveLocalEmbedder();
