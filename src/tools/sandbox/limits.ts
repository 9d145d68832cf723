// Bounds for one sandboxed tool run. Output past its bound is cut with an explicit marker.
export const SANDBOX_WALL_TIMEOUT_MS = 10_000;
export const SANDBOX_CPU_SECONDS_MAX = 5;
export const SANDBOX_MEMORY_BYTES_MAX = 512 * 1024 * 1024;
export const SANDBOX_PROCESSES_MAX = 32;
export const SANDBOX_FILE_BYTES_MAX = 16 * 1024 * 1024;
export const SANDBOX_OUTPUT_BYTES_MAX = 1024 * 1024;
export const ISOLATE_MEMORY_MB_MAX = 128;
export const ISOLATE_TIMEOUT_MS = 5_000;

export type SandboxLevel = "isolate" | "namespace" | "process";

export interface SandboxRequest {
  language: "python" | "javascript" | "typescript";
  source: string;
  functionName: string;
  args: Record<string, unknown>;
  /** Parameter names in declaration order (JS calls pass arguments by position). */
  parameterNames: string[];
  env: Record<string, string>;
}

export interface SandboxResult {
  ok: boolean;
  value: string;
  stdout: string[];
  stderr: string[];
  level: SandboxLevel;
}
