// The bare primitive under our request figures: a plain Fastify route that commits one SQLite row
// (WAL, synchronous=FULL) per POST, on a loopback port.
import { join } from "node:path";
import Database from "better-sqlite3";
import Fastify from "fastify";

export interface PlainServer {
  url: string;
  close(): Promise<void>;
}

export async function startPlainServer(dir: string): Promise<PlainServer> {
  const db = new Database(join(dir, "primitive.db"));
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)");
  const insert = db.prepare("INSERT INTO t (doc) VALUES (?)");
  const app = Fastify();
  const handler = async (req: { body: unknown }) => {
    insert.run(JSON.stringify(req.body));
    return { ok: true };
  };
  app.post("/", handler);
  app.post("/:any", handler);
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  return {
    url,
    async close() {
      await app.close();
      db.close();
    },
  };
}
