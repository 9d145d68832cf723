// Bounds for one sandboxed tool run. Output past its bound is cut with an explicit marker.
export const SANDBOX_WALL_TIMEOUT_MS = 10_000;
export const SANDBOX_CPU_SECONDS_MAX = 5;
export const SANDBOX_MEMORY_BYTES_MAX = 512 * 1024 * 1024;
export const SANDBOX_PROCESSES_MAX = 32;
export const SANDBOX_FILE_BYTES_MAX = 16 * 1024 * 1024;
export const SANDBOX_OUTPUT_BYTES_MAX = 1024 * 1024;
export const ISOLATE_MEMORY_MB_MAX = 128;
export const ISOLATE_TIMEOUT_MS = 5_000;
/** A Node tool's JavaScript heap: the same memory budget as a Python tool's. */
export const NODE_HEAP_MB_MAX = SANDBOX_MEMORY_BYTES_MAX / (1024 * 1024);
/** RLIMIT_AS for a Node tool. V8 reserves ~700 MiB of address space before any tool code runs and
 * about twice the heap it uses, so Python's 512 MiB would not even start node; 2 GiB leaves room for
 * the 512 MiB heap and still refuses a multi-GiB allocation. */
export const NODE_ADDRESS_SPACE_BYTES_MAX = 2 * 1024 * 1024 * 1024;

export const SANDBOX_LEVELS = ["isolate", "namespace", "process"] as const;
export type SandboxLevel = (typeof SANDBOX_LEVELS)[number];
export type SandboxLanguage = "python" | "javascript" | "typescript";

/** The level per language when a tool asks for none (`javascript` covers TypeScript too). */
export interface SandboxDefaults {
  javascript: SandboxLevel;
  python: SandboxLevel;
}
export const SANDBOX_DEFAULTS: SandboxDefaults = { javascript: "isolate", python: "namespace" };

/** The environment variable that sets each language's default level. */
export const SANDBOX_DEFAULT_ENV: Record<keyof SandboxDefaults, string> = {
  javascript: "KELPIE_SANDBOX_JS",
  python: "KELPIE_SANDBOX_PYTHON",
};

export function defaultsKey(language: SandboxLanguage): keyof SandboxDefaults {
  return language === "python" ? "python" : "javascript";
}

/** Null when `value` is a level a `language` tool can run at; otherwise what is wrong with it. */
export function levelProblem(value: unknown, language: SandboxLanguage): string | null {
  if (typeof value !== "string" || !(SANDBOX_LEVELS as readonly string[]).includes(value)) {
    return `must be one of ${SANDBOX_LEVELS.join(", ")}, got ${JSON.stringify(value)}`;
  }
  if (value === "isolate" && language === "python") {
    return "cannot be isolate for a python tool: the V8 isolate runs JavaScript and TypeScript only (use namespace or process)";
  }
  return null;
}

export interface SandboxRequest {
  language: SandboxLanguage;
  source: string;
  functionName: string;
  args: Record<string, unknown>;
  /** Parameter names in declaration order (JS calls pass arguments by position). */
  parameterNames: string[];
  env: Record<string, string>;
  /** The level the tool asked for (its metadata's `sandbox`); undefined: the server's default. */
  level?: SandboxLevel;
}

export interface SandboxResult {
  ok: boolean;
  value: string;
  stdout: string[];
  stderr: string[];
  level: SandboxLevel;
}
