// Server configuration from the environment: one table, documented in the README.
import { DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT } from "./core/constants.ts";

export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  storage: "memory" | "sqlite" | "postgres";
  databaseUrl: string | undefined;
  logLevel: string;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export function configFromEnv(env: NodeJS.ProcessEnv): ServerConfig {
  const port = Number(env.KELPIE_PORT ?? DEFAULT_PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new ConfigError(`KELPIE_PORT must be a port number, got '${env.KELPIE_PORT}'`);
  }
  const storage = (env.KELPIE_STORAGE ?? "sqlite").toLowerCase();
  if (storage !== "memory" && storage !== "sqlite" && storage !== "postgres") {
    throw new ConfigError(`KELPIE_STORAGE must be sqlite, postgres or memory, got '${env.KELPIE_STORAGE}'`);
  }
  const databaseUrl = env.KELPIE_DATABASE_URL ?? env.DATABASE_URL;
  if (storage === "postgres" && !databaseUrl) {
    throw new ConfigError("KELPIE_STORAGE=postgres needs KELPIE_DATABASE_URL (postgres://user@host:port/db)");
  }
  // RUST_LOG's simple levels are accepted too, as the Kelpie seed documented them.
  const logLevel = (env.KELPIE_LOG_LEVEL ?? env.RUST_LOG ?? "info").toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`KELPIE_LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got '${logLevel}'`);
  }
  return {
    host: env.KELPIE_HOST ?? DEFAULT_HOST,
    port,
    dataDir: env.KELPIE_DATA_DIR ?? DEFAULT_DATA_DIR,
    storage,
    databaseUrl,
    logLevel,
  };
}
