// Server configuration from the environment: one table, documented in the README.
import { isIPv4, isIPv6 } from "node:net";
import { hostname } from "node:os";
import { isAbsolute } from "node:path";
import type { ClusterConfig } from "./cluster/member.ts";
import { CLUSTER_SECRET_CHARS_MIN } from "./cluster/node-auth.ts";
import {
  DEFAULT_DATA_DIR,
  DEFAULT_HOST,
  DEFAULT_HOST_WITH_KEY,
  DEFAULT_PORT,
  HEARTBEATS_PER_LEASE_TTL,
  LEASE_TTL_MS_DEFAULT,
  LEASE_TTL_MS_MIN,
} from "./core/constants.ts";
import { parseEgressAllow } from "./net/egress.ts";
import type { McpStdioPolicy } from "./tools/mcp/stdio-sandbox.ts";
import {
  levelProblem,
  SANDBOX_DEFAULT_ENV,
  SANDBOX_DEFAULTS,
  type SandboxDefaults,
  type SandboxLevel,
} from "./tools/sandbox/limits.ts";

export interface ServerConfig {
  /** KELPIE_HOST, else 127.0.0.1 without any API key and 0.0.0.0 with one (see exposureWarning). */
  host: string;
  /** Whether an API key exists: KELPIE_API_KEYS, or stored keys when the caller read them. */
  keyed: boolean;
  /** KELPIE_ALLOW_REMOTE_WITHOUT_KEY: listening beyond loopback without any API key is accepted. */
  allowRemoteWithoutKey: boolean;
  /** KELPIE_ALLOWED_HOSTS: Host names a server without keys answers besides loopback and IPs. */
  allowedHosts: string[];
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
  /** Hosts and CIDRs outbound calls may reach despite the egress policy (KELPIE_EGRESS_ALLOW). */
  egressAllow: string[];
  /** Cluster membership, on PostgreSQL (KELPIE_NODE_ID, KELPIE_ADVERTISE_URL, KELPIE_LEASE_TTL_MS, ...). */
  cluster: ClusterConfig | undefined;
  /** Which stdio MCP servers clients may register (KELPIE_MCP_STDIO_COMMANDS, KELPIE_MCP_STDIO_PATHS). */
  mcpStdio: McpStdioPolicy;
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

function egressAllow(env: NodeJS.ProcessEnv): string[] {
  const entries = list(env.KELPIE_EGRESS_ALLOW);
  try {
    parseEgressAllow(entries);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  return entries;
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
  // Unset: the nodes share a secret they keep in the database (src/cluster/node-auth.ts).
  const secret = env.KELPIE_CLUSTER_SECRET || undefined;
  if (secret !== undefined && secret.length < CLUSTER_SECRET_CHARS_MIN)
    throw new ConfigError(`KELPIE_CLUSTER_SECRET must be at least ${CLUSTER_SECRET_CHARS_MIN} characters`);
  return { nodeId, advertiseUrl, leaseTtlMs, heartbeatIntervalMs, secret };
}

function flag(env: NodeJS.ProcessEnv, name: string): boolean {
  return env[name] === "1" || env[name] === "true";
}

/** Whether a listen address is reachable from this machine only. */
export function isLoopbackHost(host: string): boolean {
  const name = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (name === "localhost") return true;
  if (isIPv4(name)) return name.startsWith("127.");
  // The URL parser writes an IPv6 address in its shortest form ([::1]) and maps IPv4 in hex.
  if (isIPv6(name))
    return /^\[(::1|::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4})\]$/.test(new URL(`http://[${name}]`).hostname);
  return false;
}

/**
 * A server without any API key listens beyond loopback only when the operator says so: that is
 * the warning to log. Without the opt-in it is a ConfigError.
 */
export function exposureWarning(config: ServerConfig): string | undefined {
  if (config.keyed || isLoopbackHost(config.host)) return undefined;
  if (!config.allowRemoteWithoutKey)
    throw new ConfigError(
      `KELPIE_HOST=${config.host} without an API key would let anyone who reaches it use the API: create a key ('kelpie keys create' or KELPIE_API_KEYS), or set KELPIE_ALLOW_REMOTE_WITHOUT_KEY=1 to accept that`,
    );
  return `listening on ${config.host} WITHOUT an API key (KELPIE_ALLOW_REMOTE_WITHOUT_KEY=1): anyone who reaches this address can use the API and the provider keys behind it`;
}

function mcpStdioPolicy(env: NodeJS.ProcessEnv): McpStdioPolicy {
  const paths = list(env.KELPIE_MCP_STDIO_PATHS);
  const relative = paths.find((p) => !isAbsolute(p));
  if (relative !== undefined)
    throw new ConfigError(`KELPIE_MCP_STDIO_PATHS must list absolute paths, got '${relative}'`);
  return {
    commands: list(env.KELPIE_MCP_STDIO_COMMANDS),
    paths,
    network: flag(env, "KELPIE_MCP_STDIO_NETWORK"),
  };
}

/** `storedApiKeys`: whether `kelpie keys create` stored any (the default listen address depends on it). */
export function configFromEnv(
  env: NodeJS.ProcessEnv,
  options: { storedApiKeys?: boolean } = {},
): ServerConfig {
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
  const apiKeys = list(env.KELPIE_API_KEYS);
  const keyed = apiKeys.length > 0 || options.storedApiKeys === true;
  const host = env.KELPIE_HOST || (keyed ? DEFAULT_HOST_WITH_KEY : DEFAULT_HOST);
  return {
    cluster: storage === "postgres" ? clusterConfig(env, host, port) : undefined,
    apiKeys,
    keyed,
    allowRemoteWithoutKey: flag(env, "KELPIE_ALLOW_REMOTE_WITHOUT_KEY"),
    allowedHosts: list(env.KELPIE_ALLOWED_HOSTS),
    rateLimit: rps === undefined ? undefined : { rps, burst: burst ?? Math.max(1, Math.ceil(rps)) },
    corsOrigins: list(env.KELPIE_CORS_ORIGINS),
    metricsPublic: flag(env, "KELPIE_METRICS_PUBLIC"),
    requestTimeoutMs: positiveNumber(env, "KELPIE_REQUEST_TIMEOUT_MS") ?? REQUEST_TIMEOUT_MS_DEFAULT,
    sandboxDefaults: { javascript: sandboxLevel(env, "javascript"), python: sandboxLevel(env, "python") },
    exaApiKey: env.EXA_API_KEY || undefined,
    egressAllow: egressAllow(env),
    mcpStdio: mcpStdioPolicy(env),
    host,
    port,
    dataDir: env.KELPIE_DATA_DIR ?? DEFAULT_DATA_DIR,
    storage,
    databaseUrl,
    logLevel,
  };
}
