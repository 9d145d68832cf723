// Server configuration from the environment: one table, documented in the README.
import { DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT } from "./core/constants.ts";
import {
  levelProblem,
  SANDBOX_DEFAULT_ENV,
  SANDBOX_DEFAULTS,
  type SandboxDefaults,
  type SandboxLevel,
} from "./tools/sandbox/limits.ts";

export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  storage: "memory" | "sqlite" | "postgres";
  databaseUrl: string | undefined;
  logLevel: string;
  apiKeys: string[];
  rateLimit: { rps: number; burst: number } | undefined;
  corsOrigins: string[];
  metricsPublic: boolean;
  requestTimeoutMs: number;
  /** Sandbox level per language for tools that ask for none (KELPIE_SANDBOX_JS, KELPIE_SANDBOX_PYTHON). */
  sandboxDefaults: SandboxDefaults;
  /** Exa's key for the web_search tool (EXA_API_KEY); without it the tool says it is unavailable. */
  exaApiKey: string | undefined;
}

export const REQUEST_TIMEOUT_MS_DEFAULT = 600_000;

function positiveNumber(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === "") return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0)
    throw new ConfigError(`${name} must be a positive number, got '${raw}'`);
  return value;
}

function list(raw: string | undefined): string[] {
  return (raw ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function sandboxLevel(env: NodeJS.ProcessEnv, language: keyof SandboxDefaults): SandboxLevel {
  const name = SANDBOX_DEFAULT_ENV[language];
  const raw = env[name];
  if (raw === undefined || raw === "") return SANDBOX_DEFAULTS[language];
  const level = raw.trim().toLowerCase();
  const problem = levelProblem(level, language);
  if (problem !== null) throw new ConfigError(`${name} ${problem}`);
  return level as SandboxLevel;
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
  const rps = positiveNumber(env, "KELPIE_RATE_LIMIT_RPS");
  const burst = positiveNumber(env, "KELPIE_RATE_LIMIT_BURST");
  return {
    apiKeys: list(env.KELPIE_API_KEYS),
    rateLimit: rps === undefined ? undefined : { rps, burst: burst ?? Math.max(1, Math.ceil(rps)) },
    corsOrigins: list(env.KELPIE_CORS_ORIGINS),
    metricsPublic: env.KELPIE_METRICS_PUBLIC === "1" || env.KELPIE_METRICS_PUBLIC === "true",
    requestTimeoutMs: positiveNumber(env, "KELPIE_REQUEST_TIMEOUT_MS") ?? REQUEST_TIMEOUT_MS_DEFAULT,
    sandboxDefaults: { javascript: sandboxLevel(env, "javascript"), python: sandboxLevel(env, "python") },
    exaApiKey: env.EXA_API_KEY || undefined,
    host: env.KELPIE_HOST ?? DEFAULT_HOST,
    port,
    dataDir: env.KELPIE_DATA_DIR ?? DEFAULT_DATA_DIR,
    storage,
    databaseUrl,
    logLevel,
  };
}
