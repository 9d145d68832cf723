// Server configuration from the environment: one table, documented in the README.
import { hostname } from "node:os";
import type { ClusterConfig } from "./cluster/member.ts";
import {
  DEFAULT_DATA_DIR,
  DEFAULT_HOST,
  DEFAULT_PORT,
  HEARTBEATS_PER_LEASE_TTL,
  LEASE_TTL_MS_DEFAULT,
  LEASE_TTL_MS_MIN,
} from "./core/constants.ts";
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
  /** Cluster membership, on PostgreSQL (KELPIE_NODE_ID, KELPIE_ADVERTISE_URL, KELPIE_LEASE_TTL_MS, ...). */
  cluster: ClusterConfig | undefined;
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

function clusterConfig(env: NodeJS.ProcessEnv, host: string, port: number): ClusterConfig {
  const leaseTtlMs = positiveNumber(env, "KELPIE_LEASE_TTL_MS") ?? LEASE_TTL_MS_DEFAULT;
  if (!Number.isInteger(leaseTtlMs) || leaseTtlMs < LEASE_TTL_MS_MIN)
    throw new ConfigError(
      `KELPIE_LEASE_TTL_MS must be an integer of at least ${LEASE_TTL_MS_MIN}, got '${env.KELPIE_LEASE_TTL_MS}'`,
    );
  const heartbeatIntervalMs =
    positiveNumber(env, "KELPIE_HEARTBEAT_INTERVAL_MS") ?? Math.floor(leaseTtlMs / HEARTBEATS_PER_LEASE_TTL);
  if (heartbeatIntervalMs * 2 > leaseTtlMs)
    throw new ConfigError("KELPIE_HEARTBEAT_INTERVAL_MS must be at most half of KELPIE_LEASE_TTL_MS");
  // Reachable by the other nodes: a wildcard listen address is not, the host name is.
  const reachableHost = host === "0.0.0.0" || host === "::" ? hostname() : host;
  const advertiseUrl = (env.KELPIE_ADVERTISE_URL ?? `http://${reachableHost}:${port}`).replace(/\/+$/, "");
  try {
    new URL(advertiseUrl);
  } catch {
    throw new ConfigError(`KELPIE_ADVERTISE_URL must be a URL, got '${env.KELPIE_ADVERTISE_URL}'`);
  }
  const nodeId = env.KELPIE_NODE_ID ?? `${hostname()}-${port}`;
  if (!/^[A-Za-z0-9._:-]{1,128}$/.test(nodeId))
    throw new ConfigError(
      `KELPIE_NODE_ID must be 1 to 128 letters, digits, '.', '_', ':' or '-', got '${nodeId}'`,
    );
  return { nodeId, advertiseUrl, leaseTtlMs, heartbeatIntervalMs };
}

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
  const host = env.KELPIE_HOST ?? DEFAULT_HOST;
  return {
    cluster: storage === "postgres" ? clusterConfig(env, host, port) : undefined,
    apiKeys: list(env.KELPIE_API_KEYS),
    rateLimit: rps === undefined ? undefined : { rps, burst: burst ?? Math.max(1, Math.ceil(rps)) },
    corsOrigins: list(env.KELPIE_CORS_ORIGINS),
    metricsPublic: env.KELPIE_METRICS_PUBLIC === "1" || env.KELPIE_METRICS_PUBLIC === "true",
    requestTimeoutMs: positiveNumber(env, "KELPIE_REQUEST_TIMEOUT_MS") ?? REQUEST_TIMEOUT_MS_DEFAULT,
    sandboxDefaults: { javascript: sandboxLevel(env, "javascript"), python: sandboxLevel(env, "python") },
    exaApiKey: env.EXA_API_KEY || undefined,
    host,
    port,
    dataDir: env.KELPIE_DATA_DIR ?? DEFAULT_DATA_DIR,
    storage,
    databaseUrl,
    logLevel,
  };
}
