// Boots the SQLite writer thread: TypeScript runs through tsx here too (a worker does not inherit
// the loader hooks of the thread that made it).
import { register } from "tsx/esm/api";

register();
const { serveWriter } = await import("./sqlite-writer.ts");
serveWriter();
