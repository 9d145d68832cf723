// Builds the configured storage engine and brings its schema up to date.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_DATA_DIR } from "../core/constants.ts";
import type { Storage } from "./types.ts";

export interface StorageConfig {
  engine: "memory" | "sqlite" | "postgres";
  dataDir?: string | undefined;
  databaseUrl?: string | undefined;
}

export const SQLITE_FILE_NAME = "kelpie.db";
/** Under the data directory: archives' saved HNSW graphs. */
export const ARCHIVAL_INDEX_DIR_NAME = "archival-index";

export async function openStorage(config: StorageConfig): Promise<Storage> {
  let storage: Storage;
  if (config.engine === "memory") {
    const { MemoryStorage } = await import("./memory.ts");
    storage = new MemoryStorage();
  } else if (config.engine === "sqlite") {
    const { SqliteStorage } = await import("./sqlite.ts");
    const dir = config.dataDir ?? DEFAULT_DATA_DIR;
    mkdirSync(dir, { recursive: true });
    storage = new SqliteStorage({ path: join(dir, SQLITE_FILE_NAME) });
  } else {
    if (config.databaseUrl === undefined) throw new Error("the postgres engine needs a database URL");
    const { PostgresStorage } = await import("./postgres.ts");
    storage = new PostgresStorage({ url: config.databaseUrl });
  }
  await storage.migrate();
  return storage;
}
